-- A fourth report view, lockbox.customer_tenants: the tenants the querying role
-- may see, with their Customer Lockbox setting.
--
-- Why: the other views only show tenants through their requests or audit
-- records, so a report could not list a tenant with nothing in a period (e.g.
-- approval_latency's "one row per tenant you may see", which left out tenants
-- without requests). Auditors could not even tell which tenants they audit.
--
-- The tenant filter is the one of 0003's views (see 0002): every tenant for a
-- role that can read the base tables, else the tenants mapped to the session's
-- login or current role in lockbox.auditor_tenants; a security barrier.

CREATE VIEW lockbox.customer_tenants WITH (security_barrier = true) AS
SELECT
    t.tenant_id,
    t.name AS tenant,
    t.customer_lockbox,
    t.created_at
FROM lockbox.tenants t
WHERE (SELECT lockbox.reads_base_tables())
   OR t.tenant_id IN (SELECT m.tenant_id FROM lockbox.auditor_tenants m
                      WHERE m.login IN (session_user, current_user));

COMMENT ON VIEW lockbox.customer_tenants IS
    'The tenants you may see, with their Customer Lockbox setting. Auditors see only the tenants mapped to their login.';

GRANT SELECT ON lockbox.customer_tenants TO lockbox_app, lockbox_auditor;
