-- The grant check of every operator content operation (sql/statements/
-- authorize_batch.sql and lockbox.authorize_batch) looks for an operator's
-- Approved request for one tenant and workload, latest window end first. This
-- partial index holds only Approved requests, in that order, so the check is
-- one short index descent with no sort, however many past requests an
-- operator has.
CREATE INDEX requests_approved_grants ON lockbox.requests (requester, tenant_id, workload, access_ends_at DESC)
    WHERE status = 'Approved';
