-- The audit log's tenant reference, checked once per statement instead of once per row.
--
-- Why: the foreign key audit_records.tenant_id -> tenants ran its RI trigger for
-- every inserted audit row (an SPI query plus a FOR KEY SHARE row lock on the
-- tenant). lockbox.authorize_batch writes up to 256 rows per statement, all for
-- a handful of tenants, and measured on a 100-row batch the per-row trigger was
-- about a third of the statement's server time (roughly 8-10 us of 25-40 us per
-- row). The same guarantee, checked set-wise:
--   * inserts: one AFTER INSERT statement trigger locks every distinct tenant the
--     new rows name (FOR KEY SHARE, as the foreign key did) and refuses the
--     statement with foreign_key_violation (23503) if one does not exist;
--   * tenants: deleting a tenant, or changing its id, that audit records refer to
--     is refused (the foreign key's NO ACTION). The row lock taken above makes a
--     concurrent insert and delete wait for each other, as before.
ALTER TABLE lockbox.audit_records DROP CONSTRAINT audit_records_tenant_id_fkey;

CREATE FUNCTION lockbox.audit_records_check_tenants() RETURNS trigger LANGUAGE plpgsql
-- As the foreign key's check did, it runs with the owner's rights: the inserting
-- role (lockbox_app) may not lock tenant rows itself.
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    missing uuid;
BEGIN
    SELECT n.tenant_id INTO missing
    FROM (SELECT DISTINCT tenant_id FROM new_records WHERE tenant_id IS NOT NULL) n
    LEFT JOIN LATERAL (
        SELECT 1 AS found FROM lockbox.tenants t WHERE t.tenant_id = n.tenant_id FOR KEY SHARE
    ) t ON true
    WHERE t.found IS NULL
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert or update on table "audit_records" violates the tenant reference'
            USING ERRCODE = '23503', TABLE = 'audit_records', COLUMN = 'tenant_id',
                  DETAIL = format('Key (tenant_id)=(%s) is not present in table "tenants".', missing);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER audit_records_tenant_exists AFTER INSERT ON lockbox.audit_records
    REFERENCING NEW TABLE AS new_records
    FOR EACH STATEMENT EXECUTE FUNCTION lockbox.audit_records_check_tenants();

CREATE FUNCTION lockbox.tenants_keep_audited() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF (TG_OP = 'DELETE' OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id)
        AND EXISTS (SELECT 1 FROM lockbox.audit_records a WHERE a.tenant_id = OLD.tenant_id)
    THEN
        RAISE EXCEPTION 'update or delete on table "tenants" violates the tenant reference of "audit_records"'
            USING ERRCODE = '23503', TABLE = 'tenants',
                  DETAIL = format('Key (tenant_id)=(%s) is still referenced from table "audit_records".',
                                  OLD.tenant_id);
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER tenants_keep_audited BEFORE DELETE OR UPDATE OF tenant_id ON lockbox.tenants
    FOR EACH ROW EXECUTE FUNCTION lockbox.tenants_keep_audited();
