-- Operations: which runtime instance leads each projection (shown while it holds the lock).
alter table checkpoints add column leader text;
