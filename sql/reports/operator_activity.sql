-- operator_activity.sql — per support operator: the requests they made, the
-- internal approvals they gave as support managers, and the operations they
-- ran or were refused, in a period.
--
-- Answers: "which engineers and managers touched our tenant, and how much?"
--
-- Parameters (psql variables, all required):
--   tenant  the tenant's name, in any letter case (names are unique ignoring case), or *
--           for every tenant you may see
--   from    start of the period, inclusive (a timestamp, e.g. 2026-11-01T00:00Z)
--   to      end of the period, exclusive
-- Requests (and the approvals given on them) count when the request was
-- created in [from, to); actions and refusals when they happened in [from, to).
--
-- Columns:
--   requests              requests the operator created
--   approved_requests     of those, how many got an access window
--   internal_approvals    requests the operator approved as support manager
--   internal_rejections   requests the operator rejected as support manager
--   actions               operations the operator ran (allowed)
--   refusals              operations the operator attempted and was refused
--   outside_grant         allowed operations outside their grant (must be 0;
--                         see access_outside_grant.sql)
-- One row per operator with any activity, by operator alias.
--
-- Run: psql -v tenant=contoso -v from=2026-11-01T00:00Z -v to=2026-12-01T00:00Z -f sql/reports/operator_activity.sql
-- Reads only the report views: lockbox.access_requests, lockbox.operator_actions.

WITH params AS (
    SELECT CAST(:'tenant' AS text) AS tenant,
           CAST(:'from' AS timestamptz) AS from_at,
           CAST(:'to' AS timestamptz) AS to_at
),
requests AS (
    SELECT r.*
    FROM params p
    JOIN lockbox.access_requests r
      ON (p.tenant = '*' OR lower(r.tenant) = lower(p.tenant))
     AND r.created_at >= p.from_at AND r.created_at < p.to_at
),
actions AS (
    SELECT o.*
    FROM params p
    JOIN lockbox.operator_actions o
      ON (p.tenant = '*' OR lower(o.tenant) = lower(p.tenant))
     AND o.occurred_at >= p.from_at AND o.occurred_at < p.to_at
),
by_requester AS (
    SELECT r.requester AS operator,
           count(*) AS requests,
           count(*) FILTER (WHERE r.access_starts_at IS NOT NULL) AS approved_requests
    FROM requests r
    GROUP BY r.requester
),
by_manager AS (
    SELECT r.internal_approver AS operator,
           count(*) FILTER (WHERE r.status <> 'Rejected') AS internal_approvals,
           count(*) FILTER (WHERE r.status = 'Rejected') AS internal_rejections
    FROM requests r
    WHERE r.internal_approver IS NOT NULL
    GROUP BY r.internal_approver
),
by_actor AS (
    SELECT a.operator,
           count(*) FILTER (WHERE a.result = 'Succeeded') AS actions,
           count(*) FILTER (WHERE a.result = 'Denied') AS refusals,
           count(*) FILTER (WHERE a.result = 'Succeeded' AND NOT a.within_grant) AS outside_grant
    FROM actions a
    GROUP BY a.operator
)
SELECT
    operator,
    coalesce(q.requests, 0) AS requests,
    coalesce(q.approved_requests, 0) AS approved_requests,
    coalesce(m.internal_approvals, 0) AS internal_approvals,
    coalesce(m.internal_rejections, 0) AS internal_rejections,
    coalesce(x.actions, 0) AS actions,
    coalesce(x.refusals, 0) AS refusals,
    coalesce(x.outside_grant, 0) AS outside_grant
FROM by_requester q
FULL JOIN by_manager m USING (operator)
FULL JOIN by_actor x USING (operator)
ORDER BY operator;
