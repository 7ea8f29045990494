-- Operations: pause, retirement, backfill, last errors, claim ages, nodes, and cheap status.
--
-- See osa-events-postgres/src/operations/ for the statements that use these, and
-- docs/operations.md for what an operator sees.

-- A paused subscription is claimed by nobody (publishing goes on, deliveries accumulate); a
-- retired one receives no new deliveries either. Both are read by `claim_deliveries` below on
-- every claim (one primary-key lookup of a tiny table), so every node honours them at its next
-- claim.
--
-- `backfill_*`: the history a new subscription receives (`start_from`), copied by the runtime in
-- steps (osa-events-postgres/src/operations/backfill.rs explains the order):
--   backfill_after        last history position copied (null: no backfill pending)
--   backfill_head         the highest position handed out when the subscription was created:
--                         every event at or below it was published without seeing it
--   backfill_xmax         the snapshot bound the copy waits for (transactions that may have
--                         published without seeing the subscription must end first)
--   backfill_through      the highest position handed out once they ended: events above it were
--                         all published by statements that saw the subscription
--   backfill_window       last position copied of (backfill_head, backfill_through], the events
--                         published while the subscription was being created
--   backfill_holds_claims the subscription claims nothing until that window is copied, so none of
--                         its own deliveries there completes (and disappears) before the copy
--                         has skipped it
--
-- `last_error`/`last_failed_at`: the latest failed attempt, kept by `fail_deliveries`, so status
-- need not search the deliveries for it.
alter table subscriptions
    add column paused_at timestamptz,
    add column retired_at timestamptz,
    add column backfill_after bigint,
    add column backfill_head bigint,
    add column backfill_xmax xid8,
    add column backfill_through bigint,
    add column backfill_window bigint,
    add column backfill_holds_claims boolean not null default false,
    add column last_error text,
    add column last_failed_at timestamptz;

-- When the current claim was taken (extensions move `run_at`, not this), for the age of the
-- oldest claim.
alter table deliveries add column claimed_at timestamptz;

-- Status counts due, scheduled and claimed deliveries from the claimable index alone (an
-- index-only scan needs the state in the index). The entries get a few bytes wider; a claim
-- rewrites every index entry of its row anyway (it moves `run_at`).
drop index deliveries_claimable;
create index deliveries_claimable on deliveries (subscription_id, run_at, event_position)
    include (status) where status <> 'dead';

-- Dead letters by subscription and time of death: status counts them, the dead-letter commands
-- list and select them, without reading open work. Only dead rows have entries.
create index deliveries_dead on deliveries (subscription_id, updated_at) where status = 'dead';

-- The highest event position handed out so far, committed or not (the backfill's bounds). It
-- runs as the schema's owner: reading the identity sequence needs a privilege publishers and
-- workers do not otherwise need.
create function allocated_head() returns bigint
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
    select coalesce(pg_sequence_last_value(pg_get_serial_sequence('osa_events.events', 'position')), 0)
$$;

-- Who runs what: each runtime instance records itself at start and on every heartbeat.
create table nodes (
    id            uuid        primary key,
    name          text        not null,
    namespace     text,
    host          text        not null,
    pid           integer     not null,
    version       text        not null,
    handlers      text[]      not null,
    projections   text[]      not null,
    started_at    timestamptz not null,
    heartbeat     interval    not null,
    last_seen_at  timestamptz not null default now()
);

-- Failures keep the subscription's latest error.
create or replace function fail_deliveries(
    subscription integer, positions bigint[], tokens uuid[], errors text[], retry_seconds float8[]
) returns bigint
language plpgsql volatile
as $$
declare
    written bigint;
begin
    update osa_events.deliveries d
    set status = case when f.retry_secs is null then 'dead' else 'pending' end,
        run_at = case when f.retry_secs is null then now()
                      else now() + make_interval(secs => f.retry_secs) end,
        last_error = f.error,
        claim_token = null,
        claimed_by = null,
        updated_at = now()
    from unnest(positions, tokens, errors, retry_seconds) as f (position, token, error, retry_secs)
    where d.subscription_id = subscription
      and d.event_position = f.position
      and d.claim_token = f.token
      and d.status = 'claimed';
    get diagnostics written = row_count;
    if written > 0 then
        update osa_events.subscriptions
        set last_error = errors[cardinality(errors)], last_failed_at = now()
        where id = subscription;
    end if;
    return written;
end $$;

-- The claim, as in lean_claims, and: a paused or retired subscription claims nothing, nor one
-- whose backfill holds its claims (the completion of the previous batch still lands), and a
-- claim records when it was taken.
create or replace function claim_deliveries(
    subscription integer,
    claim_limit integer,
    worker text,
    claim_seconds float8,
    done_positions bigint[] default '{}',
    done_tokens uuid[] default '{}'
) returns table (
    completed bigint,
    event_position bigint,
    due_at float8,
    claim_token uuid,
    attempts integer,
    last_error text,
    id uuid,
    event_type text,
    event_version integer,
    routing_key text,
    payload text,
    metadata text,
    published_at float8
)
language plpgsql volatile
as $$
declare
    done_count bigint := 0;
begin
    if cardinality(done_positions) > 0 then
        done_count := osa_events.complete_deliveries(subscription, done_positions, done_tokens);
    end if;
    if exists (select 1 from osa_events.subscriptions s
               where s.id = subscription
                 and (s.paused_at is not null or s.retired_at is not null or s.backfill_holds_claims)) then
        completed := done_count;
        return next;
        return;
    end if;
    return query
    with picked as (
        select d.ctid as row_id, d.run_at
        from osa_events.deliveries d
        where d.subscription_id = subscription and d.status <> 'dead' and d.run_at <= now()
        order by d.run_at, d.event_position
        limit claim_limit
        for no key update skip locked
    ), claimed as (
        update osa_events.deliveries d
        set status = 'claimed',
            attempts = d.attempts + 1,
            claim_token = gen_random_uuid(),
            claimed_by = worker,
            run_at = now() + make_interval(secs => claim_seconds),
            claimed_at = now(),
            updated_at = now()
        from picked
        where d.ctid = picked.row_id
        returning d.event_position, extract(epoch from picked.run_at)::float8 as due_at,
                  d.claim_token, d.attempts, d.last_error
    )
    select done_count, c.event_position, c.due_at, c.claim_token, c.attempts, c.last_error,
           e.id, e.event_type, e.event_version, e.routing_key, e.payload::text, e.metadata::text,
           extract(epoch from e.created_at)::float8
    from claimed c
    join osa_events.events e on e.position = c.event_position;
    if not found then
        completed := done_count;
        return next;
    end if;
end $$;

-- `create or replace` keeps a function's settings only when given again: the same as lean_claims.
do $$
declare
    planned regprocedure;
    given integer := 0;
begin
    for planned in
        select p.oid::regprocedure from pg_proc p
        where p.pronamespace = 'osa_events'::regnamespace
          and p.proname in ('claim_deliveries', 'fail_deliveries')
    loop
        execute format('alter function %s
            set enable_seqscan = off
            set enable_bitmapscan = off
            set enable_sort = off
            set enable_hashjoin = off
            set enable_mergejoin = off
            set enable_material = off
            set jit = off
            set plan_cache_mode = force_generic_plan', planned);
        given := given + 1;
    end loop;
    if given <> 2 then
        raise exception 'operations: planner settings given to % functions, expected 2', given;
    end if;
end $$;

-- Deleting events checks for deliveries by primary key, event by event and subscription by
-- subscription (there is no index on `event_position` alone, see lean_claims): a retention step
-- deletes a thousand events at a time, and this keeps its check to a thousand lookups per
-- subscription instead of a scan of the open work. Written as a lateral lookup per deleted event,
-- with the planner settings below, so the plan is the same whatever the statistics: planned
-- from stale ones as a join, the check compared every deleted event with every open delivery
-- (27 s for one step at 200,000 open deliveries).
create or replace function refuse_deleting_events_with_deliveries() returns trigger
language plpgsql as $$
declare
    open_deliveries bigint;
    first_position bigint;
begin
    select coalesce(sum(found.deliveries), 0), min(x.position) filter (where found.deliveries > 0)
    into open_deliveries, first_position
    from deleted_events x
    cross join lateral (
        select count(*) as deliveries
        from osa_events.subscriptions s
        join osa_events.deliveries d on d.subscription_id = s.id and d.event_position = x.position
    ) as found;
    if open_deliveries > 0 then
        raise exception 'cannot delete events from osa_events.events: % open or dead deliveries still refer to them (the first at position %); deleting an event never deletes its work (complete, retry or delete those deliveries first)',
                open_deliveries, first_position
            using errcode = '23503';
    end if;
    return null;
end $$;

alter function refuse_deleting_events_with_deliveries()
    set enable_seqscan = off
    set enable_bitmapscan = off
    set enable_hashjoin = off
    set enable_mergejoin = off
    set enable_material = off
    set jit = off;
