-- An attempt by an operator alias no support engineer has is refused as an
-- unknown operator, as an attempt on a tenant that does not exist is refused
-- as an unknown tenant.
--
-- Why: lockbox.refusal explained every attempt that found none of the
-- operator's requests as "no access request of operator nobody for Exchange
-- in tenant contoso", whether or not `nobody` is a support engineer at all.
-- Auditors read only the report views, never lockbox.operators, so the record
-- (lockbox.operator_actions.reason, denied_attempts.sql) gave them no way to
-- tell a registered engineer without a request from an alias that no one
-- registered (a typo, a probe, a tool calling lockbox.authorize as anyone).
-- Now the reason says so: "unknown operator nobody (no support engineer has
-- that alias)". Only attempts that found no request of the operator pay for
-- the lookup (an operator's requests name a registered operator: foreign key).
--
-- The statements (sql/statements/authorize_one.sql, authorize_batch.sql) and
-- lockbox.authorize_batch explain refusals through lockbox.refusal_of, which
-- calls this function: all of them change alike. The rest is 0021's (restated
-- whole, as a function must be); the signature and privileges are unchanged.
CREATE OR REPLACE FUNCTION lockbox.refusal(
    p_operator text, p_tenant_id uuid, p_tenant text, p_workload text, p_resource text, p_now timestamptz
) RETURNS TABLE (request_id uuid, reason text)
LANGUAGE sql STABLE AS $$
    SELECT r.request_id,
        CASE
            WHEN r.request_id IS NULL AND NOT EXISTS (SELECT 1 FROM lockbox.operators o WHERE o.alias = p_operator) THEN
                format('unknown operator %s (no support engineer has that alias)', p_operator)
            WHEN r.request_id IS NULL THEN
                format('no access request of operator %s for %s in tenant %s', p_operator, p_workload, p_tenant)
            WHEN r.status = 'Approved' AND p_now >= r.access_ends_at THEN
                format('the access window of request %s ended at %s', r.request_id,
                       to_char(r.access_ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
            WHEN r.status = 'Approved' AND p_now < r.access_starts_at THEN
                format('the access window of request %s has not started', r.request_id)
            WHEN r.status = 'Approved' AND NOT (r.resource IS NULL OR p_resource = r.resource
                                                OR starts_with(p_resource, r.resource || '/')) THEN
                format('resource %s is outside the scope %s of request %s', p_resource, r.resource, r.request_id)
            WHEN r.status = 'Approved' THEN
                format('request %s was approved while this attempt was being checked: try again', r.request_id)
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
