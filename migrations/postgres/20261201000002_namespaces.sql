-- Registration is no longer last-writer-wins (osa-events/src/store/postgres/register.rs): a
-- subscription keeps its event type and routing key unless re-pointed at a higher revision, so an
-- older process restarting during a rolling deploy cannot revert what a newer one registered.
--
-- Namespaces (`RuntimeBuilder::namespace`) need no column: a handler or projection `x` of
-- namespace `billing` is stored as `billing@x` in `subscriptions.name` and `checkpoints.name`
-- (`@` is allowed in neither a namespace nor a handler name), and the default namespace keeps the
-- bare name, so existing rows stay as they are.
alter table subscriptions
    add column revision integer not null default 1 check (revision >= 1);
