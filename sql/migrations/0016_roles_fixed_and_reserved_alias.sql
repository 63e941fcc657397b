-- Customer roles are added and removed, never changed; no operator is called
-- `system`.
--
-- Why (roles): 0001 keeps the last global administrator of a tenant by refusing
-- the DELETE of its row, but the row could be UPDATEd into another role (or
-- another person, or another tenant), which left the tenant with none, and
-- lockbox_app held UPDATE on the table although nothing changes a role in
-- place: `role add` inserts, `role remove` deletes. Now an UPDATE of a role is
-- refused for everyone, and lockbox_app loses the privilege; it also loses
-- UPDATE on lockbox.auditor_tenants, which `auditor grant` and `auditor revoke`
-- likewise only insert into and delete from.
--
-- Why (alias): the audit log's User and actor columns say `System` for what
-- the sweeper and the broker do on their own. An operator named `system` was
-- indistinguishable from it there (`audit search --user System` ignores case).
-- The rule holds for every new operator; an existing one keeps its name (the
-- constraint then stays NOT VALID: operators are never updated, so that blocks
-- nothing).

CREATE FUNCTION lockbox.refuse_role_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a customer role is added or removed, never changed (% holds % in tenant %)',
        OLD.upn, OLD.role, OLD.tenant_id
        USING ERRCODE = '23514', CONSTRAINT = 'tenant_roles_fixed', TABLE = 'tenant_roles';
END $$;

CREATE TRIGGER tenant_roles_fixed BEFORE UPDATE ON lockbox.tenant_roles
    FOR EACH ROW EXECUTE FUNCTION lockbox.refuse_role_update();

REVOKE EXECUTE ON FUNCTION lockbox.refuse_role_update() FROM PUBLIC;
REVOKE UPDATE ON lockbox.tenant_roles, lockbox.auditor_tenants FROM lockbox_app;

ALTER TABLE lockbox.operators ADD CONSTRAINT operators_alias_reserved CHECK (alias <> 'system') NOT VALID;

DO $$
BEGIN
    ALTER TABLE lockbox.operators VALIDATE CONSTRAINT operators_alias_reserved;
EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'an operator named system exists from before migration 0016; it keeps its name, and no new one can take it';
END $$;
