-- access_outside_grant.sql — THE ALARM QUERY: operator actions that were
-- allowed (result Succeeded) although they lie outside an approved access
-- window of their request. It must return no rows; any row means content was
-- reached without a valid grant and must be investigated.
--
-- An action is inside its grant (operator_actions.within_grant) when its
-- request was approved, it happened in [access_starts_at, access_ends_at) and
-- not after a cancel or revoke, by the requester, in the request's tenant,
-- workload and resource scope. Refused attempts are not listed here (they
-- reached nothing): see denied_attempts.sql.
--
-- Parameters (psql variables, all required):
--   tenant  the tenant's name, in any letter case (names are unique ignoring case), or *
--           for every tenant you may see
--   from    start of the period, inclusive (a timestamp, e.g. 2026-11-01T00:00Z)
--   to      end of the period, exclusive
-- An action belongs to the period when it happened in [from, to).
--
-- Run: psql -v tenant=contoso -v from=2026-11-01T00:00Z -v to=2026-12-01T00:00Z -f sql/reports/access_outside_grant.sql
-- Reads only the report views: lockbox.operator_actions, lockbox.access_requests.

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
    o.request_id,
    o.ticket,
    r.status AS request_status,
    o.access_starts_at,
    o.access_ends_at,
    CASE
        WHEN o.request_id IS NULL THEN 'no request'
        WHEN r.request_id IS NULL THEN 'request not found'
        WHEN r.access_starts_at IS NULL THEN 'request never approved (' || r.status || ')'
        WHEN o.occurred_at < r.access_starts_at THEN 'before the access window'
        WHEN o.occurred_at >= r.access_ends_at THEN 'after the access window'
        WHEN r.ended_at IS NOT NULL AND o.occurred_at > r.ended_at THEN 'after the grant ended (' || r.ended_reason || ')'
        WHEN o.operator IS DISTINCT FROM r.requester THEN 'operator is not the requester ' || r.requester
        WHEN o.tenant_id IS DISTINCT FROM r.tenant_id THEN 'tenant differs from the request''s ' || r.tenant
        WHEN o.workload IS DISTINCT FROM r.workload THEN 'workload differs from the request''s ' || r.workload
        ELSE 'resource outside the request''s scope ' || coalesce(r.resource, '')
    END AS violation
FROM params p
JOIN lockbox.operator_actions o
  ON (p.tenant = '*' OR lower(o.tenant) = lower(p.tenant))
 AND o.occurred_at >= p.from_at AND o.occurred_at < p.to_at
LEFT JOIN lockbox.access_requests r ON r.request_id = o.request_id
WHERE o.result = 'Succeeded'
  AND NOT o.within_grant
ORDER BY o.occurred_at, o.audit_id;
