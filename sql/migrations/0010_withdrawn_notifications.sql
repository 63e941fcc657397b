-- A notification whose request no longer awaits the customer is withdrawn,
-- not sent.
--
-- Why: a notification is queued when the provider's reviewer approves (the
-- request becomes PendingCustomer) and sent later, by `deliver`. If the
-- request was cancelled, decided by another approver, or its customer deadline
-- passed in between, the customer was still told that it "awaits your
-- decision". Delivery now checks the request first and, when it is no longer
-- pending, marks the notification withdrawn, with the reason, instead of
-- sending it. A notification is either sent or withdrawn, never both, and
-- neither is undone: it stays as the record of what was (not) said.
ALTER TABLE lockbox.notifications
    ADD COLUMN withdrawn_at timestamptz,
    ADD COLUMN withdrawn_reason text,
    ADD CONSTRAINT notifications_sent_or_withdrawn CHECK (
        (withdrawn_at IS NULL AND withdrawn_reason IS NULL)
        OR (withdrawn_at IS NOT NULL AND withdrawn_reason <> '' AND sent_at IS NULL));

-- The delivery queue: neither sent nor withdrawn.
DROP INDEX lockbox.notifications_unsent;
CREATE INDEX notifications_unsent ON lockbox.notifications (notification_id)
    WHERE sent_at IS NULL AND withdrawn_at IS NULL;
