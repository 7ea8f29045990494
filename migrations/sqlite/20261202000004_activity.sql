-- Activity history: the counterpart of PostgreSQL's `activity` table (see
-- migrations/postgres/20261202000001_activity.sql for what it holds, and
-- osa-events-sqlite/src/operations/activity.rs for the statements).
--
-- `minute` is the start of the minute in whole seconds since the Unix epoch (an INTEGER, not the
-- REAL seconds of the other tables: it is compared for equality in the key), of the store's clock
-- (`unixepoch()`).
create table activity (
    kind     text    not null check (kind in ('handler', 'projection')),
    name     text    not null,
    minute   integer not null,
    handled  integer not null default 0,
    failed   integer not null default 0,
    dead     integer not null default 0,
    primary key (minute, kind, name)
);
