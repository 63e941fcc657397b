-- Database roles, and tenant isolation in the report views.
--
--   lockbox_app      what the broker, the connectors and the CLI need, and no
--                    more: audit rows can be inserted and read, never updated,
--                    deleted or truncated; no schema changes.
--   lockbox_auditor  SELECT on the three report views, nothing else.
--
-- Both are NOLOGIN group roles: a deployment grants them to its login roles
-- (GRANT lockbox_auditor TO carol_audit). A login with lockbox_auditor sees, in
-- every view, only the rows of the tenants its login is mapped to in
-- lockbox.auditor_tenants (`lockbox auditor grant LOGIN --tenant NAME`), and
-- nothing when it is mapped to none.

-- MARK: Roles
--
-- Roles belong to the whole cluster, and several databases of one cluster run
-- this migration (each test database, staging beside production), possibly at
-- the same time: create each role only when it is missing, and treat losing a
-- race to another database's migration as success. Privileges below are
-- per-database, so they are simply granted here.

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['lockbox_app', 'lockbox_auditor'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = v_role);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by the migration of another database
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist and % may not create it', v_role, current_user
                    USING ERRCODE = '42501',
                          HINT = format('create it once as a superuser: CREATE ROLE %I NOLOGIN', v_role);
        END;
    END LOOP;
END $$;

-- MARK: Which tenants an auditor login may read

CREATE TABLE lockbox.auditor_tenants (
    login text NOT NULL,
    tenant_id uuid NOT NULL REFERENCES lockbox.tenants,
    PRIMARY KEY (login, tenant_id),
    CONSTRAINT auditor_tenants_login_format CHECK (octet_length(login) BETWEEN 1 AND 63)
);

COMMENT ON TABLE lockbox.auditor_tenants IS
    'Tenants whose rows a database login sees in the report views when it cannot read the base tables '
    '(managed by `lockbox auditor grant|revoke LOGIN --tenant NAME`).';

-- MARK: Tenant isolation in the report views
--
-- How: the filter is in the views themselves. A view runs with its owner's
-- rights on the tables it reads, so auditors need no right at all on the base
-- tables; row-level security policies on those tables would be checked as
-- the view's owner, who is exempt, so they could not tell auditors apart.
-- Every view keeps a row when
--
--   (a) the querying role can already SELECT every base table the views read
--       (the owner, lockbox_app, a superuser): the view shows it nothing it
--       could not read directly, so it sees every row; or
--   (b) the row's tenant is mapped to the session's login (session_user) or to
--       the role it acts as (current_user; view bodies evaluate it as the
--       querying role, not as the owner) in lockbox.auditor_tenants.
--
-- The rule is deny-by-default: any role that cannot read the base tables — a
-- lockbox_auditor login, or a role someone granted SELECT on a view by hand —
-- sees only its mapped tenants, and nothing when it has none. Rows about no
-- tenant (tenant_id NULL, e.g. a new support operator) are shown to (a) only.
--
-- (a) is computed once per query (an uncorrelated sub-select becomes an
-- InitPlan) and (b) a hashed lookup of the login's few mapped tenants, so the
-- filter costs little on a large audit log, unlike a per-row function call.
--
-- security_barrier: an auditor may write its own function (in pg_temp) and
-- use it in a WHERE clause on a view; without the barrier the planner could
-- run that function on rows of other tenants before the tenant filter and let
-- it copy them out. With it, only leakproof built-in operators are pushed
-- below the filter.

CREATE FUNCTION lockbox.reads_base_tables() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    -- Names are schema-qualified: this body is parsed with the caller's search_path.
    SELECT pg_catalog.has_table_privilege('lockbox.audit_records', 'SELECT')
       AND pg_catalog.has_table_privilege('lockbox.requests', 'SELECT')
       AND pg_catalog.has_table_privilege('lockbox.tenants', 'SELECT')
$$;

COMMENT ON FUNCTION lockbox.reads_base_tables() IS
    'True when the current role can SELECT the base tables behind the report views, which then show it every tenant.';

CREATE OR REPLACE VIEW lockbox.audit_log WITH (security_barrier = true) AS
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

CREATE OR REPLACE VIEW lockbox.access_requests WITH (security_barrier = true) AS
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
CROSS JOIN LATERAL (
    SELECT r.status = 'Approved' AND r.access_ends_at <= now() AS window_over,
           r.status = 'PendingCustomer' AND r.customer_deadline <= now() AS deadline_over
) lapsed
WHERE (SELECT lockbox.reads_base_tables())
   OR r.tenant_id IN (SELECT m.tenant_id FROM lockbox.auditor_tenants m
                      WHERE m.login IN (session_user, current_user));

CREATE OR REPLACE VIEW lockbox.operator_actions WITH (security_barrier = true) AS
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
