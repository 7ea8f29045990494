-- osa-events: the event log, subscriptions, deliveries (open work) and projection checkpoints.
-- Runs with search_path = osa_events (see PgStore::migrate), so every table lands in that schema.

-- The append-only log. `position` is the global publish order; `id` is the idempotency key.
create table events (
    position       bigint generated always as identity primary key,
    id             uuid        not null unique,
    event_type     text        not null,
    event_version  integer     not null,
    routing_key    text,
    payload        jsonb       not null,
    metadata       jsonb       not null default '{}'::jsonb,
    created_at     timestamptz not null default now(),
    -- The publishing transaction, for projections that read in commit order.
    commit_xid     xid8        not null default pg_current_xact_id()
);

-- One row per handler. `id` is what deliveries refer to (an int keeps the hot table narrow).
create table subscriptions (
    id           integer generated always as identity primary key,
    name         text        not null unique,
    event_type   text        not null,
    routing_key  text,
    config       jsonb       not null default '{}'::jsonb,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

-- Publishers look subscriptions up by event type.
create index subscriptions_event_type on subscriptions (event_type);

-- The work: one row per (subscription, event), created in the publisher's transaction and deleted on
-- completion, so the table holds only open work and dead letters.
--
-- `run_at` is the moment the row is next claimable: for a pending row its (backoff) start time, for a
-- claimed row the expiry of its claim. One partial index on (subscription_id, run_at, event_position)
-- therefore serves both "pending and due" and "claimed but expired", in the claim order.
create table deliveries (
    subscription_id  integer     not null references subscriptions (id) on delete cascade,
    event_position   bigint      not null references events (position) on delete cascade,
    status           text        not null default 'pending'
                                 check (status in ('pending', 'claimed', 'dead')),
    attempts         integer     not null default 0,
    run_at           timestamptz not null default now(),
    claim_token      uuid,
    claimed_by       text,
    last_error       text,
    updated_at       timestamptz not null default now(),
    primary key (subscription_id, event_position)
);

create index deliveries_claimable on deliveries (subscription_id, run_at, event_position)
    where status <> 'dead';

create index deliveries_event_position on deliveries (event_position);

-- Completed rows are deleted at a high rate: vacuum the hot table early and often.
alter table deliveries set (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02
);

-- Projection checkpoints: the last applied position and its transaction id.
create table checkpoints (
    name        text        primary key,
    position    bigint      not null default 0,
    commit_xid  xid8,
    updated_at  timestamptz not null default now()
);
