-- Checks and records ONE operator content operation: the same rule and the
-- same audit record as authorize_batch.sql, for the lone call the broker's
-- group commit sends when nobody else is waiting (one statement, one commit).
-- With scalar parameters and no arrays to unnest, it costs about what a plain
-- check-and-insert does. Parameters: $1 operator alias, $2 tenant name,
-- $3 workload, $4 operation, $5 resource, $6 client IP (inet), $7 arguments
-- (jsonb object), $8 the broker's time (timestamptz; NULL: the broker clock
-- could not be read, so refused and stamped with the server's clock), $9 a
-- refusal decided before the database. Returns one row shaped like the batch
-- statement's, with `ord` 1. A refusal is explained by lockbox.refusal_of, as
-- in the batch statement. The parameters name the tenant as the attempt gave
-- it (`tenant`): the record's tenant column is empty for a tenant that does not
-- exist, and that name was otherwise lost when another refusal was recorded.
-- The tenant is found ignoring case (names are unique ignoring case: 0008), so
-- that an attempt naming `CONTOSO` is recorded under contoso, where its
-- auditors see it; only the exact name is granted (migration 0020).
WITH decided AS (
    SELECT c.now, c.tenant_id, c.grant_ends,
        coalesce(c.grant_id, (c.refusal).request_id) AS request_id,
        CASE WHEN c.grant_id IS NOT NULL THEN NULL
             WHEN c.denial IS NOT NULL THEN c.denial
             WHEN c.tenant_id IS NULL THEN format('unknown tenant %s', $2::text)
             WHEN c.tenant_name <> $2::text
                 THEN format('unknown tenant %s (tenant names are exact: did you mean %s?)', $2::text, c.tenant_name)
             ELSE (c.refusal).reason
        END AS reason
    FROM (
        -- The refusal is explained by ONE call, for attempts that found no grant, so
        -- that its request id and its reason come from one reading of the database
        -- (the function is VOLATILE since 0021: two calls could each see another
        -- commit). The volatile call also keeps this subquery from being merged into
        -- the one above, which would copy the call into both uses.
        SELECT i.now, i.denial, t.tenant_id, t.name AS tenant_name, g.request_id AS grant_id,
            g.access_ends_at AS grant_ends,
            CASE WHEN g.request_id IS NULL AND t.name = $2::text
                 THEN lockbox.refusal_of($1, t.tenant_id, $2, $3, $5, i.now) END AS refusal
        FROM (
            SELECT coalesce($8::timestamptz, clock_timestamp()) AS now,
                CASE WHEN $8::timestamptz IS NULL THEN coalesce($9::text, 'the broker clock is unavailable')
                     ELSE $9::text END AS denial
        ) i
        -- The tenant by its exact name, and only if none has it, ignoring case: the
        -- append stops at the first row. (A join on lower(name) scanned this small
        -- table computing lower() for every tenant: about 30 us of the server's CPU a
        -- call, pgbench, 200 against 170 us.)
        LEFT JOIN LATERAL (
            SELECT e.tenant_id, e.name FROM lockbox.tenants e WHERE e.name = $2::text
            UNION ALL
            SELECT f.tenant_id, f.name FROM lockbox.tenants f WHERE lower(f.name) = lower($2::text)
            LIMIT 1
        ) t ON true
        LEFT JOIN LATERAL (
            SELECT r.request_id, r.access_ends_at FROM lockbox.requests r
            WHERE i.denial IS NULL AND t.name = $2::text AND r.requester = $1::text AND r.tenant_id = t.tenant_id
              AND r.workload = $3::text AND r.status = 'Approved'
              AND r.access_starts_at <= i.now AND i.now < r.access_ends_at
              AND (r.resource IS NULL OR $5::text = r.resource OR starts_with($5::text, r.resource || '/'))
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
    INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, client_ip,
                                       activity, item, request_id, workload, result, parameters)
    SELECT d.now, d.tenant_id, 'OperatorAction', 'Microsoft Operator', $1::text, $6::inet,
        $4::text, '', d.request_id, $3::text,
        CASE WHEN d.reason IS NULL THEN 'Succeeded' ELSE 'Denied' END,
        CASE WHEN d.reason IS NULL
             THEN jsonb_build_object('operation', $4::text, 'resource', $5::text, 'operator', $1::text,
                                     'tenant', $2::text, 'arguments', coalesce($7::jsonb, '{}'))
             ELSE jsonb_build_object('operation', $4::text, 'resource', $5::text, 'operator', $1::text,
                                     'tenant', $2::text, 'arguments', coalesce($7::jsonb, '{}'), 'reason', d.reason)
        END
    FROM decided d
    RETURNING id
)
SELECT 1::bigint AS ord, d.reason IS NULL AS allowed, r.id AS audit_id, d.request_id, d.reason,
    CASE WHEN d.reason IS NULL THEN d.grant_ends END AS access_ends_at
FROM decided d CROSS JOIN recorded r
