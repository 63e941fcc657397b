-- lockbox_app may update one column of tenants (customer_lockbox: `lockbox tenant set`)
-- and none of operators.
--
-- Why: 0003 granted it UPDATE on every column of both. A role that writes for the
-- broker could therefore rename a tenant, which renames the tenant of its whole
-- history in every report view, or make an engineer a support manager, who may then
-- review other engineers' requests; neither writes an audit record. The broker
-- never does either. Locking a tenant row (FOR SHARE, FOR NO KEY UPDATE), as the
-- broker does, needs UPDATE on one of its columns: customer_lockbox is that column.
REVOKE UPDATE ON lockbox.tenants, lockbox.operators FROM lockbox_app;
GRANT UPDATE (customer_lockbox) ON lockbox.tenants TO lockbox_app;
