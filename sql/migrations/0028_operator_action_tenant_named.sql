-- An operator action's record names the tenant as the attempt gave it, in its
-- parameters (`tenant`).
--
-- Why: the record's tenant column holds the tenant found (ignoring case), and
-- nothing for a name no tenant has; that name was kept only in the reason
-- "unknown tenant northwind". An attempt refused for another reason first (an
-- operation outside the connector's catalogue, arguments it does not take, an
-- invalid client address, the broker's clock) was recorded with that reason
-- and no tenant at all: `lockbox invoke --tenant northwind --operation
-- Remove-Mailbox` left a record saying which operation was tried, by whom, on
-- which resource, but not on which tenant. Now every operator action's
-- parameters carry `tenant`, the name as given (`northwind`, `CONTOSO`), beside
-- `operation`, `resource`, `operator` and `arguments`.
--
-- sql/statements/authorize_one.sql and authorize_batch.sql, which the broker
-- prepares, change alike; this restates lockbox.authorize_batch, the function
-- SQL tools call (from 0021, whole, as a function must be; lockbox.authorize
-- calls it), with the grant's queue lock 0025 added to the statements: the
-- attempt takes it shared on the grant it finds. Its privileges are unchanged
-- (CREATE OR REPLACE keeps them).

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
              AND pg_advisory_xact_lock_shared(lockbox.grant_lock_key(r.request_id)) IS NOT NULL
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
                               'tenant', d.tenant, 'arguments', d.arguments)
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
