-- Two removals of a tenant's global administrators at once cannot leave it
-- with none.
--
-- Why: 0001's trigger refuses the DELETE of a tenant's last global
-- administrator by looking for another one, in the deleting statement's
-- snapshot. Two transactions removing the tenant's last two administrators,
-- one each, each still saw the other administrator (the other's DELETE not
-- yet committed), and both committed: the tenant was left with no global
-- administrator, so no one could turn Customer Lockbox on or off or assign a
-- role there any more. The broker was not exposed (its role removal holds the
-- tenant FOR NO KEY UPDATE, so removals run one after the other), but any other
-- session that may delete roles (lockbox_app, which two brokers share, an
-- administrator's SQL) was, and the rule is the database's to keep.
--
-- Now the trigger locks the tenant FOR NO KEY UPDATE, as the broker's tenant
-- changes do, before it looks: a second removal waits for the first and then
-- looks at the roles as the first left them (each PL/pgSQL statement reads the
-- database afresh under READ COMMITTED), and is refused. The broker's own
-- removal already holds that lock, so it waits for nothing more. It runs with
-- its owner's rights, as 0004's check does: the deleting role need not be
-- allowed to lock tenants itself. The rest is 0001's.
CREATE OR REPLACE FUNCTION lockbox.keep_one_global_admin() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.role = 'GlobalAdministrator' THEN
        PERFORM 1 FROM lockbox.tenants WHERE tenant_id = OLD.tenant_id FOR NO KEY UPDATE;
        IF NOT EXISTS (
            SELECT 1 FROM lockbox.tenant_roles
            WHERE tenant_id = OLD.tenant_id AND role = 'GlobalAdministrator' AND upn <> OLD.upn
        ) THEN
            RAISE EXCEPTION 'a tenant must keep at least one global administrator'
                USING ERRCODE = '23514', CONSTRAINT = 'tenant_roles_last_global_admin';
        END IF;
    END IF;
    RETURN OLD;
END $$;

REVOKE EXECUTE ON FUNCTION lockbox.keep_one_global_admin() FROM PUBLIC;
