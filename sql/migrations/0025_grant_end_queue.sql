-- An operation that comes while a revoke or cancel of its grant waits for the
-- operations in flight waits behind it, instead of overtaking it.
--
-- Why: since 0021 an operation locks its grant's request row FOR KEY SHARE until
-- it commits, and a revoke or cancel locks it FOR UPDATE, so that the two wait
-- for each other. But PostgreSQL grants a row lock that does not conflict with
-- the row's current holders at once, without looking at who waits: while a
-- revoke waited for the operations in flight, every new operation under the
-- grant took its KEY SHARE lock beside theirs and went through. An operator
-- running operations at once (two writers' batches, or one after another
-- overlapping) kept the row held without a gap: the customer's revoke, or the
-- requester's cancel, waited for as long as they kept it up, and its statement
-- timeout refused it with nothing done.
--
-- Now each grant has a lock in PostgreSQL's lock manager, which queues
-- requests in order: a request that conflicts with one already waiting waits
-- behind it. An operation takes it shared (pg_advisory_xact_lock_shared) on the
-- grant it finds, before it locks the row; a revoke or cancel takes it
-- exclusively (Broker.lockRequest) once it holds the request against other
-- changes (FOR NO KEY UPDATE, which operations do not conflict with), then locks
-- the row FOR UPDATE. So a revoke waits for the operations already in flight,
-- and the ones that come after it wait for it; once it has committed they find
-- the grant ended and are refused (the row changed under them: PostgreSQL reads
-- it again). A revoke still waiting for another change of the request (a sweep,
-- a decision) does not hold it yet, and operations run meanwhile.
--
-- The key is a 64-bit hash of the request id (lockbox.grant_lock_key). Two
-- grants with the same hash would only make an operation under one wait for a
-- revoke of the other. sql/statements/authorize_one.sql and authorize_batch.sql
-- change alike; this restates lockbox.authorize_batch, the function SQL tools
-- call (from 0021, whole, as a function must be).

CREATE FUNCTION lockbox.grant_lock_key(p_request_id uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT uuid_hash_extended(p_request_id, 1129270357)
$$;

REVOKE EXECUTE ON FUNCTION lockbox.grant_lock_key(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lockbox.grant_lock_key(uuid) TO lockbox_app;

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
