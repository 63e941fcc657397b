-- The explanation of a refused operator action, as a PL/pgSQL function.
--
-- Why: sql/statements/authorize_one.sql and authorize_batch.sql asked
-- lockbox.refusal (a SQL function, which the planner inlines) for the request
-- and the reason of a refused attempt, in two scalar subqueries. Inlined, each
-- is a subplan (nested loop, limit, sort, index scan) that the executor sets up
-- again on every execution of the statement, although it runs only for refused
-- attempts. Server CPU per transaction during `lockbox bench` (all server
-- processes): 340 us for a lone call with the subplans, 274 us through this
-- function (the raw reference: 266-272 us); a batch of about 7.5 calls, 545 us
-- before, 477 us after. (pg_stat_statements does not count the executor's
-- start-up, so it showed no difference.) A PL/pgSQL function's plan is
-- prepared once per session and runs only when called, so the statement's plan
-- carries no subplan for it. The rule itself stays in lockbox.refusal.
CREATE FUNCTION lockbox.refusal_of(
    p_operator text, p_tenant_id uuid, p_tenant text, p_workload text, p_resource text, p_now timestamptz,
    OUT request_id uuid, OUT reason text
) LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT f.request_id, f.reason INTO request_id, reason
    FROM lockbox.refusal(p_operator, p_tenant_id, p_tenant, p_workload, p_resource, p_now) f;
END $$;

-- As 0003 requires of a new function: not PUBLIC's, lockbox_app's.
REVOKE EXECUTE ON FUNCTION lockbox.refusal_of(text, uuid, text, text, text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lockbox.refusal_of(text, uuid, text, text, text, timestamptz) TO lockbox_app;
