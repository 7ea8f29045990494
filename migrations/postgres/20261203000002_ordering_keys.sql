-- Per-key order: an `ordered` handler takes the deliveries of one ordering key one at a time, in
-- publish order, and the keys in parallel. See docs/ordering.md.
--
-- Only the head of a key is ever due. The others wait in status `waiting` with `run_at` at
-- infinity: the claim's walk of `deliveries_claimable` (`run_at <= now()`) stops before them, so
-- the claim statement and its plan are unchanged, and it never reads a held-back row. When the
-- head leaves (completed, purged, or dead under `ordered = "skip"`) the next one of its key
-- becomes due in the same transaction, so a worker's next claim (the one that carries the
-- completion) already sees it.
--
-- Everything is done by row triggers on `deliveries`, each with a WHEN clause on the ordering
-- key, so every path that creates or removes deliveries (publish, replay, backfill, completion,
-- failure, retry and purge of dead letters, cancel, prune) keeps a key's order without knowing
-- about it, and deliveries without a key (every unordered handler's) never call a function.
--
-- A key's state is one row of `ordering_keys`, locked by whoever changes the key: a publish (by
-- its upsert, until it commits), a completion, a failure. So the head's successor is always
-- known: a completion waits for a publish of the same key in flight to commit, and then sees its
-- delivery. The sequence within a key (`key_seq`) is handed out under that lock, so it is the
-- order in which the publishing transactions took the key: the order they committed in, the
-- projections' causal order, and within one transaction the order of the events.

-- The key an event was published with (`Outgoing::with_ordering_key`, or derived by the event).
-- Replay and backfill copy it to the deliveries of ordered subscriptions.
alter table events add column ordering_key text;

-- `block`: a dead head blocks its key until it is retried or purged; `skip`: the key goes on.
-- Null: unordered, and the subscription's deliveries get no key.
alter table subscriptions add column ordered text check (ordered in ('block', 'skip'));

-- `ordering_key` is set only on the deliveries of ordered subscriptions. `key_seq` is the
-- delivery's place in its key; null for a dead letter that left its key (`skip`).
alter table deliveries
    add column ordering_key text,
    add column key_seq bigint;

alter table deliveries drop constraint deliveries_status_check;
alter table deliveries add constraint deliveries_status_check
    check (status in ('pending', 'claimed', 'dead', 'waiting'));

-- A key's deliveries in key order: the successor of a head is the first waiting entry.
create index deliveries_by_key on deliveries (subscription_id, ordering_key, key_seq)
    where key_seq is not null;

-- One row per key that has a head or waiting deliveries; removed when the last one leaves.
--   head  the `key_seq` of the delivery that may run (pending, claimed, or dead under `block`);
--         null while none does
--   tail  the last `key_seq` handed out
-- No foreign key: its check would take a share lock of the subscription's row on every publish,
-- which the backfill's steps lock for update (deliveries have none either, see
-- deliveries_keep_their_events).
create table ordering_keys (
    subscription_id integer not null,
    ordering_key    text    not null,
    head            bigint,
    tail            bigint  not null,
    primary key (subscription_id, ordering_key)
);

alter table ordering_keys set (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000
);

-- A delivery joins its key at the end: it is the head if the key has none, else it waits.
-- For a new delivery, and for a dead letter that had left its key and is retried.
create function join_ordering_key() returns trigger
language plpgsql as $$
declare
    key_head bigint;
    key_tail bigint;
begin
    insert into osa_events.ordering_keys as k (subscription_id, ordering_key, head, tail)
    values (new.subscription_id, new.ordering_key, 1, 1)
    on conflict (subscription_id, ordering_key)
    do update set tail = k.tail + 1, head = coalesce(k.head, k.tail + 1)
    returning k.head, k.tail into key_head, key_tail;
    new.key_seq := key_tail;
    if key_head <> key_tail then
        new.status := 'waiting';
        new.run_at := 'infinity';
    end if;
    return new;
end $$;

-- The head of a key leaves it (`seq` is its place): the first waiting delivery becomes the head,
-- due now (or at its event's `deliver_at`, if later), and the subscription's loops are woken; with none waiting, the key's row goes. A
-- delivery that is not the head (a waiting one purged or cancelled) changes nothing.
create function leave_ordering_key(subscription integer, key text, seq bigint) returns void
language plpgsql as $$
declare
    key_head bigint;
    next_seq bigint;
begin
    select k.head into key_head from osa_events.ordering_keys k
    where k.subscription_id = subscription and k.ordering_key = key
    for update;
    if key_head is distinct from seq then
        return;
    end if;
    update osa_events.deliveries d
    set status = 'pending', updated_at = now(),
        -- Due now, or at its event's due time if that is later (a delayed publish).
        run_at = greatest(now(), (select e.deliver_at from osa_events.events e
                                  where e.position = d.event_position))
    where d.subscription_id = subscription and d.ordering_key = key
      and d.key_seq = (select w.key_seq from osa_events.deliveries w
                       where w.subscription_id = subscription and w.ordering_key = key
                         and w.key_seq > seq and w.status = 'waiting'
                       order by w.key_seq
                       limit 1)
    returning d.key_seq into next_seq;
    if next_seq is null then
        delete from osa_events.ordering_keys k
        where k.subscription_id = subscription and k.ordering_key = key;
    else
        update osa_events.ordering_keys k set head = next_seq
        where k.subscription_id = subscription and k.ordering_key = key;
        perform pg_notify('osa_events', subscription::text);
    end if;
end $$;

-- The heads among the rows a statement deleted (completed, purged, cancelled, pruned, retired)
-- leave their keys, all at once: the keys are locked in key order (as a publish takes them), and
-- then, under that lock and in a snapshot that sees what publishers committed meanwhile, each
-- key's first waiting delivery becomes the head, due now (or at its event's `deliver_at`, if
-- later), or the key's row goes when none waits. Waiting rows that were deleted just go. One
-- statement trigger, over the deleted rows, so a completion of 64 heads costs three statements,
-- not three per head.
create function deliveries_left_keys() returns trigger
language plpgsql as $$
declare
    woken integer;
begin
    if not exists (select 1 from gone g where g.key_seq is not null) then
        return null;
    end if;
    perform 1
    from (select distinct g.subscription_id, g.ordering_key
          from gone g where g.key_seq is not null) as left_keys
    join osa_events.ordering_keys k
      on k.subscription_id = left_keys.subscription_id
     and k.ordering_key = left_keys.ordering_key
    order by k.subscription_id, k.ordering_key
    for update of k;
    with heads_left as (
        select k.subscription_id, k.ordering_key,
               (select w.key_seq from osa_events.deliveries w
                where w.subscription_id = k.subscription_id and w.ordering_key = k.ordering_key
                  and w.key_seq > k.head and w.status = 'waiting'
                order by w.key_seq
                limit 1) as next_seq
        from (select distinct g.subscription_id, g.ordering_key, g.key_seq
              from gone g where g.key_seq is not null) as g
        join osa_events.ordering_keys k
          on k.subscription_id = g.subscription_id
         and k.ordering_key = g.ordering_key
         and k.head = g.key_seq
    ), promoted as (
        update osa_events.deliveries d
        set status = 'pending', updated_at = now(),
            run_at = greatest(now(), (select e.deliver_at from osa_events.events e
                                      where e.position = d.event_position))
        from heads_left h
        where d.subscription_id = h.subscription_id and d.ordering_key = h.ordering_key
          and d.key_seq = h.next_seq
        returning d.subscription_id
    ), moved as (
        update osa_events.ordering_keys k set head = h.next_seq
        from heads_left h
        where k.subscription_id = h.subscription_id and k.ordering_key = h.ordering_key
          and h.next_seq is not null
    ), forgotten as (
        delete from osa_events.ordering_keys k
        using heads_left h
        where k.subscription_id = h.subscription_id and k.ordering_key = h.ordering_key
          and h.next_seq is null
    )
    select count(*) into woken
    from (select pg_notify('osa_events', subscription_id::text)
          from (select distinct subscription_id from promoted) as promoted_in) as notified;
    return null;
end $$;

-- A head dead-lettered under `skip` leaves its key (and so has no place in it any more); under
-- `block` it stays the head. A subscription no longer ordered skips: nothing of its would block.
create function deliveries_died_in_key() returns trigger
language plpgsql as $$
begin
    if exists (select 1 from osa_events.subscriptions s
               where s.id = new.subscription_id and s.ordered = 'block') then
        return new;
    end if;
    perform osa_events.leave_ordering_key(new.subscription_id, new.ordering_key, new.key_seq);
    new.key_seq := null;
    return new;
end $$;

create trigger deliveries_join_key
    before insert on deliveries
    for each row when (new.ordering_key is not null)
    execute function join_ordering_key();

-- A retried dead letter that had left its key joins it again, at the end.
create trigger deliveries_rejoin_key
    before update of status on deliveries
    for each row when (new.ordering_key is not null and old.key_seq is null
                       and old.status = 'dead' and new.status <> 'dead')
    execute function join_ordering_key();

create trigger deliveries_die_in_key
    before update of status on deliveries
    for each row when (new.ordering_key is not null and new.key_seq is not null
                       and old.status <> 'dead' and new.status = 'dead')
    execute function deliveries_died_in_key();

create trigger deliveries_leave_keys
    after delete on deliveries
    referencing old table as gone
    for each statement
    execute function deliveries_left_keys();

-- The keys a batch of fenced writes will change, locked in key order before the writes take them
-- one by one in fence order: a publish takes its keys in key order too (the publish statement
-- sorts its deliveries so), so the two never wait for each other in a cycle.
create function lock_ordering_keys(subscription integer, positions bigint[]) returns void
language plpgsql as $$
declare
    key text;
begin
    -- A loop of primary-key locks, in key order: as one statement (`... order by k.ordering_key
    -- for update`) the planner walked the subscription's whole `ordering_keys` index in key
    -- order for each completion, joining every key to the batch (202 ms for a batch of 64 among
    -- 1,000 keys).
    for key in
        select distinct d.ordering_key
        from unnest(positions) as p (position)
        join osa_events.deliveries d
          on d.subscription_id = subscription and d.event_position = p.position
        where d.ordering_key is not null
        order by 1
    loop
        perform 1 from osa_events.ordering_keys k
        where k.subscription_id = subscription and k.ordering_key = key
        for update;
    end loop;
end $$;

-- Completion as before (its deletes' keys are locked, in key order, by `deliveries_leave_keys`);
-- failure with the keys locked first, for an ordered subscription whose batch has a dead letter.
create or replace function complete_deliveries(subscription integer, positions bigint[], tokens uuid[])
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

create or replace function fail_deliveries(
    subscription integer, positions bigint[], tokens uuid[], errors text[], retry_seconds float8[]
) returns bigint
language plpgsql volatile
as $$
declare
    written bigint;
begin
    if exists (select 1 from osa_events.subscriptions s
               where s.id = subscription and s.ordered is not null)
       and array_position(retry_seconds, null) is not null then
        perform osa_events.lock_ordering_keys(subscription, positions);
    end if;
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

-- A key's bookkeeping runs as the schema's owner (`security definer`, like `current_commit`):
-- publishers, workers and operators need no grant on `ordering_keys`, nor more on `deliveries`
-- than they have (a publisher's insert promotes nothing; a worker's completion promotes rows it
-- may update anyway). The trigger functions cannot be called but as triggers;
-- `leave_ordering_key` could be, so only the owner (through the triggers) may execute it.
do $$
declare
    bookkeeping regprocedure;
begin
    foreach bookkeeping in array array[
        'osa_events.join_ordering_key()'::regprocedure,
        'osa_events.leave_ordering_key(integer, text, bigint)'::regprocedure,
        'osa_events.deliveries_left_keys()'::regprocedure,
        'osa_events.deliveries_died_in_key()'::regprocedure,
        'osa_events.lock_ordering_keys(integer, bigint[])'::regprocedure]
    loop
        execute format('alter function %s security definer set search_path = pg_catalog, pg_temp',
                       bookkeeping);
    end loop;
end $$;
revoke execute on function leave_ordering_key(integer, text, bigint) from public;

-- Index plans for the statement trigger whatever the caller's settings, with the sorts it needs
-- allowed: with `enable_sort = off` (the fenced writes' setting) the key lock walked the
-- subscription's whole `ordering_keys` index in key order instead of sorting the batch's keys.
alter function deliveries_left_keys()
    set enable_seqscan = off
    set enable_bitmapscan = off
    set enable_sort = on
    set enable_hashjoin = off
    set enable_mergejoin = off
    set enable_material = off
    set jit = off;

-- The planner settings of the fenced writes and the claim (see lean_claims), for the functions
-- replaced or added here: `create or replace` drops a function's settings.
do $$
declare
    planned regprocedure;
    given integer := 0;
begin
    for planned in
        select p.oid::regprocedure from pg_proc p
        where p.pronamespace = 'osa_events'::regnamespace
          and p.proname in ('complete_deliveries', 'fail_deliveries', 'lock_ordering_keys',
                            'leave_ordering_key')
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
    if given <> 4 then
        raise exception 'ordering_keys: planner settings given to % functions, expected 4', given;
    end if;
end $$;
