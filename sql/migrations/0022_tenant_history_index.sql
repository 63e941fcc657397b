-- The latest change or decision recorded for a tenant, found without reading
-- its operator actions.
--
-- Why: a tenant change (Customer Lockbox on or off, a role assigned or removed,
-- an auditor granted or revoked) and a customer decision or revoke hold the
-- tenant's row while they run, so they happen one after the other; each is
-- dated by the clock of the broker that makes it. A broker whose clock is
-- behind the one before it would date its change before the change or decision
-- it followed: the audit log would then show, say, a decision by an approver
-- after the removal of their role, which never happened in that order. The
-- broker now refuses (the time is ambiguous, nothing is done) a change or
-- decision whose time is before the tenant's latest non-operator record. That
-- record is looked up in this index; operator actions, by far the most rows,
-- are not in it, so the hot path pays no index insertion for it.
CREATE INDEX audit_records_tenant_history
    ON lockbox.audit_records (tenant_id, occurred_at)
    WHERE record_type <> 'OperatorAction';
