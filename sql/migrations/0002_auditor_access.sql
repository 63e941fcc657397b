-- Database roles, the auditor-to-tenant mapping, and the rule the report views
-- (0003_report_views) use to isolate tenants.
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
