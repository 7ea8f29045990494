-- Key turns: the worker that completes a key's head takes the key's next delivery in the same
-- statement, claimed for it directly, instead of making it due for any worker to claim.
--
-- Under `ordering_keys`, a key's next delivery was written twice after its head left: once from
-- waiting to due (the completion's trigger), once from due to claimed (a later claim). Both
-- writes move `run_at`, so neither is a HOT update and each rewrites every index entry of the
-- row: per event, twice the work of an unordered handler's drain (0.49x its rate over 1,000 keys).
-- When the completion comes with the worker's next claim (`claim_deliveries` with the previous
-- batch's fences: the runtime's path after a full batch of a handler without `Tx`), the next
-- delivery now goes from waiting to claimed in one write, and the claim returns it with what it
-- took from the index.
--
-- A key is handed on at most `max_turn` (8) times in a row; then its next delivery becomes
-- due as before, behind every delivery already due, and waits its turn at the next claims. So a
-- worker keeps the keys it is serving for a few deliveries (which also keeps one entity's events
-- on one worker, warm), and no key holds a claim loop while others wait longer than that.
--
-- Nothing else changes: the head still leaves in the completion's transaction, the key's lock is
-- taken as before, and the delivery handed on is an ordinary claim (a fresh token, an attempt
-- counted, `run_at` at the claim's expiry): if the worker dies, it is claimed again when that
-- expires. A delivery not due yet (a delayed publish) is never handed on: it becomes due at its
-- time. A completion without a claim (`complete_deliveries`), and every other deletion (purge,
-- cancel, prune), hand nothing on.
--
-- How the claim and the trigger talk: `claim_deliveries` sets the transaction-local setting
-- `osa_events.key_turn_claim` (the subscription, the worker, the claim's expiry and how many
-- deliveries the claim may take) around its completion, and the trigger answers with the
-- positions it claimed in `osa_events.key_turn_claimed`. Both are cleared before the claim reads
-- the index. A caller who sets the first around a deletion of its own can at most have the next
-- deliveries of those keys claimed under a made-up worker name, which expires like any claim.

-- `deliveries_by_key` holds the waiting deliveries only: it finds a key's next one, and nothing
-- else is looked up through it. A delivery leaves it when it stops waiting, so handing it on (or
-- making it due) and claiming it write the same index entries as an unordered handler's claim
-- (the primary key's and the claimable index's), not one more each time. The lookups through it
-- say `status = 'waiting'`, so the planner can use it.
drop index deliveries_by_key;
create index deliveries_by_key on deliveries (subscription_id, ordering_key, key_seq)
    where status = 'waiting';

-- How many times in a row the key was handed on to the worker that completed its head; back to
-- 0 when its next delivery becomes due instead (after a completion, or a death under `skip`).
alter table ordering_keys add column turn integer not null default 0;

-- The heads among the deleted rows leave their keys, as in `ordering_keys`; each key's first
-- waiting delivery is claimed for the completing worker (see the top of this file) or becomes
-- due; and the subscriptions given due work are woken.
create or replace function deliveries_left_keys() returns trigger
language plpgsql as $$
declare
    max_turn constant integer := 8;
    claim constant jsonb := nullif(current_setting('osa_events.key_turn_claim', true), '')::jsonb;
    claim_subscription constant integer := (claim ->> 'subscription')::integer;
    claim_worker constant text := claim ->> 'worker';
    claim_expiry constant timestamptz := (claim ->> 'expiry')::timestamptz;
    claim_room constant integer := coalesce((claim ->> 'room')::integer, 0);
    handed_on bigint[];
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
        -- Each key whose head left, its next waiting delivery (none: the key's row goes), when
        -- that one is due (now, or its event's `deliver_at` if later), and whether it may be
        -- handed to the claiming worker.
        select k.subscription_id, k.ordering_key, k.turn, n.key_seq as next_seq, n.due,
               coalesce(n.key_seq is not null and k.subscription_id = claim_subscription
                        and k.turn < max_turn and n.due <= now(), false) as may_hand_on
        from (select distinct g.subscription_id, g.ordering_key, g.key_seq
              from gone g where g.key_seq is not null) as g
        join osa_events.ordering_keys k
          on k.subscription_id = g.subscription_id
         and k.ordering_key = g.ordering_key
         and k.head = g.key_seq
        left join lateral (
            select w.key_seq, greatest(now(), e.deliver_at) as due
            from osa_events.deliveries w
            join osa_events.events e on e.position = w.event_position
            where w.subscription_id = k.subscription_id and w.ordering_key = k.ordering_key
              and w.key_seq > k.head and w.status = 'waiting'
            order by w.key_seq
            limit 1
        ) as n on true
    ), successors as (
        -- No more handed on than the claim may take, in key order.
        select h.*,
               h.may_hand_on
                 and row_number() over (partition by h.may_hand_on order by h.ordering_key)
                     <= claim_room as handed_on
        from heads_left h
        where h.next_seq is not null
    ), advanced as (
        update osa_events.deliveries d
        set status = case when s.handed_on then 'claimed' else 'pending' end,
            attempts = d.attempts + case when s.handed_on then 1 else 0 end,
            claim_token = case when s.handed_on then gen_random_uuid() end,
            claimed_by = case when s.handed_on then claim_worker end,
            claimed_at = case when s.handed_on then now() end,
            run_at = case when s.handed_on then claim_expiry else s.due end,
            updated_at = now()
        from successors s
        where d.subscription_id = s.subscription_id and d.ordering_key = s.ordering_key
          and d.key_seq = s.next_seq and d.status = 'waiting'
        returning d.subscription_id, d.event_position, s.handed_on
    ), moved as (
        update osa_events.ordering_keys k
        set head = s.next_seq,
            turn = case when s.handed_on then k.turn + 1 else 0 end
        from successors s
        where k.subscription_id = s.subscription_id and k.ordering_key = s.ordering_key
    ), forgotten as (
        delete from osa_events.ordering_keys k
        using heads_left h
        where k.subscription_id = h.subscription_id and k.ordering_key = h.ordering_key
          and h.next_seq is null
    ), notified as (
        select pg_notify('osa_events', subscription_id::text)
        from (select distinct a.subscription_id from advanced a where not a.handed_on) as due_in
    )
    select array_agg(a.event_position) filter (where a.handed_on),
           (select count(*) from notified)
    into handed_on, woken
    from advanced a;
    if claim is not null then
        perform set_config('osa_events.key_turn_claimed', coalesce(handed_on, '{}')::text, true);
    end if;
    return null;
end $$;

-- As in `ordering_keys`, with the update of the key's next delivery saying that it is waiting
-- (the index above holds no other).
create or replace function leave_ordering_key(subscription integer, key text, seq bigint) returns void
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
    where d.subscription_id = subscription and d.ordering_key = key and d.status = 'waiting'
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
        update osa_events.ordering_keys k set head = next_seq, turn = 0
        where k.subscription_id = subscription and k.ordering_key = key;
        perform pg_notify('osa_events', subscription::text);
    end if;
end $$;

-- The claim of `operations`, and: for an ordered subscription, the next deliveries of the keys
-- whose heads this call completes are claimed for the worker by the completion's trigger (see
-- the top of this file), returned first, and the walk of the index takes only what is left of
-- the limit. Only when the subscription may claim at all (not paused, retired or held by a
-- backfill), so the check now comes before the completion; the completion still lands.
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
    held boolean;
    hands_on boolean;
    expiry constant timestamptz := now() + make_interval(secs => claim_seconds);
    handed_on bigint[] := '{}';
begin
    select s.paused_at is not null or s.retired_at is not null or s.backfill_holds_claims,
           s.ordered is not null
    into held, hands_on
    from osa_events.subscriptions s
    where s.id = subscription;
    held := coalesce(held, false);
    hands_on := coalesce(hands_on and not held, false) and cardinality(done_positions) > 0;
    if cardinality(done_positions) > 0 then
        if hands_on then
            perform set_config('osa_events.key_turn_claim',
                               jsonb_build_object('subscription', subscription, 'worker', worker,
                                                  'expiry', expiry, 'room', claim_limit)::text,
                               true),
                    set_config('osa_events.key_turn_claimed', '{}', true);
        end if;
        done_count := osa_events.complete_deliveries(subscription, done_positions, done_tokens);
        if hands_on then
            handed_on := current_setting('osa_events.key_turn_claimed')::bigint[];
            perform set_config('osa_events.key_turn_claim', '', true),
                    set_config('osa_events.key_turn_claimed', '', true);
        end if;
    end if;
    if held then
        completed := done_count;
        return next;
        return;
    end if;
    return query
    with handed as (
        select d.event_position, extract(epoch from now())::float8 as due_at, d.claim_token,
               d.attempts, d.last_error
        from unnest(handed_on) as h (position)
        join osa_events.deliveries d
          on d.subscription_id = subscription and d.event_position = h.position
    ), picked as (
        select d.ctid as row_id, d.run_at
        from osa_events.deliveries d
        where d.subscription_id = subscription and d.status <> 'dead' and d.run_at <= now()
        order by d.run_at, d.event_position
        limit greatest(claim_limit - cardinality(handed_on), 0)
        for no key update skip locked
    ), claimed as (
        update osa_events.deliveries d
        set status = 'claimed',
            attempts = d.attempts + 1,
            claim_token = gen_random_uuid(),
            claimed_by = worker,
            run_at = expiry,
            claimed_at = now(),
            updated_at = now()
        from picked
        where d.ctid = picked.row_id
        returning d.event_position, extract(epoch from picked.run_at)::float8 as due_at,
                  d.claim_token, d.attempts, d.last_error
    ), taken as (
        select * from handed
        union all
        select * from claimed
    )
    select done_count, c.event_position, c.due_at, c.claim_token, c.attempts, c.last_error,
           e.id, e.event_type, e.event_version, e.routing_key, e.payload::text, e.metadata::text,
           extract(epoch from e.created_at)::float8
    from taken c
    join osa_events.events e on e.position = c.event_position;
    if not found then
        completed := done_count;
        return next;
    end if;
end $$;

-- `create or replace` keeps a function's owner and grants (so `leave_ordering_key` may still be
-- called by its triggers only) but drops its settings and `security definer`: the claim and the
-- key's leaving get the fenced writes' planner settings again (lean_claims), the trigger its own
-- (ordering_keys), and the two key functions run as the schema's owner again.
do $$
declare
    planned regprocedure;
begin
    foreach planned in array array[
        'osa_events.claim_deliveries(integer, integer, text, float8, bigint[], uuid[])'::regprocedure,
        'osa_events.leave_ordering_key(integer, text, bigint)'::regprocedure]
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
    end loop;
end $$;

alter function leave_ordering_key(integer, text, bigint)
    security definer
    set search_path = pg_catalog, pg_temp;

alter function deliveries_left_keys()
    security definer
    set search_path = pg_catalog, pg_temp
    set enable_seqscan = off
    set enable_bitmapscan = off
    set enable_sort = on
    set enable_hashjoin = off
    set enable_mergejoin = off
    set enable_material = off
    set jit = off;
