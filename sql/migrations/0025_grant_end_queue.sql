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
-- change alike; lockbox.authorize_batch, the function SQL tools call, takes it
-- the same way from migration 0028, which restates it whole (with a change of
-- its own).

CREATE FUNCTION lockbox.grant_lock_key(p_request_id uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT uuid_hash_extended(p_request_id, 1129270357)
$$;

REVOKE EXECUTE ON FUNCTION lockbox.grant_lock_key(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lockbox.grant_lock_key(uuid) TO lockbox_app;
