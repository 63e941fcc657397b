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
-- Each view keeps only the rows the querying role may see (see
-- 0002_auditor_access: tenant isolation).

-- MARK: audit_log

CREATE VIEW lockbox.audit_log WITH (security_barrier = true) AS
SELECT
    a.id,
    a.occurred_at,
    a.tenant_id,
    t.name AS tenant,
    a.record_type,
    a.user_id,
    a.actor,
    a.client_ip,
    a.activity,
    a.item,
    a.request_id,
    a.workload,
    a.result,
    a.parameters
FROM lockbox.audit_records a
LEFT JOIN lockbox.tenants t ON t.tenant_id = a.tenant_id
WHERE (SELECT lockbox.reads_base_tables())
   OR a.tenant_id IN (SELECT m.tenant_id FROM lockbox.auditor_tenants m
                      WHERE m.login IN (session_user, current_user));

-- MARK: access_requests

CREATE VIEW lockbox.access_requests WITH (security_barrier = true) AS
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
) lapsed
WHERE (SELECT lockbox.reads_base_tables())
   OR r.tenant_id IN (SELECT m.tenant_id FROM lockbox.auditor_tenants m
                      WHERE m.login IN (session_user, current_user));

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

CREATE VIEW lockbox.operator_actions WITH (security_barrier = true) AS
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
    a.parameters ->> 'reason' AS reason,
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
WHERE a.record_type = 'OperatorAction'
  AND ((SELECT lockbox.reads_base_tables())
       OR a.tenant_id IN (SELECT m.tenant_id FROM lockbox.auditor_tenants m
                          WHERE m.login IN (session_user, current_user)));

COMMENT ON VIEW lockbox.audit_log IS
    'Every audit record. Auditors see only the tenants mapped to their login in lockbox.auditor_tenants.';
COMMENT ON VIEW lockbox.access_requests IS
    'One row per access request; status, ended_at and ended_reason as of query time, whether or not the sweeper ran.';
COMMENT ON VIEW lockbox.operator_actions IS
    'Every operator content operation (allowed or refused) joined to the request it names.';
COMMENT ON COLUMN lockbox.operator_actions.within_grant IS
    'Inside the approved window of its request (and not after a cancel or revoke), by the requester, in its tenant, '
    'workload and scope.';

-- MARK: Privileges
--
-- Nothing in schema lockbox is usable by PUBLIC. Grants cover the objects
-- that exist now: a later migration that adds a table, sequence or function
-- must grant what lockbox_app needs of it, and for a function also REVOKE
-- EXECUTE ... FROM PUBLIC (PostgreSQL lets PUBLIC execute new functions, and
-- auditors have USAGE on the schema).

REVOKE ALL ON SCHEMA lockbox FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA lockbox FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA lockbox FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA lockbox FROM PUBLIC;

-- lockbox_app: USAGE but not CREATE on the schema, so it cannot change it.
GRANT USAGE ON SCHEMA lockbox TO lockbox_app;
GRANT SELECT, INSERT, UPDATE ON lockbox.tenants, lockbox.operators, lockbox.requests, lockbox.notifications
    TO lockbox_app;
-- Removing a customer role deletes its row (the trigger keeps the last global
-- administrator); `lockbox auditor revoke` deletes a mapping.
GRANT SELECT, INSERT, UPDATE, DELETE ON lockbox.tenant_roles, lockbox.auditor_tenants TO lockbox_app;
-- The audit log: append and read only. No UPDATE, DELETE or TRUNCATE privilege
-- (and the triggers of 0001 refuse those for the owner too, TRUNCATE except
-- inside a migration).
GRANT SELECT, INSERT ON lockbox.audit_records TO lockbox_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA lockbox TO lockbox_app;
-- The authorization functions connectors go through (lockbox.authorize and
-- its helpers). None is SECURITY DEFINER: each runs with lockbox_app's own
-- table privileges above, so this grants no further right.
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA lockbox TO lockbox_app;
GRANT SELECT ON lockbox.audit_log, lockbox.access_requests, lockbox.operator_actions TO lockbox_app;

-- The broker checks at start-up that the schema is migrated.
DO $$
BEGIN
    IF to_regclass('public.lockbox_schema_migrations') IS NOT NULL THEN
        GRANT SELECT ON public.lockbox_schema_migrations TO lockbox_app;
    END IF;
END $$;

-- lockbox_auditor: the three views and nothing else. (The views call
-- lockbox.reads_base_tables() as the querying role, hence EXECUTE.)
GRANT USAGE ON SCHEMA lockbox TO lockbox_auditor;
GRANT SELECT ON lockbox.audit_log, lockbox.access_requests, lockbox.operator_actions TO lockbox_auditor;
GRANT EXECUTE ON FUNCTION lockbox.reads_base_tables() TO lockbox_auditor;
