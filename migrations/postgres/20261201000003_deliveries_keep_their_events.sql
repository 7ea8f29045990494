-- No schema path deletes open work or dead letters as a side effect.
--
-- Both foreign keys of `deliveries` were `on delete cascade`, so the obvious retention step
-- (`delete from osa_events.events where created_at < ...`) silently deleted pending and dead
-- deliveries with their events. They also cost every publish two checks per delivery (about a
-- fifth of a 100-event publish, a third with 100 subscriptions: BENCHMARKS.md). Only the publish
-- statement writes deliveries, in the same statement as their events, so the keys guarded nothing
-- else. In their place, deleting (or truncating) an event or a subscription that still has
-- deliveries fails, naming what is in the way; deliveries are removed by completing them, or
-- deliberately, first.

alter table deliveries
    drop constraint deliveries_subscription_id_fkey,
    drop constraint deliveries_event_position_fkey;

create function refuse_orphaning_deliveries() returns trigger
language plpgsql as $$
declare
    open_deliveries bigint;
    referred text;
begin
    if tg_op = 'TRUNCATE' then
        if exists (select 1 from osa_events.deliveries) then
            raise exception 'cannot truncate osa_events.%: osa_events.deliveries still holds open work or dead letters (complete, retry or delete them first)', tg_table_name
                using errcode = '23503';
        end if;
        return null;
    end if;
    -- Separate branches: each row type has only its own fields.
    if tg_table_name = 'events' then
        select count(*) into open_deliveries from osa_events.deliveries where event_position = old.position;
        referred := 'the event at position ' || old.position;
    else
        select count(*) into open_deliveries from osa_events.deliveries where subscription_id = old.id;
        referred := 'subscription ' || old.name;
    end if;
    if open_deliveries > 0 then
        raise exception 'cannot delete % from osa_events.%: % open or dead deliveries still refer to it; deleting an event or a subscription never deletes its work (complete, retry or delete those deliveries first)',
                referred, tg_table_name, open_deliveries
            using errcode = '23503';
    end if;
    return old;
end $$;

create trigger events_keep_their_deliveries
    before delete on events
    for each row execute function refuse_orphaning_deliveries();
create trigger subscriptions_keep_their_deliveries
    before delete on subscriptions
    for each row execute function refuse_orphaning_deliveries();
create trigger events_truncate_keeps_deliveries
    before truncate on events
    for each statement execute function refuse_orphaning_deliveries();
create trigger subscriptions_truncate_keeps_deliveries
    before truncate on subscriptions
    for each statement execute function refuse_orphaning_deliveries();
