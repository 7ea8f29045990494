-- Projections read the log in (commit_xid, position) order; see osa-events/src/projection/read.rs.
create index events_commit_order on events (commit_xid, position);

-- Operations: why the last batch failed, and when.
alter table checkpoints
    add column last_error text,
    add column failed_at timestamptz;
