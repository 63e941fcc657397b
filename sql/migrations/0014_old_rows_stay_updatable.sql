-- Rows saved before migrations 0009 and 0011 stay updatable.
--
-- Why: 0009 (notifications carry no link) and 0011 (request scopes are paths)
-- added their rules as CHECK constraints, left NOT VALID where older rows broke
-- them. PostgreSQL checks a constraint on every UPDATE of a row, old or new, so
-- such an old row could no longer change at all:
--   * an old queued notification with a link could be neither sent nor
--     withdrawn: delivery stopped at it on every run, so no later notification
--     went out, and deciding its request failed (the trigger of 0013 withdraws
--     the request's queued notifications in the decision's transaction);
--   * an old request whose scope breaks the path rule (e.g. `alice@contoso.com/`)
--     could not be approved, cancelled, revoked, completed or expired, and the
--     sweep, which ends every due request of every tenant in one statement,
--     failed for all of them.
--
-- Now:
--   * Notifications: the old queued ones that carry a link are withdrawn, never
--     sent (sending a link is what the rule forbids), and the rule is put back
--     as a CHECK, through lockbox.carries_link, which states it once. Every row
--     that still breaks it is then sent or withdrawn, and nothing updates those.
--   * Requests: a scope never changes once the request exists (0001's lifecycle
--     trigger refuses it), so the path rule is checked where a scope is written
--     (an insert, or an update of that column) by a trigger, instead of by a
--     CHECK that runs again at every change of status.
--
-- A database whose old linked notifications belong to requests decided before
-- 0013 stops at 0013 (its withdrawal hits the same CHECK), naming the
-- constraint. There, `ALTER TABLE lockbox.notifications DROP CONSTRAINT
-- notifications_no_links` as the schema's owner, then `lockbox db migrate`:
-- 0013 withdraws them and this migration puts the rule back.

-- MARK: Notifications

CREATE FUNCTION lockbox.carries_link(text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
    $1 ~* '[a-z][a-z0-9+.-]*://|www\.|mailto:|href\s*=|\m[a-z][a-z0-9+.-]*:[^[:space:]]|[a-z0-9-]\.[a-z][a-z]|\\\\[^[:space:]]';

COMMENT ON FUNCTION lockbox.carries_link(text) IS
    'The notification link rule (0009): a URL, a scheme: form, a bare host name or a UNC path.';

-- The CHECK below calls it as the inserting role.
REVOKE EXECUTE ON FUNCTION lockbox.carries_link(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lockbox.carries_link(text) TO lockbox_app;

ALTER TABLE lockbox.notifications DROP CONSTRAINT IF EXISTS notifications_no_links;

UPDATE lockbox.notifications
SET withdrawn_at = now(),
    withdrawn_reason = 'queued before links were refused (migration 0009) and carries one: never sent'
WHERE sent_at IS NULL AND withdrawn_at IS NULL AND lockbox.carries_link(subject || ' ' || body);

ALTER TABLE lockbox.notifications ADD CONSTRAINT notifications_no_links
    CHECK (NOT lockbox.carries_link(subject || ' ' || body)) NOT VALID;

DO $$
BEGIN
    ALTER TABLE lockbox.notifications VALIDATE CONSTRAINT notifications_no_links;
EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'notifications sent before migration 0009 carry text the link rule refuses; they stay as they were, and the rule holds for every new notification';
END $$;

-- MARK: Request scopes

ALTER TABLE lockbox.requests DROP CONSTRAINT IF EXISTS requests_resource_path;

CREATE FUNCTION lockbox.check_request_scope() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Segments separated by '/': none empty, '.' or '..', none starting or ending with a space.
    IF NEW.resource ~ '(^|/)\.{0,2}(/|$)|(^|/)[[:space:]]|[[:space:]](/|$)' THEN
        RAISE EXCEPTION 'the scope "%" of a request must be a path of named segments', NEW.resource
            USING ERRCODE = '23514', CONSTRAINT = 'requests_resource_path', TABLE = 'requests',
                  COLUMN = 'resource';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER requests_resource_path BEFORE INSERT OR UPDATE OF resource ON lockbox.requests
    FOR EACH ROW EXECUTE FUNCTION lockbox.check_request_scope();

REVOKE EXECUTE ON FUNCTION lockbox.check_request_scope() FROM PUBLIC;
