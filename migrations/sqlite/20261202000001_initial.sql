-- osa-events on SQLite: the event log, subscriptions, deliveries (open work and dead letters),
-- projection checkpoints with their leases, and the nodes' records. The same data model as
-- PostgreSQL's (migrations/postgres, whose comments explain each column), in one migration.
--
-- Differences that follow from SQLite:
-- - Times are REAL seconds since the Unix epoch, read from `unixepoch('subsec')` inside the
--   statement that needs them: every process sharing the file reads one machine's clock, so every
--   deadline is the store's time, never a worker's idea of it.
-- - SQLite runs one write transaction at a time, and the store takes the write lock at BEGIN
--   (`BEGIN IMMEDIATE`): `position` is handed out under that lock, so positions commit in order and
--   the log's order is its commit order. Projections read by position alone (no commit table).
-- - `position` is AUTOINCREMENT: a position is never handed out twice, even after the highest
--   events are pruned, so a checkpoint can never be passed by a later event of a lower position.
-- - Claim tokens are 32 lowercase hex digits (a UUID without hyphens), made by `randomblob(16)`.
-- - Lists (the nodes' handlers, a checkpoint's event types) are JSON arrays in text.

create table events (
    position       integer primary key autoincrement,
    id             blob    not null unique,
    event_type     text    not null,
    event_version  integer not null,
    routing_key    text,
    payload        text    not null,
    metadata       text    not null default '{}',
    created_at     real    not null default (unixepoch('subsec'))
);

create table subscriptions (
    id                     integer primary key autoincrement,
    name                   text    not null unique,
    event_type             text    not null,
    routing_key            text,
    config                 text    not null default '{}',
    revision               integer not null default 1 check (revision >= 1),
    created_at             real    not null default (unixepoch('subsec')),
    updated_at             real    not null default (unixepoch('subsec')),
    paused_at              real,
    retired_at             real,
    -- The backfill of a subscription created with a history (`start_from`): the last position
    -- copied, and the head of the log when it was created (everything after it was published by a
    -- transaction that saw the subscription, since writers are serialised).
    backfill_after         integer,
    backfill_head          integer,
    last_error             text,
    last_failed_at         real
);

create index subscriptions_event_type on subscriptions (event_type);

-- `run_at`: when a pending row is due, or when a claimed row's claim expires (then it is due
-- again). One index serves "pending and due" and "claimed but expired" in the claim order.
create table deliveries (
    subscription_id  integer not null,
    event_position   integer not null,
    status           text    not null default 'pending'
                             check (status in ('pending', 'claimed', 'dead')),
    attempts         integer not null default 0,
    run_at           real    not null default (unixepoch('subsec')),
    claim_token      text,
    claimed_by       text,
    claimed_at       real,
    last_error       text,
    updated_at       real    not null default (unixepoch('subsec')),
    primary key (subscription_id, event_position)
) without rowid;

create index deliveries_claimable on deliveries (subscription_id, run_at, event_position, status)
    where status <> 'dead';
create index deliveries_dead on deliveries (subscription_id, updated_at) where status = 'dead';

-- Deleting an event or a subscription that still has open work or dead letters is refused: no
-- schema path deletes work as a side effect (as on PostgreSQL).
create trigger events_keep_their_deliveries
before delete on events
when exists (select 1 from subscriptions s
             join deliveries d on d.subscription_id = s.id and d.event_position = old.position)
begin
    select raise(abort, 'cannot delete events from events: open or dead deliveries still refer to them; deleting an event never deletes its work (complete, retry or delete those deliveries first)');
end;

create trigger subscriptions_keep_their_deliveries
before delete on subscriptions
when exists (select 1 from deliveries d where d.subscription_id = old.id)
begin
    select raise(abort, 'cannot delete a subscription from subscriptions: open or dead deliveries still refer to it; deleting a subscription never deletes its work (complete, retry or delete those deliveries first)');
end;

-- A projection's checkpoint, and its leadership: a lease held by `leader` until `lease_until`
-- (store time), renewed by every batch and heartbeat, and fenced by `lease_token`, which changes
-- with every new leadership, so a deposed leader's writes match nothing.
create table checkpoints (
    name         text    primary key,
    position     integer not null default 0,
    updated_at   real    not null default (unixepoch('subsec')),
    last_error   text,
    failed_at    real,
    leader       text,
    lease_token  text,
    lease_until  real,
    event_types  text
);

create table nodes (
    id            blob    primary key,
    name          text    not null,
    namespace     text,
    host          text    not null,
    pid           integer not null,
    version       text    not null,
    handlers      text    not null,
    projections   text    not null,
    started_at    real    not null,
    heartbeat     real    not null,
    last_seen_at  real    not null default (unixepoch('subsec'))
);
