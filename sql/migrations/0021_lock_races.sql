-- Two lock-order races: a grant ending against the operations it allows, and
-- notifications withdrawn by a sweep and by a role removal at once.

-- MARK: Grants, locked by the operations they allow
--
-- Why: the authorization statements read the operator's grant without locking
-- it. A statement that began before a revoke (or the requester's cancel)
-- committed still saw the request Approved, allowed the operation and
-- committed after the revoke: the connector returned content after the
-- customer had revoked access, and the audit log showed an allowed action
-- stamped after the grant's end (access_outside_grant listed it).
--
-- Now the grant's request row is locked FOR KEY SHARE by the statement that
-- allows an operation, until it commits. Revoke and cancel lock the request
-- FOR UPDATE before changing it (Broker.lockRequest), which conflicts: a revoke
-- waits for operations already allowed to commit, and an operation that finds
-- the grant while a revoke holds it waits for the revoke and then reads the
-- row as the revoke left it (PostgreSQL re-checks a locked row that changed),
-- so it is refused ("request ... is Revoked, not approved"). KEY SHARE does not
-- conflict with KEY SHARE, nor with the sweeper's FOR NO KEY UPDATE and its
-- update (which changes no key), so operations never wait for each other and
-- a sweep never waits for them; customer decisions lock pending requests,
-- which no operation locks (one on an approved request is refused, after a
-- short wait for the operations in flight). sql/statements/authorize_one.sql and
-- authorize_batch.sql, which the broker prepares, change alike; this restates
-- lockbox.authorize_batch, the function SQL tools call (from 0020, whole, as a
-- function must be; lockbox.authorize calls it).
--
-- The refusal then has to be explained from the row as the revoke left it, not
-- as the statement first saw it (still Approved, which read as "resource ...
-- is outside the scope"): lockbox.refusal_of becomes VOLATILE, so that its
-- query reads the database as it is when the attempt is refused, and the
-- function explains refusals through it as the statements do. It runs only
-- for refused attempts.
--
-- Reading the database afresh, two calls for one attempt (one for the
-- request id, one for the reason, as the statements made) could each see a
-- different commit, and record a request id that the reason does not speak
-- of. The statements now call it once per refused attempt and take both from
-- that one answer, which a subquery can hand on only as a named type: it
-- returns lockbox.refusal_explanation instead of OUT parameters (an anonymous
-- record), so it is created again.
CREATE TYPE lockbox.refusal_explanation AS (request_id uuid, reason text);

DROP FUNCTION lockbox.refusal_of(text, uuid, text, text, text, timestamptz);

CREATE FUNCTION lockbox.refusal_of(
    p_operator text, p_tenant_id uuid, p_tenant text, p_workload text, p_resource text, p_now timestamptz
) RETURNS lockbox.refusal_explanation LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    explained lockbox.refusal_explanation;
BEGIN
    SELECT f.request_id, f.reason INTO explained
    FROM lockbox.refusal(p_operator, p_tenant_id, p_tenant, p_workload, p_resource, p_now) f;
    RETURN explained;
END $$;

-- As 0006 had it: not PUBLIC's, lockbox_app's.
REVOKE EXECUTE ON FUNCTION lockbox.refusal_of(text, uuid, text, text, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lockbox.refusal_of(text, uuid, text, text, text, timestamptz) TO lockbox_app;

-- Reading the database as it is when the attempt is refused, the explanation
-- can also see a request approved after the statement began (while it waited
-- for a revoke, say), which the grant check, reading the database as it was,
-- did not. lockbox.refusal took any approved request inside its window as one
-- whose scope missed the resource ("resource ... is outside the scope  of
-- request ...", for a request covering the whole workload). It now checks the
-- scope, and says of an approved request that does cover the attempt that it
-- was approved while the attempt was being checked. The rest is 0012's
-- (restated whole, as a function must be).
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

CREATE OR REPLACE FUNCTION lockbox.authorize_batch(
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
        SELECT i.*, t.tenant_id, t.name AS tenant_name, g.request_id AS grant_id, g.access_ends_at AS grant_ends
        FROM input i
        LEFT JOIN lockbox.tenants t ON lower(t.name) = lower(i.tenant)
        LEFT JOIN LATERAL (
            SELECT r.request_id, r.access_ends_at FROM lockbox.requests r
            WHERE i.denial IS NULL AND t.name = i.tenant AND r.requester = i.operator AND r.tenant_id = t.tenant_id
              AND r.workload = i.workload AND r.status = 'Approved'
              AND r.access_starts_at <= i.now AND i.now < r.access_ends_at
              AND (r.resource IS NULL OR i.resource = r.resource OR starts_with(i.resource, r.resource || '/'))
            ORDER BY r.access_ends_at DESC
            LIMIT 1
            FOR KEY SHARE OF r
        ) g ON true
    ),
    -- Explained only for the attempts that found no grant (the filter on c is
    -- applied before the lateral call, so allowed attempts cost nothing here).
    refused AS MATERIALIZED (
        SELECT c.ord, f.request_id, f.reason
        FROM checked c
        CROSS JOIN LATERAL lockbox.refusal_of(c.operator, c.tenant_id, c.tenant, c.workload, c.resource, c.now) f
        WHERE c.grant_id IS NULL AND c.tenant_name = c.tenant
    ),
    decided AS MATERIALIZED (
        SELECT c.*, nextval('lockbox.audit_records_id_seq') AS audit_id,
            coalesce(c.grant_id, x.request_id) AS request_id,
            CASE WHEN c.grant_id IS NOT NULL THEN NULL
                 WHEN c.denial IS NOT NULL THEN c.denial
                 WHEN c.tenant_id IS NULL THEN format('unknown tenant %s', c.tenant)
                 WHEN c.tenant_name <> c.tenant
                     THEN format('unknown tenant %s (tenant names are exact: did you mean %s?)', c.tenant, c.tenant_name)
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

REVOKE EXECUTE ON FUNCTION lockbox.authorize_batch(text[], text[], text[], text[], text[], inet[], jsonb[],
    timestamptz[], text[]) FROM PUBLIC;

-- MARK: Notifications, withdrawn in one lock order
--
-- Why: a sweep that expires several requests withdraws their queued
-- notifications request by request (0013's row trigger), while removing
-- someone's last role withdraws that person's notifications across requests
-- (0018's trigger), each in whatever order its scan met the rows. When the two
-- met the same notifications in opposite orders (requests reviewed at the same
-- moment, rows a vacuum moved), each waited for a row the other held: one of
-- them was aborted as a deadlock and the administrator's removal, or the
-- sweep, failed.
--
-- Now both take the rows in one order: notification_id. A removal locks the
-- person's queued notifications in that order before withdrawing them; the
-- sweep (Broker.sweep) locks the requests it expires, then all their queued
-- notifications in that order, before expiring them. A decision locks its one
-- request, then that request's notifications: it shares at most one
-- notification with a removal, and locks requests before notifications as the
-- sweep does.
CREATE OR REPLACE FUNCTION lockbox.withdraw_notifications_of_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM lockbox.tenant_roles x WHERE x.tenant_id = OLD.tenant_id AND x.upn = OLD.upn
    ) THEN
        PERFORM 1 FROM lockbox.notifications
        WHERE tenant_id = OLD.tenant_id AND recipient = OLD.upn AND sent_at IS NULL AND withdrawn_at IS NULL
        ORDER BY notification_id
        FOR UPDATE;
        UPDATE lockbox.notifications
        SET withdrawn_at = now(),
            withdrawn_reason = format('%s no longer holds a role in the tenant', OLD.upn)
        WHERE tenant_id = OLD.tenant_id AND recipient = OLD.upn AND sent_at IS NULL AND withdrawn_at IS NULL;
    END IF;
    RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION lockbox.withdraw_notifications_of_removed() FROM PUBLIC;
