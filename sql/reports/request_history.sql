-- request_history.sql — the access requests of a tenant created in a period,
-- with their internal and customer decisions, how they ended, and how many
-- operator actions ran (and were refused) under each.
--
-- Answers: "which requests did the provider make for our data this month, who
-- approved them, and how much was done under each?"
--
-- Parameters (psql variables, all required):
--   tenant  the tenant's name, in any letter case (names are unique ignoring case), or *
--           for every tenant you may see
--   from    start of the period, inclusive (a timestamp, e.g. 2026-11-01T00:00Z)
--   to      end of the period, exclusive
-- A request belongs to the period when it was created in [from, to).
-- status is as of now (an approved request past its window reads Completed,
-- an unanswered one past 12 hours reads Expired, even if no sweep ran).
--
-- Run: psql -v tenant=contoso -v from=2026-11-01T00:00Z -v to=2026-12-01T00:00Z -f sql/reports/request_history.sql
-- Reads only the report views: lockbox.access_requests, lockbox.operator_actions.

WITH params AS (
    SELECT CAST(:'tenant' AS text) AS tenant,
           CAST(:'from' AS timestamptz) AS from_at,
           CAST(:'to' AS timestamptz) AS to_at
)
SELECT
    r.tenant,
    r.request_id,
    r.ticket,
    r.workload,
    r.resource,
    r.requester,
    r.reason,
    r.duration,
    r.created_at,
    r.internal_approver,
    r.notified_at,
    r.decision,
    r.decided_by,
    r.decided_at,
    r.status,
    r.access_starts_at,
    r.access_ends_at,
    r.ended_at,
    r.ended_reason,
    coalesce(n.actions, 0) AS actions,
    coalesce(n.refused, 0) AS refused_actions
FROM params p
JOIN lockbox.access_requests r
  ON (p.tenant = '*' OR lower(r.tenant) = lower(p.tenant))
 AND r.created_at >= p.from_at AND r.created_at < p.to_at
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE o.result = 'Succeeded') AS actions,
           count(*) FILTER (WHERE o.result = 'Denied') AS refused
    FROM lockbox.operator_actions o
    WHERE o.request_id = r.request_id
) n ON true
ORDER BY r.created_at, r.request_id;
