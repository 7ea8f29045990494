-- Activity history: how many deliveries each handler handled, failed and dead-lettered, and how
-- many events each projection applied (and batches failed), minute by minute, for the charts of
-- a dashboard. See osa-events-core/src/operations/activity.rs for what the counts mean, and
-- osa-events-postgres/src/operations/activity.rs for the statements.
--
-- Runtimes count in memory and add their counts on every node heartbeat: one upsert into the
-- current minute's row (`date_trunc('minute', now())`, the database's clock), which also deletes
-- the rows older than two hours. So the table holds at most (handlers + projections) × 121 rows,
-- whatever the load.
--
-- The key leads with the minute: the deletion of old rows and the read of the last hour are both
-- a range of it, and the upsert finds its row by the whole key.
create table activity (
    kind     text        not null check (kind in ('handler', 'projection')),
    name     text        not null,
    minute   timestamptz not null,
    handled  bigint      not null default 0,
    failed   bigint      not null default 0,
    dead     bigint      not null default 0,
    primary key (minute, kind, name)
);
