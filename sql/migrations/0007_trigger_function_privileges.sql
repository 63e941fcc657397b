-- The trigger functions of 0004 are no one's to call.
--
-- 0003 revoked EXECUTE from PUBLIC on every function that existed then and asks
-- each later migration to do the same for its own; 0004 did not, so PUBLIC (an
-- auditor included) held EXECUTE on lockbox.audit_records_check_tenants and
-- lockbox.tenants_keep_audited. PostgreSQL refuses to call a trigger function
-- outside a trigger, so nothing could be done with it, but the privilege should
-- not be there. Firing a trigger does not check EXECUTE, so the triggers keep
-- working for lockbox_app.
REVOKE EXECUTE ON FUNCTION lockbox.audit_records_check_tenants(), lockbox.tenants_keep_audited() FROM PUBLIC;
