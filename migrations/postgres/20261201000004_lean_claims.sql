-- The claim's cost per event, and a plan that does not depend on statistics.
--
-- 1. One index less on the hot table. `deliveries(event_position)` served only the row trigger
--    that refuses to delete an event that still has deliveries, yet every publish and every claim
--    wrote an entry in it (a claim moves `run_at`, so it is never a HOT update and touches every
--    index of the row). The refusal is now one check per DELETE statement over the deleted rows
--    (a transition table), which reads the open work once instead of looking each event up.
--
-- 2. The claim and the fenced writes (complete, fail, extend, release, defer) are functions whose
--    planner settings admit one plan only: for the claim, the ordered walk of
--    `deliveries_claimable`, stopped after `limit` rows, with nested-loop lookups by row id and
--    primary key; for a fenced write, one primary-key lookup per fence. A fenced write planned as
--    a plain statement joined the fences to a sequential scan of the table whenever the
--    statistics were taken while no row was claimed (the planner then expects one claimed row):
--    up to 4,000 claimed rows times 1,000 fences, 1.6-2.9 s per completion of a batch of 1,000. Planned as a plain statement, the claim took whatever the statistics suggested:
--    on a table never analyzed (a fresh database, autovacuum off or not yet run) the planner
--    guessed a few hundred due rows, read and sorted the whole backlog instead (0.2 s per claim at
--    200,000 rows), and re-planned every execution, since a `limit $n` generic plan is costed for a
--    tenth of the table. With the settings below the plan is the same on any table, and it is
--    cached for the session (`force_generic_plan`), so no claim pays for planning.
--
--    The settings are the functions' own (`set` clauses, given to all six at the end of this
--    file): they apply while one runs and are restored at its exit, so they never reach the
--    caller's session or other statements.

drop trigger events_keep_their_deliveries on events;
drop index deliveries_event_position;

-- Deleting events: one check per statement, over the rows it deleted.
create function refuse_deleting_events_with_deliveries() returns trigger
language plpgsql as $$
declare
    open_deliveries bigint;
    first_position bigint;
begin
    select count(*), min(d.event_position) into open_deliveries, first_position
    from osa_events.deliveries d
    where d.event_position in (select position from deleted_events);
    if open_deliveries > 0 then
        raise exception 'cannot delete events from osa_events.events: % open or dead deliveries still refer to them (the first at position %); deleting an event never deletes its work (complete, retry or delete those deliveries first)',
                open_deliveries, first_position
            using errcode = '23503';
    end if;
    return null;
end $$;

create trigger events_keep_their_deliveries
    after delete on events
    referencing old table as deleted_events
    for each statement execute function refuse_deleting_events_with_deliveries();

-- The subscription branch stays a row trigger (deliveries are found by the primary key's first
-- column); the event branch moved to the statement trigger above.
create or replace function refuse_orphaning_deliveries() returns trigger
language plpgsql as $$
declare
    open_deliveries bigint;
begin
    if tg_op = 'TRUNCATE' then
        if exists (select 1 from osa_events.deliveries) then
            raise exception 'cannot truncate osa_events.%: osa_events.deliveries still holds open work or dead letters (complete, retry or delete them first)', tg_table_name
                using errcode = '23503';
        end if;
        return null;
    end if;
    select count(*) into open_deliveries from osa_events.deliveries where subscription_id = old.id;
    if open_deliveries > 0 then
        raise exception 'cannot delete subscription % from osa_events.subscriptions: % open or dead deliveries still refer to it; deleting a subscription never deletes its work (complete, retry or delete those deliveries first)',
                old.name, open_deliveries
            using errcode = '23503';
    end if;
    return old;
end $$;

-- The fenced writes. Each takes the claims it concerns as parallel arrays (positions, tokens, and
-- for failures their errors and retry delays in seconds), finds each row by primary key, and
-- touches it only while that token still holds its claim (a row whose claim expired and was taken
-- over has another token). Each returns how many rows it wrote.

-- Completion deletes the claimed deliveries.
create function complete_deliveries(subscription integer, positions bigint[], tokens uuid[])
returns bigint
language plpgsql volatile
as $$
declare
    written bigint;
begin
    delete from osa_events.deliveries d
    using unnest(positions, tokens) as done (position, token)
    where d.subscription_id = subscription
      and d.event_position = done.position
      and d.claim_token = done.token
      and d.status = 'claimed';
    get diagnostics written = row_count;
    return written;
end $$;

-- A failure is pending again after its retry delay, or dead when it has none (null): a dead row
-- leaves the claimable index and keeps its error.
create function fail_deliveries(
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
    return written;
end $$;

-- A heartbeat moves the claims' expiry; returns the positions still held.
create function extend_deliveries(
    subscription integer, positions bigint[], tokens uuid[], claim_seconds float8
) returns setof bigint
language plpgsql volatile
as $$
begin
    return query
    update osa_events.deliveries d
    set run_at = now() + make_interval(secs => claim_seconds), updated_at = now()
    from unnest(positions, tokens) as held (position, token)
    where d.subscription_id = subscription
      and d.event_position = held.position
      and d.claim_token = held.token
      and d.status = 'claimed'
    returning d.event_position;
end $$;

-- A released claim is due at once and its attempt is given back: the handler never finished it
-- (shutdown), so it should not count against the retries.
create function release_deliveries(subscription integer, positions bigint[], tokens uuid[])
returns bigint
language plpgsql volatile
as $$
declare
    written bigint;
begin
    update osa_events.deliveries d
    set status = 'pending',
        run_at = now(),
        attempts = greatest(d.attempts - 1, 0),
        claim_token = null,
        claimed_by = null,
        updated_at = now()
    from unnest(positions, tokens) as held (position, token)
    where d.subscription_id = subscription
      and d.event_position = held.position
      and d.claim_token = held.token
      and d.status = 'claimed';
    get diagnostics written = row_count;
    return written;
end $$;

-- A deferred claim is pending again after its delay (none: at once), keeps its reason as the last
-- error, and its attempt is given back: this process could not take it yet, which is not the
-- event's failure.
create function defer_deliveries(
    subscription integer, positions bigint[], tokens uuid[], errors text[], retry_seconds float8[]
) returns bigint
language plpgsql volatile
as $$
declare
    written bigint;
begin
    update osa_events.deliveries d
    set status = 'pending',
        run_at = now() + make_interval(secs => coalesce(f.retry_secs, 0)),
        attempts = greatest(d.attempts - 1, 0),
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
    return written;
end $$;

-- Claims up to `claim_limit` due deliveries of `subscription` for `worker`, for `claim_seconds`,
-- after deleting the claimed deliveries fenced by (`done_positions`, `done_tokens`): the previous
-- batch's completion and the next claim in one statement and one commit. Every row carries the
-- number of deliveries completed; when nothing is claimed, one row carries it with the rest null.
--
-- `picked` takes due rows in index order (`deliveries_claimable`: subscription, run_at, position;
-- dead rows are not in it) and skips rows another claimer holds. Eligibility is decided inside the
-- locked sub-select, so two claimers can never both pass it for one row. `claimed` updates the
-- locked row versions by row id (they cannot move while locked), hands out a fresh token, counts
-- the attempt, and sets `run_at` to the claim's expiry: an expired claim is simply a due row again.
-- The completed rows are claimed rows whose `run_at` lies in the future, so the claim never
-- considers them.
create function claim_deliveries(
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

-- The planner settings of every claim and fenced-write function (see the top of this file).
do $$
declare
    planned regprocedure;
    given integer := 0;
begin
    for planned in
        select p.oid::regprocedure from pg_proc p
        where p.pronamespace = 'osa_events'::regnamespace
          and p.proname in ('claim_deliveries', 'complete_deliveries', 'fail_deliveries',
                            'extend_deliveries', 'release_deliveries', 'defer_deliveries')
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
    if given <> 6 then
        raise exception 'lean_claims: planner settings given to % functions, expected 6', given;
    end if;
end $$;
