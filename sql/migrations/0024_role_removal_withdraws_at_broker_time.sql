-- Removing someone's last role withdraws their queued notifications at the
-- time the broker records the removal, not at the database server's.
--
-- Why: 0018's trigger (restated by 0021) set withdrawn_at = now(): the server's
-- clock, and the start of the removal's transaction. Every other time of a
-- notification is the broker's (created_at by the review, sent_at and a
-- deadline's withdrawal by delivery, 0013's withdrawal by the decision, cancel
-- or sweep), and the removal's own audit record (Remove-RoleGroupMember) is
-- dated with the broker's clock once it holds the tenant. So a withdrawal was
-- dated apart from the removal that made it, and before the notification
-- itself when the removal had waited for the internal review that queued it
-- (the review holds the tenant FOR SHARE): "withdrawn" before "created".
--
-- Now the broker states the time of the change it is making in its
-- transaction, as the setting lockbox.change_time (set_config(..., true), so
-- it ends with the transaction), and the trigger withdraws at that time. A
-- removal made without it (an administrator's SQL) is dated now(), as before.
-- The rest is 0021's: the person's queued notifications are locked in
-- notification order before they are withdrawn.
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
        SET withdrawn_at = coalesce(nullif(current_setting('lockbox.change_time', true), '')::timestamptz, now()),
            withdrawn_reason = format('%s no longer holds a role in the tenant', OLD.upn)
        WHERE tenant_id = OLD.tenant_id AND recipient = OLD.upn AND sent_at IS NULL AND withdrawn_at IS NULL;
    END IF;
    RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION lockbox.withdraw_notifications_of_removed() FROM PUBLIC;
