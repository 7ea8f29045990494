-- Delayed publish (`Outgoing::deliver_after` / `deliver_at`): when an event's deliveries become due,
-- in REAL seconds since the Unix epoch like every time of this store.
--
-- The publish computes it with the database's clock (`unixepoch('subsec') + delay`, or the time
-- asked for) and gives it, as `run_at`, to every delivery it creates: the claim already takes only
-- rows with `run_at <= now`, in `run_at` order. It is kept on the event so that a copy of the
-- history (a replay, or a backfill) cannot deliver a delayed event early: a copied delivery is due
-- at the later of the copy's own due time and this one. Null for an event delivered at once.
alter table events add column deliver_at real;
