-- Notifications carry no link of any kind: the rule now also refuses what mail
-- clients turn into links without a `scheme://`.
--
-- Why: 0001's notifications_no_links refused `scheme://`, `www.`, `mailto:` and
-- `href=`, and the broker defanged only those. A request's reason or ticket
-- could still bring into the customer's notification:
--   a bare domain, `contoso-support.com/reset` (mail clients link it);
--   a network path, `\\evil\share`;
--   a scheme without slashes, `javascript:alert(1)`, `data:text/html,...`.
-- The rule keeps 0001's patterns and adds, case-insensitively:
--   `\m[a-z][a-z0-9+.-]*:[^[:space:]]`  a word that starts with a letter, then
--       a colon with no space after it (a URI scheme); "Tenant: contoso" and
--       the deadline's "T14:19" are not, the first for the space, the second
--       because "T14" does not start a word;
--   `[a-z0-9-]\.[a-z][a-z]`  a dot inside a host name, before two letters;
--   `\\\\[^[:space:]]`  two backslashes, a UNC path.
-- NotificationText.defang (Sources/LockboxCore/Broker+Audit.swift) breaks
-- every one of these in the fields people write, and the tests check its
-- output against this constraint.
--
-- Notifications queued before this migration were checked by the old rule
-- only. They are not changed (a notification is a record of what was sent).
-- The constraint is validated when they all pass, and otherwise holds for new
-- rows only.
ALTER TABLE lockbox.notifications DROP CONSTRAINT notifications_no_links;
ALTER TABLE lockbox.notifications ADD CONSTRAINT notifications_no_links CHECK (
    subject || ' ' || body
        !~* '[a-z][a-z0-9+.-]*://|www\.|mailto:|href\s*=|\m[a-z][a-z0-9+.-]*:[^[:space:]]|[a-z0-9-]\.[a-z][a-z]|\\\\[^[:space:]]'
) NOT VALID;

DO $$
BEGIN
    ALTER TABLE lockbox.notifications VALIDATE CONSTRAINT notifications_no_links;
EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'notifications queued before migration 0009 carry text the new link rule refuses; they stay as they were, and the rule holds for every new notification';
END $$;
