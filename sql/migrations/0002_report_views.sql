-- Report views: the stable contract auditors query (psql, BI tools, the
-- reports in sql/reports). Base tables may change; these columns do not.
--
--   lockbox.audit_log         every audit record
--   lockbox.access_requests   one row per request, status as of query time
--   lockbox.operator_actions  every operator content operation, joined to its request
--
-- Time: the broker writes every time from its own clock; these views compare
-- them with the database server's clock (now(), the start of the querying
-- transaction) to tell whether a window or a deadline has passed, so a status
-- is right at query time whether or not the sweeper ran.
--
-- Tenant isolation for auditors is added to these views by 0003_auditor_roles.

-- MARK: audit_log

CREATE VIEW lockbox.audit_log AS
SELECT
    a.id,
    a.occurred_at,
    a.tenant_id,
    t.name AS tenant,        -- NULL for records that concern no tenant (e.g. a new support operator)
    a.record_type,
    a.user_id,               -- the source's "User" column
    a.actor,                 -- the real principal behind the record
    a.client_ip,
    a.activity,
    a.item,
    a.request_id,
    a.workload,
    a.result,
    a.parameters
FROM lockbox.audit_records a
LEFT JOIN lockbox.tenants t ON t.tenant_id = a.tenant_id;

-- MARK: access_requests

CREATE VIEW lockbox.access_requests AS
SELECT
    r.request_id,
    r.tenant_id,
    t.name AS tenant,
    r.workload,
    r.ticket,
    r.reason,
    r.resource,
    r.requester,
    r.internal_approver,
    r.duration,
    CASE WHEN lapsed.window_over THEN 'Completed'
         WHEN lapsed.deadline_over THEN 'Expired'
         ELSE r.status END AS status,
    r.created_at,
    r.notified_at,
    r.decided_at,
    r.decided_by,
    r.decision,
    r.access_starts_at,
    r.access_ends_at,
    coalesce(r.ended_at,
             CASE WHEN lapsed.window_over THEN r.access_ends_at
                  WHEN lapsed.deadline_over THEN r.customer_deadline END) AS ended_at,
    coalesce(r.ended_reason,
             CASE WHEN lapsed.window_over THEN 'access window ended'
                  WHEN lapsed.deadline_over THEN 'no customer decision within 12 hours' END) AS ended_reason
FROM lockbox.requests r
JOIN lockbox.tenants t ON t.tenant_id = r.tenant_id
-- What the sweeper would record if it ran now (the same rules and wording as
-- the broker's sweep).
CROSS JOIN LATERAL (
    SELECT r.status = 'Approved' AND r.access_ends_at <= now() AS window_over,
           r.status = 'PendingCustomer' AND r.customer_deadline <= now() AS deadline_over
) lapsed;

-- MARK: operator_actions
--
-- within_grant is true when the action lies inside the grant of the request it
-- names, exactly as lockbox.authorize grants access:
--   * the request was approved (by the customer, or internally with Customer
--     Lockbox off): it has an access window;
--   * the action happened in [access_starts_at, access_ends_at), and not
--     after the grant was cancelled or revoked (ended_at; an action stamped
--     at the very instant of the revocation was authorized before it);
--   * by the requester, in the request's tenant and workload, and on a
--     resource inside the request's scope when it has one.
-- A refused attempt (result 'Denied') usually lies outside any grant; that is
-- why it was refused. An allowed one outside its grant is an alarm
-- (sql/reports/access_outside_grant.sql).

CREATE VIEW lockbox.operator_actions AS
SELECT
    a.id AS audit_id,
    a.occurred_at,
    a.tenant_id,
    t.name AS tenant,
    a.actor AS operator,
    a.client_ip,
    a.workload,
    a.activity AS operation,
    a.parameters ->> 'resource' AS resource,
    a.parameters -> 'arguments' AS arguments,
    a.result,
    a.parameters ->> 'reason' AS reason,        -- why it was refused; NULL when allowed
    a.request_id,
    r.ticket,
    r.requester,
    r.access_starts_at,
    r.access_ends_at,
    coalesce(
        r.access_starts_at IS NOT NULL
        AND a.occurred_at >= r.access_starts_at
        AND a.occurred_at < r.access_ends_at
        AND (r.ended_at IS NULL OR a.occurred_at <= r.ended_at)
        AND a.actor = r.requester
        AND a.tenant_id = r.tenant_id
        AND a.workload = r.workload
        AND (r.resource IS NULL
             OR a.parameters ->> 'resource' = r.resource
             OR starts_with(a.parameters ->> 'resource', r.resource || '/')),
        false) AS within_grant,
    a.parameters
FROM lockbox.audit_records a
LEFT JOIN lockbox.tenants t ON t.tenant_id = a.tenant_id
LEFT JOIN lockbox.requests r ON r.request_id = a.request_id
WHERE a.record_type = 'OperatorAction';
