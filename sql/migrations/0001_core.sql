-- Lockbox core schema: tenants and their customer roles, provider operators,
-- access requests with their lifecycle, the append-only audit log, the
-- notification outbox, and the authorization function connectors call.
-- Every time is passed in by the broker (its injectable clock); nothing here
-- reads the server's clock for a rule.

CREATE SCHEMA lockbox;

-- MARK: Tenants and customer roles

CREATE TABLE lockbox.tenants (
    tenant_id uuid PRIMARY KEY,
    name text NOT NULL,
    customer_lockbox boolean NOT NULL DEFAULT false,
    service_account text NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT tenants_name_unique UNIQUE (name),
    CONSTRAINT tenants_name_format CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9-]{0,62}$')
);

CREATE TABLE lockbox.tenant_roles (
    tenant_id uuid NOT NULL REFERENCES lockbox.tenants,
    upn text NOT NULL,
    role text NOT NULL,
    granted_at timestamptz NOT NULL,
    granted_by text NOT NULL,
    PRIMARY KEY (tenant_id, upn, role),
    CONSTRAINT tenant_roles_upn_format CHECK (upn ~ '^[a-z0-9._%+''-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$'),
    CONSTRAINT tenant_roles_role CHECK (role IN ('GlobalAdministrator', 'CustomerLockboxApprover'))
);

-- The last global administrator of a tenant cannot be removed.
CREATE FUNCTION lockbox.keep_one_global_admin() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.role = 'GlobalAdministrator' AND NOT EXISTS (
        SELECT 1 FROM lockbox.tenant_roles
        WHERE tenant_id = OLD.tenant_id AND role = 'GlobalAdministrator' AND upn <> OLD.upn
    ) THEN
        RAISE EXCEPTION 'a tenant must keep at least one global administrator'
            USING ERRCODE = '23514', CONSTRAINT = 'tenant_roles_last_global_admin';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER tenant_roles_last_global_admin BEFORE DELETE ON lockbox.tenant_roles
    FOR EACH ROW EXECUTE FUNCTION lockbox.keep_one_global_admin();

-- MARK: Provider operators

CREATE TABLE lockbox.operators (
    alias text PRIMARY KEY,
    is_manager boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    CONSTRAINT operators_alias_format CHECK (alias ~ '^[a-z][a-z0-9._-]{0,63}$')
);

-- MARK: Access requests

CREATE TABLE lockbox.requests (
    request_id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES lockbox.tenants,
    workload text NOT NULL,
    ticket text NOT NULL,
    reason text NOT NULL,
    resource text,
    requester text NOT NULL REFERENCES lockbox.operators,
    duration interval NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    reviewed_at timestamptz,
    internal_approver text REFERENCES lockbox.operators,
    review_comment text,
    notified_at timestamptz,
    customer_deadline timestamptz,
    decided_at timestamptz,
    decided_by text,
    decision text,
    decision_comment text,
    access_starts_at timestamptz,
    access_ends_at timestamptz,
    ended_at timestamptz,
    ended_reason text,
    CONSTRAINT requests_workload_format CHECK (workload ~ '^[A-Za-z][A-Za-z0-9]{0,31}$'),
    CONSTRAINT requests_ticket_rule CHECK (
        btrim(ticket) <> '' AND length(ticket) <= 64 AND ticket !~ '[[:cntrl:]]'),
    CONSTRAINT requests_reason_rule CHECK (
        btrim(reason) <> '' AND length(reason) <= 2000 AND reason !~ '[[:cntrl:]]'),
    CONSTRAINT requests_resource_rule CHECK (
        resource IS NULL OR (btrim(resource) <> '' AND length(resource) <= 512 AND resource !~ '[[:cntrl:]]')),
    CONSTRAINT requests_duration_range CHECK (duration >= interval '1 minute' AND duration <= interval '4 hours'),
    CONSTRAINT requests_status CHECK (status IN (
        'PendingInternal', 'Rejected', 'PendingCustomer', 'Approved', 'Denied',
        'Expired', 'Cancelled', 'Revoked', 'Completed')),
    CONSTRAINT requests_decision CHECK (decision IN ('Approve', 'Deny', 'Cancel', 'Revoke')),
    CONSTRAINT requests_deadline_is_12_hours CHECK (
        (notified_at IS NULL AND customer_deadline IS NULL)
        OR customer_deadline = notified_at + interval '12 hours'),
    CONSTRAINT requests_two_person_rule CHECK (internal_approver IS NULL OR internal_approver <> requester),
    CONSTRAINT requests_window_is_duration CHECK (
        (access_starts_at IS NULL AND access_ends_at IS NULL)
        OR access_ends_at = access_starts_at + duration),
    CONSTRAINT requests_approved_has_window CHECK (status <> 'Approved' OR access_starts_at IS NOT NULL),
    CONSTRAINT requests_approved_was_reviewed CHECK (
        status NOT IN ('PendingCustomer', 'Approved') OR internal_approver IS NOT NULL)
);

CREATE INDEX requests_grant_lookup ON lockbox.requests (requester, tenant_id, workload, status);
CREATE INDEX requests_tenant_created ON lockbox.requests (tenant_id, created_at);
CREATE INDEX requests_status_deadlines ON lockbox.requests (status, customer_deadline, access_ends_at)
    WHERE status IN ('PendingCustomer', 'Approved');

-- Only the transitions of the lifecycle are possible, and only a support
-- manager can be the internal approver.
CREATE FUNCTION lockbox.check_request_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'PendingInternal' AND NEW.status IN ('Rejected', 'PendingCustomer', 'Approved', 'Cancelled'))
        OR (OLD.status = 'PendingCustomer' AND NEW.status IN ('Approved', 'Denied', 'Expired', 'Cancelled'))
        OR (OLD.status = 'Approved' AND NEW.status IN ('Completed', 'Cancelled', 'Revoked'))
    ) THEN
        RAISE EXCEPTION 'request % cannot go from % to %', OLD.request_id, OLD.status, NEW.status
            USING ERRCODE = '23514', CONSTRAINT = 'requests_lifecycle';
    END IF;
    IF NEW.internal_approver IS DISTINCT FROM OLD.internal_approver AND NOT EXISTS (
        SELECT 1 FROM lockbox.operators WHERE alias = NEW.internal_approver AND is_manager
    ) THEN
        RAISE EXCEPTION 'internal approver % is not a support manager', NEW.internal_approver
            USING ERRCODE = '23514', CONSTRAINT = 'requests_approver_is_manager';
    END IF;
    IF NEW.request_id <> OLD.request_id OR NEW.tenant_id <> OLD.tenant_id OR NEW.requester <> OLD.requester
        OR NEW.workload <> OLD.workload OR NEW.duration <> OLD.duration
        OR NEW.resource IS DISTINCT FROM OLD.resource OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'the terms of request % cannot change', OLD.request_id
            USING ERRCODE = '23514', CONSTRAINT = 'requests_terms_fixed';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER requests_lifecycle BEFORE UPDATE ON lockbox.requests
    FOR EACH ROW EXECUTE FUNCTION lockbox.check_request_transition();

CREATE FUNCTION lockbox.refuse_request_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'requests are never deleted' USING ERRCODE = '42501';
END $$;

CREATE TRIGGER requests_no_delete BEFORE DELETE ON lockbox.requests
    FOR EACH ROW EXECUTE FUNCTION lockbox.refuse_request_delete();

-- MARK: Audit log (append-only)

CREATE TABLE lockbox.audit_records (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    tenant_id uuid REFERENCES lockbox.tenants,
    record_type text NOT NULL,
    user_id text NOT NULL,
    actor text NOT NULL,
    client_ip inet,
    activity text NOT NULL,
    item text NOT NULL DEFAULT '',
    request_id uuid,
    workload text,
    result text NOT NULL,
    parameters jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT audit_records_result CHECK (result IN ('Succeeded', 'Denied', 'Failed')),
    CONSTRAINT audit_records_record_type CHECK (record_type IN (
        'CustomerLockbox', 'OperatorAction', 'TenantSettings', 'RoleManagement', 'OperatorManagement')),
    CONSTRAINT audit_records_parameters_object CHECK (jsonb_typeof(parameters) = 'object'),
    CONSTRAINT audit_records_activity_nonempty CHECK (activity <> ''),
    CONSTRAINT audit_records_operator_has_request CHECK (
        record_type <> 'OperatorAction' OR result <> 'Succeeded' OR request_id IS NOT NULL)
);

CREATE INDEX audit_records_tenant_time ON lockbox.audit_records (tenant_id, occurred_at);
CREATE INDEX audit_records_request ON lockbox.audit_records (request_id) WHERE request_id IS NOT NULL;

CREATE FUNCTION lockbox.refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('lockbox.migrating', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit records are append-only: % is refused', TG_OP
        USING ERRCODE = '42501', HINT = 'audit records can only be inserted';
END $$;

CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON lockbox.audit_records
    FOR EACH ROW EXECUTE FUNCTION lockbox.refuse_audit_change();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON lockbox.audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION lockbox.refuse_audit_change();

-- MARK: Notification outbox

CREATE TABLE lockbox.notifications (
    notification_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES lockbox.tenants,
    request_id uuid NOT NULL REFERENCES lockbox.requests,
    recipient text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL,
    sent_at timestamptz,
    CONSTRAINT notifications_one_per_recipient UNIQUE (request_id, recipient),
    CONSTRAINT notifications_no_links CHECK (
        subject || ' ' || body !~* '[a-z][a-z0-9+.-]*://|www\.|mailto:|href\s*=')
);

CREATE INDEX notifications_unsent ON lockbox.notifications (notification_id) WHERE sent_at IS NULL;

-- MARK: Authorization of operator content operations
--
-- A connector's every content operation is checked against the operator's
-- grant and recorded in the audit log by ONE statement: the check and the
-- insert cannot be separated, and a batch of concurrent attempts (group
-- commit) costs one statement and one commit. `denial` carries a refusal
-- decided before the database (an operation outside the connector's
-- catalogue, bad arguments): it is recorded as Denied. A NULL `now` means the
-- broker's clock could not be read: refused, stamped with the server's clock.

-- Why an attempt found no grant, explained from the operator's most relevant
-- request for that tenant and workload (an approved one first, then the most
-- recently changed).
CREATE FUNCTION lockbox.refusal(
    p_operator text, p_tenant_id uuid, p_tenant text, p_workload text, p_resource text, p_now timestamptz
) RETURNS TABLE (request_id uuid, reason text)
LANGUAGE sql STABLE AS $$
    SELECT r.request_id,
        CASE
            WHEN r.request_id IS NULL THEN
                format('no access request of operator %s for %s in tenant %s', p_operator, p_workload, p_tenant)
            WHEN r.status = 'Approved' AND p_now >= r.access_ends_at THEN
                format('the access window of request %s ended at %s', r.request_id,
                       to_char(r.access_ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
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

-- Checks and records a batch of attempts; one result row per attempt, by
-- position (`ord`, from 1). The audit ids are drawn before the insert so that
-- each caller gets exactly the record written for it. (PL/pgSQL so that the
-- statement's generic plan is cached per connection.)
CREATE FUNCTION lockbox.authorize_batch(
    p_operators text[],
    p_tenants text[],
    p_workloads text[],
    p_operations text[],
    p_resources text[],
    p_client_ips inet[],
    p_arguments jsonb[],
    p_now timestamptz[],
    p_denials text[]
) RETURNS TABLE (ord bigint, allowed boolean, audit_id bigint, request_id uuid, reason text,
                 access_ends_at timestamptz)
LANGUAGE plpgsql
-- A custom plan per call would cost more than the work itself.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT i.ord, i.operator, i.tenant, i.workload, i.operation, i.resource, i.client_ip,
            coalesce(i.arguments, '{}'::jsonb) AS arguments,
            coalesce(i.now, clock_timestamp()) AS now,
            CASE WHEN i.now IS NULL THEN coalesce(i.denial, 'the broker clock is unavailable')
                 ELSE i.denial END AS denial
        FROM unnest(p_operators, p_tenants, p_workloads, p_operations, p_resources, p_client_ips, p_arguments,
                    p_now, p_denials)
            WITH ORDINALITY AS i(operator, tenant, workload, operation, resource, client_ip, arguments, now,
                                 denial, ord)
    ),
    checked AS MATERIALIZED (
        SELECT i.*, t.tenant_id, g.request_id AS grant_id, g.access_ends_at AS grant_ends
        FROM input i
        LEFT JOIN lockbox.tenants t ON t.name = i.tenant
        LEFT JOIN LATERAL (
            SELECT r.request_id, r.access_ends_at FROM lockbox.requests r
            WHERE i.denial IS NULL AND r.requester = i.operator AND r.tenant_id = t.tenant_id
              AND r.workload = i.workload AND r.status = 'Approved'
              AND r.access_starts_at <= i.now AND i.now < r.access_ends_at
              AND (r.resource IS NULL OR i.resource = r.resource OR starts_with(i.resource, r.resource || '/'))
            ORDER BY r.access_ends_at DESC
            LIMIT 1
        ) g ON true
    ),
    -- Explained only for the attempts that found no grant (the filter on c is
    -- applied before the lateral call, so allowed attempts cost nothing here).
    refused AS MATERIALIZED (
        SELECT c.ord, f.request_id, f.reason
        FROM checked c
        CROSS JOIN LATERAL lockbox.refusal(c.operator, c.tenant_id, c.tenant, c.workload, c.resource, c.now) f
        WHERE c.grant_id IS NULL AND c.tenant_id IS NOT NULL
    ),
    decided AS MATERIALIZED (
        SELECT c.*, nextval('lockbox.audit_records_id_seq') AS audit_id,
            coalesce(c.grant_id, x.request_id) AS request_id,
            CASE WHEN c.grant_id IS NOT NULL THEN NULL
                 WHEN c.denial IS NOT NULL THEN c.denial
                 WHEN c.tenant_id IS NULL THEN format('unknown tenant %s', c.tenant)
                 ELSE x.reason END AS reason
        FROM checked c
        LEFT JOIN refused x ON x.ord = c.ord
    ),
    recorded AS (
        INSERT INTO lockbox.audit_records (id, occurred_at, tenant_id, record_type, user_id, actor, client_ip,
                                           activity, item, request_id, workload, result, parameters)
        OVERRIDING SYSTEM VALUE
        SELECT d.audit_id, d.now, d.tenant_id, 'OperatorAction', 'Microsoft Operator', d.operator, d.client_ip,
            d.operation, '', d.request_id, d.workload,
            CASE WHEN d.reason IS NULL THEN 'Succeeded' ELSE 'Denied' END,
            jsonb_build_object('operation', d.operation, 'resource', d.resource, 'operator', d.operator,
                               'arguments', d.arguments)
                || CASE WHEN d.reason IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('reason', d.reason) END
        FROM decided d
        ORDER BY d.ord
    )
    SELECT d.ord, d.reason IS NULL, d.audit_id, d.request_id, d.reason,
        CASE WHEN d.reason IS NULL THEN d.grant_ends END
    FROM decided d
    ORDER BY d.ord;
END $$;

-- One attempt (for SQL users and tools): the batch of one.
CREATE FUNCTION lockbox.authorize(
    p_operator text,
    p_tenant text,
    p_workload text,
    p_operation text,
    p_resource text,
    p_client_ip inet,
    p_arguments jsonb,
    p_now timestamptz,
    p_denial text
) RETURNS TABLE (allowed boolean, audit_id bigint, request_id uuid, reason text, access_ends_at timestamptz)
LANGUAGE sql AS $$
    SELECT b.allowed, b.audit_id, b.request_id, b.reason, b.access_ends_at
    FROM lockbox.authorize_batch(ARRAY[p_operator], ARRAY[p_tenant], ARRAY[p_workload], ARRAY[p_operation],
                                 ARRAY[p_resource], ARRAY[p_client_ip], ARRAY[p_arguments], ARRAY[p_now],
                                 ARRAY[p_denial]) b
$$;
