-- Checks and records a batch of operator content operations: ONE statement,
-- prepared once per connection by the broker's group commit (Authorizer), so
-- the grant check and the audit insert cannot be separated and a batch commits
-- once. One result row per attempt, by its position `ord` (from 1) in the
-- arrays. Parameters, one element per attempt:
--   $1 operator alias, $2 tenant name, $3 workload, $4 operation, $5 resource,
--   $6 client IP (inet), $7 arguments (jsonb object), $8 the broker's time
--   (timestamptz; NULL: the broker clock could not be read, so refused and
--   stamped with the server's clock), $9 a refusal decided before the database
--   (an operation outside the connector's catalogue, bad arguments), recorded
--   as Denied.
-- An attempt is allowed only by an Approved request of that operator for that
-- tenant and workload whose window contains the time and whose scope (if any)
-- contains the resource; otherwise it is refused with the reason from
-- lockbox.refusal, through lockbox.refusal_of (PL/pgSQL, called only for
-- refused attempts, so that the plan of this statement carries no subplan for
-- it: see migration 0006). The audit ids
-- are drawn before the insert, so each caller gets exactly its own record.
-- The tenant is found ignoring case (names are unique ignoring case: 0008), so
-- that an attempt naming `CONTOSO` is recorded under contoso, where its
-- auditors see it; only the exact name is granted (migration 0020). The
-- parameters name the tenant as the attempt gave it (`tenant`, migration 0028).
-- The grant's request row is locked FOR KEY SHARE until the batch commits: a
-- revoke or cancel (which lock it FOR UPDATE first) waits for a batch that
-- found the grant, and a batch that finds it while one is in flight waits for
-- it and reads the row as it committed, so no attempt is allowed by a grant
-- that was revoked or cancelled before the attempt committed (migration 0021).
-- Sweeps do not wait for it (they lock no key), nor do customer decisions
-- (they lock a pending request, which no operation locks).
-- Before the row, the grant's lock in the lock manager is taken shared, so that
-- an attempt that comes while a revoke or cancel waits for the attempts in
-- flight queues behind it instead of overtaking it (migration 0025).
-- The same rule as lockbox.authorize_batch (the function SQL tools call), as a
-- plain statement: a PL/pgSQL call would cost more than a one-row batch itself.
WITH decided AS (
    SELECT c.ord, c.operator, c.tenant, c.workload, c.operation, c.resource, c.client_ip, c.arguments, c.now,
        c.tenant_id, c.grant_ends,
        coalesce(c.grant_id, (c.refusal).request_id) AS request_id,
        CASE WHEN c.grant_id IS NOT NULL THEN NULL
             WHEN c.denial IS NOT NULL THEN c.denial
             WHEN c.tenant_id IS NULL THEN format('unknown tenant %s', c.tenant)
             WHEN c.tenant_name <> c.tenant
                 THEN format('unknown tenant %s (tenant names are exact: did you mean %s?)', c.tenant, c.tenant_name)
             ELSE (c.refusal).reason
        END AS reason,
        nextval('lockbox.audit_records_id_seq') AS audit_id
    FROM (
        -- The refusal is explained by ONE call, for attempts that found no grant, so
        -- that its request id and its reason come from one reading of the database
        -- (the function is VOLATILE since 0021: two calls could each see another
        -- commit). The volatile call also keeps this subquery from being merged into
        -- the one above, which would copy the call into both uses.
        SELECT i.*, t.tenant_id, t.name AS tenant_name, g.request_id AS grant_id, g.access_ends_at AS grant_ends,
            CASE WHEN g.request_id IS NULL AND t.name = i.tenant
                 THEN lockbox.refusal_of(i.operator, t.tenant_id, i.tenant, i.workload, i.resource, i.now)
            END AS refusal
        FROM (
            SELECT u.ord, u.operator, u.tenant, u.workload, u.operation, u.resource, u.client_ip,
                coalesce(u.arguments, '{}') AS arguments,
                coalesce(u.now, clock_timestamp()) AS now,
                CASE WHEN u.now IS NULL THEN coalesce(u.denial, 'the broker clock is unavailable')
                     ELSE u.denial END AS denial
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::inet[], $7::jsonb[],
                        $8::timestamptz[], $9::text[])
                WITH ORDINALITY AS u(operator, tenant, workload, operation, resource, client_ip, arguments, now,
                                     denial, ord)
        ) i
        -- The tenant by its exact name (a hash join on the name itself), and only for an
        -- attempt that names none, ignoring case: lower() over every tenant's name for
        -- every batch cost the server about 25 us a batch (pgbench, 8 calls: 311 against
        -- 288 us of CPU). The LIMIT keeps the planner from merging the second lookup into
        -- a join that would run it for every attempt.
        LEFT JOIN lockbox.tenants e ON e.name = i.tenant
        LEFT JOIN LATERAL (
            SELECT f.tenant_id, f.name FROM lockbox.tenants f
            WHERE e.tenant_id IS NULL AND lower(f.name) = lower(i.tenant)
            LIMIT 1
        ) f ON true
        CROSS JOIN LATERAL (SELECT coalesce(e.tenant_id, f.tenant_id) AS tenant_id, coalesce(e.name, f.name) AS name) t
        LEFT JOIN LATERAL (
            SELECT r.request_id, r.access_ends_at FROM lockbox.requests r
            WHERE i.denial IS NULL AND t.name = i.tenant AND r.requester = i.operator AND r.tenant_id = t.tenant_id
              AND r.workload = i.workload AND r.status = 'Approved'
              AND r.access_starts_at <= i.now AND i.now < r.access_ends_at
              AND (r.resource IS NULL OR i.resource = r.resource OR starts_with(i.resource, r.resource || '/'))
              -- Queues behind a revoke or cancel of the grant that waits for the operations
              -- in flight, instead of overtaking it (migration 0025).
              AND pg_advisory_xact_lock_shared(lockbox.grant_lock_key(r.request_id)) IS NOT NULL
            ORDER BY r.access_ends_at DESC
            LIMIT 1
            -- Waits for a revoke or cancel in flight (they lock the row FOR UPDATE) and
            -- then reads the row as it committed: see migration 0021.
            FOR KEY SHARE OF r
        ) g ON true
    ) c
),
recorded AS (
    INSERT INTO lockbox.audit_records (id, occurred_at, tenant_id, record_type, user_id, actor, client_ip,
                                       activity, item, request_id, workload, result, parameters)
    OVERRIDING SYSTEM VALUE
    SELECT d.audit_id, d.now, d.tenant_id, 'OperatorAction', 'Microsoft Operator', d.operator, d.client_ip,
        d.operation, '', d.request_id, d.workload,
        CASE WHEN d.reason IS NULL THEN 'Succeeded' ELSE 'Denied' END,
        CASE WHEN d.reason IS NULL
             THEN jsonb_build_object('operation', d.operation, 'resource', d.resource, 'operator', d.operator,
                                     'tenant', d.tenant, 'arguments', d.arguments)
             ELSE jsonb_build_object('operation', d.operation, 'resource', d.resource, 'operator', d.operator,
                                     'tenant', d.tenant, 'arguments', d.arguments, 'reason', d.reason)
        END
    FROM decided d
)
SELECT d.ord, d.reason IS NULL AS allowed, d.audit_id, d.request_id, d.reason,
    CASE WHEN d.reason IS NULL THEN d.grant_ends END AS access_ends_at
FROM decided d
