-- approval_latency.sql — per tenant: how many requests were made in a period,
-- how they were decided, and how long the customer took to decide.
--
-- Answers: "how quickly do our approvers answer, and how many requests do we
-- let expire?"
--
-- Parameters (psql variables, all required):
--   tenant  the tenant's name, in any letter case (names are unique ignoring case), or *
--           for one row per tenant you may see
--   from    start of the period, inclusive (a timestamp, e.g. 2026-11-01T00:00Z)
--   to      end of the period, exclusive
-- A request belongs to the period when it was created in [from, to).
--
-- One row per tenant you may see (lockbox.customer_tenants) that existed
-- before the end of the period, by name, also for a tenant with no request in
-- the period (counts 0, median and p95 NULL). A tenant you may not see, one
-- created after the period, or one that does not exist gets no row.
--
-- Columns:
--   requests                 requests created in the period
--   approved                 requests that got an access window (customer
--                            Approve, or internal approval with Customer
--                            Lockbox off), whatever happened after
--   denied                   denied by the customer
--   expired                  no customer decision within 12 hours (as of now,
--                            swept or not)
--   customer_decisions       requests the customer approved or denied after
--                            being notified: the sample of the two latencies
--   median_time_to_decision  50th percentile of decided_at - notified_at
--   p95_time_to_decision     95th percentile (percentile_cont, interpolated),
--                            both rounded down to the second; NULL without decisions
--
-- Run: psql -v tenant='*' -v from=2026-11-01T00:00Z -v to=2026-12-01T00:00Z -f sql/reports/approval_latency.sql
-- Reads only the report views lockbox.customer_tenants, lockbox.access_requests.

WITH params AS (
    SELECT CAST(:'tenant' AS text) AS tenant,
           CAST(:'from' AS timestamptz) AS from_at,
           CAST(:'to' AS timestamptz) AS to_at
),
requests AS (
    SELECT r.*,
           r.decision IN ('Approve', 'Deny') AND r.notified_at IS NOT NULL AND r.decided_at IS NOT NULL
               AS customer_decided
    FROM params p
    JOIN lockbox.access_requests r
      ON (p.tenant = '*' OR lower(r.tenant) = lower(p.tenant))
     AND r.created_at >= p.from_at AND r.created_at < p.to_at
),
tenants AS (
    SELECT t.tenant
    FROM params p
    JOIN lockbox.customer_tenants t
      ON t.created_at < p.to_at AND (p.tenant = '*' OR lower(t.tenant) = lower(p.tenant))
)
SELECT
    t.tenant,
    count(r.request_id) AS requests,
    count(*) FILTER (WHERE r.access_starts_at IS NOT NULL) AS approved,
    count(*) FILTER (WHERE r.status = 'Denied') AS denied,
    count(*) FILTER (WHERE r.status = 'Expired') AS expired,
    count(*) FILTER (WHERE r.customer_decided) AS customer_decisions,
    date_trunc('second', percentile_cont(0.5) WITHIN GROUP (ORDER BY r.decided_at - r.notified_at)
        FILTER (WHERE r.customer_decided)) AS median_time_to_decision,
    date_trunc('second', percentile_cont(0.95) WITHIN GROUP (ORDER BY r.decided_at - r.notified_at)
        FILTER (WHERE r.customer_decided)) AS p95_time_to_decision
FROM tenants t
LEFT JOIN requests r ON r.tenant = t.tenant
GROUP BY t.tenant
ORDER BY t.tenant;
