-- Projections on SQLite: a checkpoint counts its resets.
--
-- A batch is read without the write lock and committed under it; its commit moves the checkpoint
-- only if the checkpoint is as the batch found it, position and resets both. The count catches a
-- reset to the very position the batch was read after (a rebuild from the beginning, with the read
-- model cleared, while the first batch is applied): the reset stands and the batch rolls back.
alter table checkpoints add column resets integer not null default 0;
