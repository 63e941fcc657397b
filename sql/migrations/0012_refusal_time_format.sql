-- A refusal names the end of an access window to the millisecond, as every
-- other time the broker and the CLI print (ISO 8601, UTC, milliseconds
-- truncated: `2026-03-01T09:30:00.125Z`).
--
-- Why: 0001's lockbox.refusal printed it to the second ("ended at
-- 2026-03-01T09:30:00Z") while `request show` printed the same end as
-- "2026-03-01T09:30:00.125Z". The rule is unchanged; only the format (`.MS`,
-- which truncates, as the broker's format does) is new. The function keeps its
-- signature, so its callers (lockbox.refusal_of, lockbox.authorize_batch) and
-- its privileges are unchanged.
CREATE OR REPLACE FUNCTION lockbox.refusal(
    p_operator text, p_tenant_id uuid, p_tenant text, p_workload text, p_resource text, p_now timestamptz
) RETURNS TABLE (request_id uuid, reason text)
LANGUAGE sql STABLE AS $$
    SELECT r.request_id,
        CASE
            WHEN r.request_id IS NULL THEN
                format('no access request of operator %s for %s in tenant %s', p_operator, p_workload, p_tenant)
            WHEN r.status = 'Approved' AND p_now >= r.access_ends_at THEN
                format('the access window of request %s ended at %s', r.request_id,
                       to_char(r.access_ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
            WHEN r.status = 'Approved' AND p_now < r.access_starts_at THEN
                format('the access window of request %s has not started', r.request_id)
            WHEN r.status = 'Approved' THEN
                format('resource %s is outside the scope %s of request %s', p_resource, r.resource, r.request_id)
            WHEN r.status = 'PendingCustomer' AND p_now >= r.customer_deadline THEN
                format('request %s expired without a customer decision', r.request_id)
            ELSE format('request %s is %s, not approved', r.request_id, r.status)
        END
    FROM (SELECT 1) AS one
    LEFT JOIN LATERAL (
        SELECT x.* FROM lockbox.requests x
        WHERE x.requester = p_operator AND x.tenant_id = p_tenant_id AND x.workload = p_workload
        ORDER BY (x.status = 'Approved') DESC,
                 greatest(x.created_at, x.reviewed_at, x.decided_at, x.ended_at) DESC, x.created_at DESC
        LIMIT 1
    ) r ON true
$$;
