-- A request's scope is a path: no empty segment (a leading, trailing or double
-- `/`), no `.` or `..` segment, no segment that starts or ends with a space.
--
-- Why: resources are such paths (the connectors build them), so a scope of
-- another form could be approved by the customer and then cover nothing. The
-- broker refuses those, and lower-cases the first segment (Validate.scope);
-- the database holds the structural part. Case is left to the broker: the
-- server's lower() depends on its locale, the broker's does not.
--
-- Requests created before this migration are not changed (a request's scope is
-- part of what the customer approved). The constraint is validated when they
-- all pass, and otherwise holds for new requests only.
ALTER TABLE lockbox.requests ADD CONSTRAINT requests_resource_path CHECK (
    resource IS NULL OR resource !~ '(^|/)\.{0,2}(/|$)|(^|/)[[:space:]]|[[:space:]](/|$)'
) NOT VALID;

DO $$
BEGIN
    ALTER TABLE lockbox.requests VALIDATE CONSTRAINT requests_resource_path;
EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'requests created before migration 0011 have scopes the new path rule refuses; they stay as they were, and the rule holds for every new request';
END $$;
