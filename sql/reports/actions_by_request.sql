-- actions_by_request.sql — every operator action (allowed or refused) of a
-- period, grouped under the request and support ticket it ran under.
--
-- Answers: "what exactly did the engineers do with our data under each ticket?"
--
-- Parameters (psql variables, all required):
--   tenant  the tenant's name, in any letter case (names are unique ignoring case), or *
--           for every tenant you may see
--   from    start of the period, inclusive (a timestamp, e.g. 2026-11-01T00:00Z)
--   to      end of the period, exclusive
-- An action belongs to the period when it happened in [from, to).
--
-- One row per action, ordered by request (the request's first action of the
-- period first), then by time. request_actions and request_refused count the
-- request's rows in this report; action_no numbers them. Refused attempts
-- that named no request (e.g. an operator with no request at all) come last,
-- under an empty request, one group per tenant: by tenant name, then those
-- that named no known tenant (tenant empty). Each group is counted and
-- numbered as a request's.
--
-- Run: psql -v tenant=contoso -v from=2026-11-01T00:00Z -v to=2026-12-01T00:00Z -f sql/reports/actions_by_request.sql
-- Reads only the report views: lockbox.operator_actions, lockbox.access_requests.

WITH params AS (
    SELECT CAST(:'tenant' AS text) AS tenant,
           CAST(:'from' AS timestamptz) AS from_at,
           CAST(:'to' AS timestamptz) AS to_at
),
actions AS (
    SELECT o.*
    FROM params p
    JOIN lockbox.operator_actions o
      ON (p.tenant = '*' OR lower(o.tenant) = lower(p.tenant))
     AND o.occurred_at >= p.from_at AND o.occurred_at < p.to_at
),
grouped AS (
    SELECT
        a.*,
        min(a.occurred_at) OVER w AS first_action_at,
        count(*) FILTER (WHERE a.result = 'Succeeded') OVER w AS request_actions,
        count(*) FILTER (WHERE a.result = 'Denied') OVER w AS request_refused,
        row_number() OVER (w ORDER BY a.occurred_at, a.audit_id) AS action_no
    FROM actions a
    WINDOW w AS (PARTITION BY a.request_id, CASE WHEN a.request_id IS NULL THEN a.tenant_id END)
)
SELECT
    g.tenant,
    g.ticket,
    g.request_id,
    g.requester,
    r.status AS request_status,
    g.access_starts_at,
    g.access_ends_at,
    g.request_actions,
    g.request_refused,
    g.action_no,
    g.audit_id,
    g.occurred_at,
    g.operator,
    g.client_ip,
    g.operation,
    g.resource,
    g.arguments,
    g.result,
    g.within_grant,
    g.reason
FROM grouped g
LEFT JOIN lockbox.access_requests r ON r.request_id = g.request_id
ORDER BY g.request_id IS NULL, CASE WHEN g.request_id IS NULL THEN g.tenant END NULLS LAST, g.first_action_at,
         g.request_id, g.action_no;
