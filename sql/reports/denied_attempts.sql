-- denied_attempts.sql — operator attempts the gateway refused, with the
-- reason it gave (no grant, window over, request expired, operation not in
-- the connector's pre-approved catalogue, resource outside the scope, unknown
-- tenant, unknown operator: an alias no support engineer has, ...).
--
-- Answers: "who tried to reach our data without a valid grant, and why were
-- they stopped?"
--
-- Parameters (psql variables, all required):
--   tenant  the tenant's name, in any letter case (names are unique ignoring case), or *
--           for every tenant you may see (with *, a role that reads every tenant
--           also sees attempts on unknown tenants)
--   from    start of the period, inclusive (a timestamp, e.g. 2026-11-01T00:00Z)
--   to      end of the period, exclusive
-- An attempt belongs to the period when it happened in [from, to).
--
-- Run: psql -v tenant=contoso -v from=2026-11-01T00:00Z -v to=2026-12-01T00:00Z -f sql/reports/denied_attempts.sql
-- Reads only the report view lockbox.operator_actions.

WITH params AS (
    SELECT CAST(:'tenant' AS text) AS tenant,
           CAST(:'from' AS timestamptz) AS from_at,
           CAST(:'to' AS timestamptz) AS to_at
)
SELECT
    o.audit_id,
    o.occurred_at,
    o.tenant,
    o.operator,
    o.client_ip,
    o.workload,
    o.operation,
    o.resource,
    o.arguments,
    o.request_id,
    o.ticket,
    o.reason
FROM params p
JOIN lockbox.operator_actions o
  ON (p.tenant = '*' OR lower(o.tenant) = lower(p.tenant))
 AND o.occurred_at >= p.from_at AND o.occurred_at < p.to_at
WHERE o.result = 'Denied'
ORDER BY o.occurred_at, o.audit_id;
