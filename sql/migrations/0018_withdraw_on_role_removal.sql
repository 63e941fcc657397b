-- Removing a customer's last role in a tenant withdraws the notifications still
-- queued for that person there.
--
-- Why: notifications are queued, one per role holder, when a request reaches
-- PendingCustomer, and sent by a later `lockbox notifications deliver`.
-- Someone whose role was removed in between still received the request's
-- ticket, reason and scope, although they may no longer see or decide it.
--
-- How: as 0013 does for decisions, in the transaction that removes the role. A
-- notification being sent at that moment is locked by its deliverer: the
-- removal waits for it and leaves it sent. Each notification is therefore
-- either sent before the removal or withdrawn by it. Someone who keeps another
-- role in the tenant keeps their notifications. The migration also withdraws
-- those already queued for people who hold no role in the tenant any more.

CREATE FUNCTION lockbox.withdraw_notifications_of_removed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM lockbox.tenant_roles x WHERE x.tenant_id = OLD.tenant_id AND x.upn = OLD.upn
    ) THEN
        UPDATE lockbox.notifications
        SET withdrawn_at = now(),
            withdrawn_reason = format('%s no longer holds a role in the tenant', OLD.upn)
        WHERE tenant_id = OLD.tenant_id AND recipient = OLD.upn AND sent_at IS NULL AND withdrawn_at IS NULL;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tenant_roles_withdraw_notifications AFTER DELETE ON lockbox.tenant_roles
    FOR EACH ROW EXECUTE FUNCTION lockbox.withdraw_notifications_of_removed();

REVOKE EXECUTE ON FUNCTION lockbox.withdraw_notifications_of_removed() FROM PUBLIC;

UPDATE lockbox.notifications n
SET withdrawn_at = now(),
    withdrawn_reason = format('%s no longer holds a role in the tenant', n.recipient)
WHERE n.sent_at IS NULL AND n.withdrawn_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM lockbox.tenant_roles x WHERE x.tenant_id = n.tenant_id AND x.upn = n.recipient);
