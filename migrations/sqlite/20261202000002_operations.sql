-- Operations: the trigger that keeps events with work looks their deliveries up by primary key.
--
-- The initial trigger joins `subscriptions` with `deliveries` on the event's position, and
-- without statistics (nobody runs ANALYZE on the file) SQLite's planner drives that join from
-- `deliveries`: every deleted event scanned every delivery of every subscription, so one prune
-- step of 100 events at a million open deliveries read a hundred million rows while holding the
-- write lock. `cross join` fixes the order: the few subscriptions outside, one primary-key probe
-- of `deliveries` (subscription_id, event_position) each. The condition and the message are the
-- same; see osa-events-sqlite/src/operations/prune.rs, which selects with this very condition.
drop trigger events_keep_their_deliveries;

create trigger events_keep_their_deliveries
before delete on events
when exists (select 1 from subscriptions s
             cross join deliveries d on d.subscription_id = s.id and d.event_position = old.position)
begin
    select raise(abort, 'cannot delete events from events: open or dead deliveries still refer to them; deleting an event never deletes its work (complete, retry or delete those deliveries first)');
end;
