-- Per-key order, as PostgreSQL's `ordering_keys` migration does it (see docs/ordering.md): an
-- ordered subscription's deliveries of one ordering key are due one at a time, in publish order.
--
-- Only the head of a key is due; the others wait in status `waiting` with `run_at` at +infinity
-- (`9e999`), past any claim's `run_at <= now`, so the claim is unchanged. Triggers on
-- `deliveries` keep every path in order. SQLite cannot modify NEW in a trigger, so a delivery
-- joins its key after its insert, by an update of its own row; writers are serialised, so the
-- key's state needs no locking.

alter table events add column ordering_key text;

alter table subscriptions add column ordered text check (ordered in ('block', 'skip'));

-- The status check gains `waiting`: SQLite alters no constraint, so the table is rebuilt. The
-- triggers of other tables that read it are dropped first and created again after (a rename
-- checks every trigger of the schema, and theirs would name a table that is gone).
drop trigger events_keep_their_deliveries;
drop trigger subscriptions_keep_their_deliveries;

create table deliveries_rebuilt (
    subscription_id  integer not null,
    event_position   integer not null,
    status           text    not null default 'pending'
                             check (status in ('pending', 'claimed', 'dead', 'waiting')),
    attempts         integer not null default 0,
    run_at           real    not null default (unixepoch('subsec')),
    claim_token      text,
    claimed_by       text,
    claimed_at       real,
    last_error       text,
    updated_at       real    not null default (unixepoch('subsec')),
    ordering_key     text,
    key_seq          integer,
    primary key (subscription_id, event_position)
) without rowid;

insert into deliveries_rebuilt
    (subscription_id, event_position, status, attempts, run_at, claim_token, claimed_by,
     claimed_at, last_error, updated_at)
select subscription_id, event_position, status, attempts, run_at, claim_token, claimed_by,
       claimed_at, last_error, updated_at
from deliveries;

drop table deliveries;
alter table deliveries_rebuilt rename to deliveries;

create index deliveries_claimable on deliveries (subscription_id, run_at, event_position, status)
    where status <> 'dead';
create index deliveries_dead on deliveries (subscription_id, updated_at) where status = 'dead';
create index deliveries_by_key on deliveries (subscription_id, ordering_key, key_seq)
    where key_seq is not null;

create trigger events_keep_their_deliveries
before delete on events
when exists (select 1 from subscriptions s
             cross join deliveries d on d.subscription_id = s.id and d.event_position = old.position)
begin
    select raise(abort, 'cannot delete events from events: open or dead deliveries still refer to them; deleting an event never deletes its work (complete, retry or delete those deliveries first)');
end;

create trigger subscriptions_keep_their_deliveries
before delete on subscriptions
when exists (select 1 from deliveries d where d.subscription_id = old.id)
begin
    select raise(abort, 'cannot delete a subscription from subscriptions: open or dead deliveries still refer to it; deleting a subscription never deletes its work (complete, retry or delete those deliveries first)');
end;

-- One row per key with a head or waiting deliveries (`head`: the key_seq that may run, null
-- while none does; `tail`: the last handed out).
create table ordering_keys (
    subscription_id integer not null,
    ordering_key    text    not null,
    head            integer,
    tail            integer not null,
    primary key (subscription_id, ordering_key)
) without rowid;

-- A delivery joins its key at the end: the head if the key has none, else waiting. For a new
-- delivery with a key, and for a dead letter that had left its key and is retried (`rejoin`).
create trigger deliveries_join_key
after insert on deliveries
when new.ordering_key is not null
begin
    insert into ordering_keys (subscription_id, ordering_key, head, tail)
    values (new.subscription_id, new.ordering_key, 1, 1)
    on conflict (subscription_id, ordering_key)
    do update set tail = tail + 1, head = coalesce(head, tail + 1);
    update deliveries
    set key_seq = (select k.tail from ordering_keys k
                   where k.subscription_id = new.subscription_id
                     and k.ordering_key = new.ordering_key),
        status = case when (select k.head <> k.tail from ordering_keys k
                            where k.subscription_id = new.subscription_id
                              and k.ordering_key = new.ordering_key)
                      then 'waiting' else status end,
        run_at = case when (select k.head <> k.tail from ordering_keys k
                            where k.subscription_id = new.subscription_id
                              and k.ordering_key = new.ordering_key)
                      then 9e999 else run_at end
    where subscription_id = new.subscription_id and event_position = new.event_position;
end;

create trigger deliveries_rejoin_key
after update of status on deliveries
when new.ordering_key is not null and old.key_seq is null
     and old.status = 'dead' and new.status <> 'dead'
begin
    insert into ordering_keys (subscription_id, ordering_key, head, tail)
    values (new.subscription_id, new.ordering_key, 1, 1)
    on conflict (subscription_id, ordering_key)
    do update set tail = tail + 1, head = coalesce(head, tail + 1);
    update deliveries
    set key_seq = (select k.tail from ordering_keys k
                   where k.subscription_id = new.subscription_id
                     and k.ordering_key = new.ordering_key),
        status = case when (select k.head <> k.tail from ordering_keys k
                            where k.subscription_id = new.subscription_id
                              and k.ordering_key = new.ordering_key)
                      then 'waiting' else status end,
        run_at = case when (select k.head <> k.tail from ordering_keys k
                            where k.subscription_id = new.subscription_id
                              and k.ordering_key = new.ordering_key)
                      then 9e999 else run_at end
    where subscription_id = new.subscription_id and event_position = new.event_position;
end;

-- The head leaves its key (completed, purged, cancelled, pruned, retired): the first waiting one
-- becomes the head, due now; with none waiting, the key's row goes. A waiting one that leaves
-- changes nothing. (The promotion is an update of a waiting row, which no trigger here takes.)
create trigger deliveries_leave_key
after delete on deliveries
when old.ordering_key is not null and old.key_seq is not null
     and old.key_seq = (select k.head from ordering_keys k
                        where k.subscription_id = old.subscription_id
                          and k.ordering_key = old.ordering_key)
begin
    update ordering_keys
    set head = (select min(w.key_seq) from deliveries w
                where w.subscription_id = old.subscription_id
                  and w.ordering_key = old.ordering_key
                  and w.key_seq > old.key_seq and w.status = 'waiting')
    where subscription_id = old.subscription_id and ordering_key = old.ordering_key;
    update deliveries
    set status = 'pending', updated_at = unixepoch('subsec'),
        run_at = max(unixepoch('subsec'), coalesce((select e.deliver_at from events e
                                                    where e.position = deliveries.event_position), 0))
    where subscription_id = old.subscription_id and ordering_key = old.ordering_key
      and key_seq = (select k.head from ordering_keys k
                     where k.subscription_id = old.subscription_id
                       and k.ordering_key = old.ordering_key);
    delete from ordering_keys
    where subscription_id = old.subscription_id and ordering_key = old.ordering_key
      and head is null;
end;

-- A head dead-lettered under `skip` (or of a subscription no longer ordered) leaves its key; under
-- `block` it stays the head.
create trigger deliveries_die_in_key
after update of status on deliveries
when new.ordering_key is not null and new.key_seq is not null
     and old.status <> 'dead' and new.status = 'dead'
     and not exists (select 1 from subscriptions s
                     where s.id = new.subscription_id and s.ordered = 'block')
     and new.key_seq = (select k.head from ordering_keys k
                        where k.subscription_id = new.subscription_id
                          and k.ordering_key = new.ordering_key)
begin
    update ordering_keys
    set head = (select min(w.key_seq) from deliveries w
                where w.subscription_id = new.subscription_id
                  and w.ordering_key = new.ordering_key
                  and w.key_seq > new.key_seq and w.status = 'waiting')
    where subscription_id = new.subscription_id and ordering_key = new.ordering_key;
    update deliveries
    set status = 'pending', updated_at = unixepoch('subsec'),
        run_at = max(unixepoch('subsec'), coalesce((select e.deliver_at from events e
                                                    where e.position = deliveries.event_position), 0))
    where subscription_id = new.subscription_id and ordering_key = new.ordering_key
      and key_seq = (select k.head from ordering_keys k
                     where k.subscription_id = new.subscription_id
                       and k.ordering_key = new.ordering_key);
    update deliveries set key_seq = null
    where subscription_id = new.subscription_id and event_position = new.event_position;
    delete from ordering_keys
    where subscription_id = new.subscription_id and ordering_key = new.ordering_key
      and head is null;
end;
