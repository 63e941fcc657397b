-- Tenant names are unique ignoring case.
--
-- Why: a tenant's service account is built from its lower-cased name
-- (`<name>BOXServiceAccount@<name>.prod.outlook.com`), and that account is the
-- User column of the audit records of the tenant's own lockbox decisions. With
-- names unique only as written, `Contoso` could be created beside `contoso`;
-- both then had the same service account, and a search of the audit log by
-- User mixed the two tenants' records. The database now refuses the second
-- name, and a service account can belong to one tenant only.
--
-- A database that already holds names differing only by case cannot take the
-- index: say which, rather than fail on the index with a bare duplicate-key
-- error. (Renaming a tenant is an operator decision, not a migration's.)
DO $$
DECLARE
    clashes text;
BEGIN
    SELECT string_agg(names, '; ') INTO clashes
    FROM (SELECT string_agg(name, ', ' ORDER BY name) AS names
          FROM lockbox.tenants GROUP BY lower(name) HAVING count(*) > 1) c;
    IF clashes IS NOT NULL THEN
        RAISE EXCEPTION 'tenant names must be unique ignoring case, and these differ only by case: %', clashes
            USING HINT = 'Rename all but one tenant of each group, then run the migration again.';
    END IF;
END $$;

CREATE UNIQUE INDEX tenants_name_ignoring_case ON lockbox.tenants (lower(name));
ALTER TABLE lockbox.tenants ADD CONSTRAINT tenants_service_account_unique UNIQUE (service_account);
