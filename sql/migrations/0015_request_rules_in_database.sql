-- The database holds the request lifecycle's rules, not only its transitions.
--
-- Why: 0001's trigger allowed only the lifecycle's transitions, but a role that
-- may write requests (lockbox_app) could still
--   * insert a request already Approved, so no support manager and no customer
--     ever saw it;
--   * approve a PendingInternal request directly while the tenant has Customer
--     Lockbox on, skipping the customer;
--   * record a customer decision after the 12-hour deadline, or by someone with
--     no role in the tenant;
--   * move an approved window, reset a customer deadline, or rewrite the ticket,
--     the reason or a recorded review or decision.
-- The broker never does these; the database now refuses them too, whoever asks
-- (within the limits said below).
--
-- The rules (each refusal is a check_violation naming its rule as CONSTRAINT):
--   requests_created_pending    a request is created PendingInternal, with no
--                               review, decision, window or end yet;
--   requests_customer_step      PendingInternal goes to PendingCustomer only if
--                               the tenant has Customer Lockbox on, and straight
--                               to Approved only if it has it off (*);
--   requests_customer_decision  leaving PendingCustomer by a decision (Approve,
--                               Deny, Cancel) happens before customer_deadline;
--                               Approve and Deny name the decision and are made
--                               by someone with a role in the request's tenant (*);
--   requests_window_start       an approved window starts at the approval (the
--                               customer's decision, or the review when the
--                               tenant has Customer Lockbox off);
--   requests_end_matches        Expired ends at the deadline, Completed at the
--                               window's end, Revoked and Cancelled inside it;
--   requests_history_fixed      ticket and reason never change, and a review, a
--                               notification time, a deadline, a decision, a
--                               window or an end, once recorded, stays as
--                               recorded (a later comment may still be added).
--
-- (*) These read other tables, and are checked when the transaction commits
-- (a deferred constraint trigger), against the setting and the roles as the
-- transaction leaves them, so that a transaction cannot switch Customer Lockbox
-- off around its own approval or hand someone a role for the length of their
-- decision. What the database does not do is tie a change of the setting or of
-- a role, made in a transaction of its own, to its audit record: the broker
-- writes one (Set-CustomerLockboxSetting, Add-/Remove-RoleGroupMember) in the
-- same transaction, but a role that may write those tables and the audit log
-- could change them without it.
--
-- Times are the broker's (every one of them is passed in by it), so the rules
-- compare recorded times with each other, never with the server's clock.
--
-- Loading history in final states (the benchmark's dataset, a test's scenario)
-- is the schema owner's business: it disables this trigger in the loading
-- transaction.

CREATE FUNCTION lockbox.check_request_rules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'PendingInternal' OR num_nonnulls(
            NEW.reviewed_at, NEW.internal_approver, NEW.review_comment, NEW.notified_at, NEW.customer_deadline,
            NEW.decided_at, NEW.decided_by, NEW.decision, NEW.decision_comment, NEW.access_starts_at,
            NEW.access_ends_at, NEW.ended_at, NEW.ended_reason) > 0
        THEN
            RAISE EXCEPTION 'a request is created PendingInternal, with no review, decision, window or end (got %)',
                NEW.status
                USING ERRCODE = '23514', CONSTRAINT = 'requests_created_pending', TABLE = 'requests';
        END IF;
        RETURN NEW;
    END IF;

    IF NEW.ticket <> OLD.ticket OR NEW.reason <> OLD.reason
        OR (OLD.reviewed_at IS NOT NULL AND (NEW.reviewed_at IS DISTINCT FROM OLD.reviewed_at
            OR NEW.internal_approver IS DISTINCT FROM OLD.internal_approver
            OR NEW.review_comment IS DISTINCT FROM OLD.review_comment))
        OR (OLD.notified_at IS NOT NULL AND (NEW.notified_at IS DISTINCT FROM OLD.notified_at
            OR NEW.customer_deadline IS DISTINCT FROM OLD.customer_deadline))
        OR (OLD.decided_at IS NOT NULL AND (NEW.decided_at IS DISTINCT FROM OLD.decided_at
            OR NEW.decided_by IS DISTINCT FROM OLD.decided_by OR NEW.decision IS DISTINCT FROM OLD.decision))
        OR (OLD.access_starts_at IS NOT NULL AND (NEW.access_starts_at IS DISTINCT FROM OLD.access_starts_at
            OR NEW.access_ends_at IS DISTINCT FROM OLD.access_ends_at))
        OR (OLD.ended_at IS NOT NULL AND (NEW.ended_at IS DISTINCT FROM OLD.ended_at
            OR NEW.ended_reason IS DISTINCT FROM OLD.ended_reason))
    THEN
        RAISE EXCEPTION 'request %: its ticket, reason and recorded review, deadline, decision, window and end cannot change',
            OLD.request_id
            USING ERRCODE = '23514', CONSTRAINT = 'requests_history_fixed', TABLE = 'requests';
    END IF;

    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NEW;
    END IF;

    IF OLD.status = 'PendingCustomer' AND NEW.status IN ('Approved', 'Denied', 'Cancelled')
        AND NOT coalesce(NEW.decided_at < NEW.customer_deadline, false)
    THEN
        RAISE EXCEPTION 'request %: a customer decision is made before its deadline % (decided at %)',
            OLD.request_id, NEW.customer_deadline, NEW.decided_at
            USING ERRCODE = '23514', CONSTRAINT = 'requests_customer_decision', TABLE = 'requests';
    END IF;

    -- (A CASE inside an IF condition is parenthesised: PL/pgSQL ends the condition at the first THEN.)
    IF NEW.status = 'Approved' AND NEW.access_starts_at IS DISTINCT FROM
        (CASE OLD.status WHEN 'PendingCustomer' THEN NEW.decided_at ELSE NEW.reviewed_at END)
    THEN
        RAISE EXCEPTION 'request %: an approved window starts at the approval, not at %',
            OLD.request_id, NEW.access_starts_at
            USING ERRCODE = '23514', CONSTRAINT = 'requests_window_start', TABLE = 'requests';
    END IF;

    IF (NEW.status = 'Expired' AND NEW.ended_at IS DISTINCT FROM NEW.customer_deadline)
        OR (NEW.status = 'Completed' AND NEW.ended_at IS DISTINCT FROM NEW.access_ends_at)
        OR (OLD.status = 'Approved' AND NEW.status IN ('Revoked', 'Cancelled')
            AND NOT coalesce(NEW.ended_at < NEW.access_ends_at, false))
    THEN
        RAISE EXCEPTION 'request %: % cannot end at % (deadline %, window end %)',
            OLD.request_id, NEW.status, NEW.ended_at, NEW.customer_deadline, NEW.access_ends_at
            USING ERRCODE = '23514', CONSTRAINT = 'requests_end_matches', TABLE = 'requests';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER requests_rules BEFORE INSERT OR UPDATE ON lockbox.requests
    FOR EACH ROW EXECUTE FUNCTION lockbox.check_request_rules();

REVOKE EXECUTE ON FUNCTION lockbox.check_request_rules() FROM PUBLIC;

-- The rules that depend on other tables, checked when the transaction commits,
-- against the tenant's setting and roles as the transaction leaves them: a
-- transaction cannot switch Customer Lockbox off around its own approval, or
-- give someone a role just for the length of their decision.
CREATE FUNCTION lockbox.check_request_rules_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_lockbox boolean;
BEGIN
    IF OLD.status = 'PendingInternal' AND NEW.status IN ('PendingCustomer', 'Approved') THEN
        SELECT t.customer_lockbox INTO v_lockbox FROM lockbox.tenants t WHERE t.tenant_id = NEW.tenant_id;
        IF v_lockbox IS DISTINCT FROM (NEW.status = 'PendingCustomer') THEN
            RAISE EXCEPTION 'request % cannot go from PendingInternal to % while its tenant has Customer Lockbox %',
                OLD.request_id, NEW.status, CASE WHEN v_lockbox THEN 'on' ELSE 'off' END
                USING ERRCODE = '23514', CONSTRAINT = 'requests_customer_step', TABLE = 'requests';
        END IF;
    END IF;
    IF OLD.status = 'PendingCustomer' AND NEW.status IN ('Approved', 'Denied') AND (
        NEW.decision IS DISTINCT FROM (CASE NEW.status WHEN 'Approved' THEN 'Approve' ELSE 'Deny' END)
        OR NOT EXISTS (
            SELECT 1 FROM lockbox.tenant_roles x WHERE x.tenant_id = NEW.tenant_id AND x.upn = NEW.decided_by))
    THEN
        RAISE EXCEPTION 'request %: % must be decided (decision %) by a role holder of its tenant, not %',
            OLD.request_id, NEW.status, CASE NEW.status WHEN 'Approved' THEN 'Approve' ELSE 'Deny' END,
            coalesce(NEW.decided_by, 'nobody')
            USING ERRCODE = '23514', CONSTRAINT = 'requests_customer_decision', TABLE = 'requests';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER requests_rules_at_commit AFTER UPDATE OF status ON lockbox.requests
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION lockbox.check_request_rules_at_commit();

REVOKE EXECUTE ON FUNCTION lockbox.check_request_rules_at_commit() FROM PUBLIC;
