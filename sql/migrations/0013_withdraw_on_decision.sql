-- A request that stops awaiting its customer withdraws its queued
-- notifications in the same transaction.
--
-- Why: 0010 has delivery check the request before sending, without locking it.
-- A decision that committed while a notification was being sent did not stop
-- that one. Now the transition itself withdraws every queued notification of
-- the request. This covers Approve, Deny, Cancel and the sweeper's expiry: a
-- request can only leave PendingCustomer through those. A notification that a
-- deliverer holds (locked FOR UPDATE while it sends) is waited for. Once sent
-- it is left as sent, so each notification is either sent before the
-- decision or withdrawn by it. Notifications already queued for requests that
-- left PendingCustomer before this migration are withdrawn here, the same way,
-- so delivery only has the deadline left to check: the requests that expire by
-- time without a sweep.
--
-- The time recorded is the transition's own: ended_at for a cancel or an
-- expiry, decided_at for a customer decision, both set with the broker's clock.
CREATE FUNCTION lockbox.withdraw_notifications() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lockbox.notifications
    SET withdrawn_at = coalesce(NEW.ended_at, NEW.decided_at, now()),
        withdrawn_reason = format('the request is %s', NEW.status)
    WHERE request_id = NEW.request_id AND sent_at IS NULL AND withdrawn_at IS NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER requests_withdraw_notifications AFTER UPDATE OF status ON lockbox.requests
    FOR EACH ROW WHEN (OLD.status = 'PendingCustomer' AND NEW.status <> 'PendingCustomer')
    EXECUTE FUNCTION lockbox.withdraw_notifications();

-- As 0003 requires of a new function: not PUBLIC's. Firing a trigger does not
-- check EXECUTE, so no role needs it.
REVOKE EXECUTE ON FUNCTION lockbox.withdraw_notifications() FROM PUBLIC;

-- Queued before this migration, for requests no longer pending.
UPDATE lockbox.notifications n
SET withdrawn_at = coalesce(r.ended_at, r.decided_at, now()),
    withdrawn_reason = format('the request is %s', r.status)
FROM lockbox.requests r
WHERE r.request_id = n.request_id AND r.status <> 'PendingCustomer'
  AND n.sent_at IS NULL AND n.withdrawn_at IS NULL;
