import Foundation
import LockboxPostgres

/// What an operator asks for.
public struct NewAccessRequest: Sendable {
    public var requester: String
    public var tenant: String
    public var workload: Workload
    public var ticket: String
    public var reason: String
    /// Default 4 hours; between 1 minute and 4 hours, whole minutes.
    public var duration: Duration
    /// One mailbox, site or drive inside the workload; nil covers the workload.
    public var resource: String?
    public var clientIP: String?

    public init(
        requester: String, tenant: String, workload: Workload, ticket: String, reason: String,
        duration: Duration = .seconds(4 * 3600), resource: String? = nil, clientIP: String? = nil
    ) {
        self.requester = requester
        self.tenant = tenant
        self.workload = workload
        self.ticket = ticket
        self.reason = reason
        self.duration = duration
        self.resource = resource
        self.clientIP = clientIP
    }
}

/// How long a customer has to decide once notified.
public let customerDecisionWindow: Duration = .seconds(12 * 3600)

extension Broker {
    static let lockboxActivity = "Set-AccessToCustomerDataRequest"

    // MARK: Create and review

    /// Creates a request in `PendingInternal`.
    public func createRequest(_ new: NewAccessRequest) async throws -> AccessRequest {
        let requester = try Validate.alias(new.requester, field: "operator")
        let tenantName = try Validate.tenantName(new.tenant)
        let workload = try Validate.workload(new.workload, known: workloads)
        let ticket = try Validate.text(new.ticket, field: "ticket", max: Validate.maxTicket)
        let reason = try Validate.text(new.reason, field: "reason", max: Validate.maxReason)
        let duration = try Validate.duration(new.duration)
        var resource = try Validate.scope(new.resource)
        if let scope = resource, let path = scopePaths[workload] {
            resource = try path.checkScope(scope, workload: workload)
        }
        let clientIP = try Validate.clientIP(new.clientIP)
        let now = try now()
        let id = UUID()
        return try await transaction { connection in
            _ = try await requireOperator(requester, on: connection, field: "operator")
            let tenantRows = try await connection.query(
                """
                SELECT tenant_id, name, customer_lockbox, service_account, created_at FROM lockbox.tenants
                WHERE lower(name) = lower(\(tenantName))
                """)
            let tenantId = try Self.exactTenant(named: tenantName, in: tenantRows).tenantId
            try await connection.query(
                """
                INSERT INTO lockbox.requests (request_id, tenant_id, workload, ticket, reason, resource, requester,
                    duration, status, created_at)
                VALUES (\(id), \(tenantId), \(workload.rawValue), \(ticket), \(reason), \(resource), \(requester),
                    \(duration), 'PendingInternal', \(now))
                """)
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: tenantId, recordType: "CustomerLockbox", user: requester,
                    actor: requester, clientIP: clientIP, activity: "New-AccessToCustomerDataRequest",
                    item: id.uuidString.lowercased(), requestId: id, workload: workload.rawValue,
                    parameters: [
                        "Ticket": ticket, "Reason": reason, "DurationMinutes": "\(duration.components.seconds / 60)",
                        "Resource": resource ?? "(entire workload)",
                    ]),
                on: connection)
            return try await request(id, at: now, on: connection)
        }
    }

    /// The internal review by a support manager who is not the requester.
    ///
    /// Approving moves the request to `PendingCustomer` and queues one
    /// notification per global administrator and lockbox approver when the
    /// tenant has Customer Lockbox on; with it off, straight to `Approved`.
    public func review(
        _ requestID: UUID, manager: String, approve: Bool, comment: String? = nil, clientIP: String? = nil
    ) async throws -> AccessRequest {
        let manager = try Validate.alias(manager, field: "manager")
        let comment = try Validate.optionalText(comment, field: "comment", max: Validate.maxComment)
        let clientIP = try Validate.clientIP(clientIP)
        return try await transaction { connection in
            let reviewer = try await requireOperator(manager, on: connection, field: "manager")
            let locked = try await lockRequest(requestID, on: connection)
            guard reviewer.isManager else {
                throw LockboxError(
                    .notManager, "\(manager) is not a support manager and cannot review requests", field: "manager")
            }
            guard locked.requester != manager else {
                throw LockboxError(
                    .twoPersonRule,
                    "\(manager) created request \(requestID.lowercased) and cannot review it: a second person must",
                    field: "manager")
            }
            guard locked.status == .pendingInternal else {
                throw LockboxError(
                    .notPending,
                    "request \(requestID.lowercased) is \(locked.status.rawValue), not pending internal review")
            }
            let tenant = try await connection.query(
                "SELECT customer_lockbox FROM lockbox.tenants WHERE tenant_id = \(locked.tenantId) FOR SHARE")
            let lockboxOn = try tenant.first!.decode(Bool.self, at: 0)
            // Read once the request and the tenant are ours (the tenant may have been waited
            // for, behind a role change or a Customer Lockbox switch): the notification time and
            // the customer's 12 hours count from when the review takes effect. It reads the
            // tenant's setting and roles as the changes before it left them, so it is not dated
            // before them either (``tenantTime(_:name:on:)``).
            let now = try await tenantTime(locked.tenantId, name: locked.tenantName, on: connection)
            try locked.requireNotBeforeLastChange(now)
            let activity: String
            if !approve {
                activity = "Reject-AccessToCustomerDataRequest"
                try await connection.query(
                    """
                    UPDATE lockbox.requests SET status = 'Rejected', reviewed_at = \(now), internal_approver = \(manager),
                        review_comment = \(comment), ended_at = \(now), ended_reason = 'rejected by support manager'
                    WHERE request_id = \(requestID)
                    """)
            } else if lockboxOn {
                activity = "Approve-AccessToCustomerDataRequestInternally"
                let deadline = now.addingTimeInterval(12 * 3600)
                try await connection.query(
                    """
                    UPDATE lockbox.requests SET status = 'PendingCustomer', reviewed_at = \(now),
                        internal_approver = \(manager), review_comment = \(comment), notified_at = \(now),
                        customer_deadline = \(deadline)
                    WHERE request_id = \(requestID)
                    """)
                try await queueNotifications(for: requestID, deadline: deadline, now: now, on: connection)
            } else {
                activity = "Approve-AccessToCustomerDataRequestInternally"
                let ends = now.addingTimeInterval(Double(locked.durationMinutes * 60))
                try await connection.query(
                    """
                    UPDATE lockbox.requests SET status = 'Approved', reviewed_at = \(now), internal_approver = \(manager),
                        review_comment = \(comment), access_starts_at = \(now), access_ends_at = \(ends)
                    WHERE request_id = \(requestID)
                    """)
            }
            var parameters = [
                "Decision": approve ? "Approve" : "Reject", "Reviewer": manager,
                "CustomerLockbox": lockboxOn ? "On" : "Off",
                "NextStatus": !approve ? "Rejected" : lockboxOn ? "PendingCustomer" : "Approved",
            ]
            if let comment { parameters["Comment"] = comment }
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: locked.tenantId, recordType: "CustomerLockbox", user: manager,
                    actor: manager, clientIP: clientIP, activity: activity, item: requestID.lowercased,
                    requestId: requestID, workload: locked.workload, parameters: parameters),
                on: connection)
            return try await request(requestID, at: now, on: connection)
        }
    }

    // MARK: Decisions

    /// `Set-AccessToCustomerDataRequest`: a customer's Approve or Deny, or the requester's Cancel.
    ///
    /// - Parameter principal: for Approve/Deny, a UPN with a role in the request's
    ///   tenant; for Cancel, the requester's operator alias.
    public func decide(
        _ requestID: UUID, decision: ApprovalDecision, by principal: String, comment: String? = nil,
        clientIP: String? = nil
    ) async throws -> AccessRequest {
        switch decision {
        case .approve, .deny:
            try await customerDecision(requestID, approve: decision == .approve, by: principal, comment: comment,
                                       clientIP: clientIP)
        case .cancel:
            try await cancel(requestID, by: principal, comment: comment, clientIP: clientIP)
        }
    }

    private func customerDecision(
        _ requestID: UUID, approve: Bool, by principal: String, comment: String?, clientIP: String?
    ) async throws -> AccessRequest {
        let upn = try Validate.upn(principal, field: "as")
        let comment = try Validate.optionalText(comment, field: "comment", max: Validate.maxComment)
        let clientIP = try Validate.clientIP(clientIP)
        return try await transaction { connection in
            let locked = try await lockTenantThenRequest(requestID, on: connection)
            try await lockQueuedNotifications(ofRequest: requestID, on: connection)
            // The time is read once the tenant, the request and its queued notifications are ours:
            // a decision that waited for them (behind a role change, another decision, a cancel, a
            // sweep or a delivery) is judged at the time it takes effect, so one that waited past
            // the deadline is refused as expired.
            let now = try await tenantTime(locked.tenantId, name: locked.tenantName, on: connection)
            try locked.requireNotBeforeLastChange(now)
            try await requireCustomerApprover(upn, of: locked, on: connection, action: "approve or deny its requests")
            guard locked.status == .pendingCustomer, let deadline = locked.customerDeadline else {
                let status = locked.effectiveStatus(at: now)
                throw LockboxError(
                    .notPending,
                    "request \(requestID.lowercased) is \(status.rawValue), "
                        + (status == .pendingInternal
                            ? "not yet pending a customer decision: it awaits the provider's internal review"
                            : "no longer pending a customer decision"))
            }
            guard now < deadline else {
                throw LockboxError(
                    .expired,
                    "request \(requestID.lowercased) expired at \(Self.timestamp(deadline)) without a customer "
                        + "decision and can no longer be approved or denied")
            }
            let decision = approve ? "Approve" : "Deny"
            if approve {
                let ends = now.addingTimeInterval(Double(locked.durationMinutes * 60))
                try await connection.query(
                    """
                    UPDATE lockbox.requests SET status = 'Approved', decided_at = \(now), decided_by = \(upn),
                        decision = 'Approve', decision_comment = \(comment), access_starts_at = \(now),
                        access_ends_at = \(ends)
                    WHERE request_id = \(requestID) AND status = 'PendingCustomer'
                    """)
            } else {
                try await connection.query(
                    """
                    UPDATE lockbox.requests SET status = 'Denied', decided_at = \(now), decided_by = \(upn),
                        decision = 'Deny', decision_comment = \(comment), ended_at = \(now),
                        ended_reason = 'denied by customer'
                    WHERE request_id = \(requestID) AND status = 'PendingCustomer'
                    """)
            }
            var parameters = ["ApprovalDecision": decision, "Identity": requestID.lowercased, "DecidedBy": upn]
            if let comment { parameters["Comment"] = comment }
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: locked.tenantId, recordType: "CustomerLockbox",
                    user: locked.serviceAccount, actor: upn, clientIP: clientIP, activity: Self.lockboxActivity,
                    item: requestID.lowercased, requestId: requestID, workload: locked.workload,
                    parameters: parameters),
                on: connection)
            return try await request(requestID, at: now, on: connection)
        }
    }

    private func cancel(_ requestID: UUID, by principal: String, comment: String?, clientIP: String?) async throws
        -> AccessRequest
    {
        let alias = try Validate.alias(principal, field: "as")
        let comment = try Validate.optionalText(comment, field: "comment", max: Validate.maxComment)
        let clientIP = try Validate.clientIP(clientIP)
        return try await transaction { connection in
            let locked = try await lockRequest(requestID, on: connection)
            try await lockQueuedNotifications(ofRequest: requestID, on: connection)
            // Read under the locks, as for a decision: the operations the grant allowed while this
            // waited are recorded before the end recorded here (see ``revoke(_:by:comment:clientIP:)``),
            // and a notification delivered meanwhile before the cancel that withdraws the rest.
            let now = try now()
            try locked.requireNotBeforeLastChange(now)
            guard locked.requester == alias else {
                throw LockboxError(
                    .notAuthorized,
                    "only the requester (\(locked.requester)) may cancel request \(requestID.lowercased)", field: "as")
            }
            let status = locked.effectiveStatus(at: now)
            guard [.pendingInternal, .pendingCustomer, .approved].contains(status) else {
                throw LockboxError(
                    .notPending,
                    "request \(requestID.lowercased) is \(status.rawValue): only a pending request or an active grant "
                        + "can be cancelled")
            }
            let end = try await grantEnd(locked, at: now, on: connection)
            try await connection.query(
                """
                UPDATE lockbox.requests SET status = 'Cancelled', ended_at = \(end),
                    ended_reason = 'cancelled by requester',
                    decision = CASE WHEN status = 'Approved' THEN decision ELSE 'Cancel' END,
                    decided_at = CASE WHEN status = 'Approved' THEN decided_at ELSE \(now) END,
                    decided_by = CASE WHEN status = 'Approved' THEN decided_by ELSE \(alias) END,
                    -- An active grant keeps its customer's decision, comment included: the
                    -- cancel's own comment is in its audit record.
                    decision_comment = CASE WHEN status = 'Approved' THEN decision_comment ELSE \(comment) END
                WHERE request_id = \(requestID)
                """)
            var parameters = [
                "ApprovalDecision": "Cancel", "Identity": requestID.lowercased, "DecidedBy": alias,
                "PreviousStatus": status.rawValue,
            ]
            if let comment { parameters["Comment"] = comment }
            try await audit(
                AuditEntry(
                    occurredAt: end, tenantId: locked.tenantId, recordType: "CustomerLockbox",
                    user: locked.serviceAccount, actor: alias, clientIP: clientIP, activity: Self.lockboxActivity,
                    item: requestID.lowercased, requestId: requestID, workload: locked.workload,
                    parameters: parameters),
                on: connection)
            return try await request(requestID, at: end, on: connection)
        }
    }

    /// A customer approver ends an active grant early.
    @discardableResult
    public func revoke(_ requestID: UUID, by principal: String, comment: String? = nil, clientIP: String? = nil)
        async throws -> AccessRequest
    {
        let upn = try Validate.upn(principal, field: "as")
        let comment = try Validate.optionalText(comment, field: "comment", max: Validate.maxComment)
        let clientIP = try Validate.clientIP(clientIP)
        return try await transaction { connection in
            let locked = try await lockTenantThenRequest(requestID, on: connection)
            // Read under the locks: operations the grant allowed while the revoke waited for it
            // committed before it, and must not be recorded as happening after the grant ended.
            let now = try await tenantTime(locked.tenantId, name: locked.tenantName, on: connection)
            try locked.requireNotBeforeLastChange(now)
            try await requireCustomerApprover(upn, of: locked, on: connection, action: "revoke its grants")
            let status = locked.effectiveStatus(at: now)
            guard status == .approved else {
                throw LockboxError(
                    .notActive, "request \(requestID.lowercased) is \(status.rawValue), not an active grant to revoke")
            }
            let end = try await grantEnd(locked, at: now, on: connection)
            try await connection.query(
                """
                UPDATE lockbox.requests SET status = 'Revoked', ended_at = \(end), ended_reason = 'revoked by customer'
                WHERE request_id = \(requestID)
                """)
            var parameters = ["Identity": requestID.lowercased, "RevokedBy": upn]
            if let comment { parameters["Comment"] = comment }
            try await audit(
                AuditEntry(
                    occurredAt: end, tenantId: locked.tenantId, recordType: "CustomerLockbox", user: upn, actor: upn,
                    clientIP: clientIP, activity: "Revoke-AccessToCustomerDataRequest", item: requestID.lowercased,
                    requestId: requestID, workload: locked.workload, parameters: parameters),
                on: connection)
            return try await request(requestID, at: end, on: connection)
        }
    }

    // MARK: Sweep

    /// What a sweep recorded.
    public struct SweepResult: Sendable, Codable, Equatable {
        public var expired: [UUID]
        public var completed: [UUID]
        public init(expired: [UUID], completed: [UUID]) {
            self.expired = expired
            self.completed = completed
        }
    }

    /// Marks pending requests past their 12-hour deadline `Expired` and grants
    /// past their window `Completed`, each audited once. Running it again
    /// changes nothing. (Access already stops at the deadline without it.)
    ///
    /// Locks in one order with everyone else: the requests first (by id, as a decision
    /// locks its request before withdrawing its notifications), then every queued
    /// notification of the expiring ones by notification id, as a role removal does
    /// (migration 0021). Expiring them one request at a time, as the update's row
    /// triggers do, took notifications in request order and deadlocked with a removal
    /// taking the same ones in notification order.
    @discardableResult
    public func sweep() async throws -> SweepResult {
        let now = try now()
        return try await transaction { connection in
            let due = try await connection.query(
                """
                SELECT r.request_id FROM lockbox.requests r
                WHERE (r.status = 'PendingCustomer' AND r.customer_deadline <= \(now))
                   OR (r.status = 'Approved' AND r.access_ends_at <= \(now))
                ORDER BY r.request_id
                FOR NO KEY UPDATE
                """)
            let ids = PGArray(try due.map { try $0.decode(UUID.self, at: 0).lowercased })
            try await connection.query(
                """
                SELECT 1 FROM lockbox.notifications n
                WHERE n.request_id = ANY(\(ids)::uuid[]) AND n.sent_at IS NULL AND n.withdrawn_at IS NULL
                ORDER BY n.notification_id
                FOR UPDATE
                """)
            let expired = try await connection.query(
                """
                WITH swept AS (
                    UPDATE lockbox.requests r SET status = 'Expired', ended_at = r.customer_deadline,
                        ended_reason = 'no customer decision within 12 hours'
                    WHERE r.request_id = ANY(\(ids)::uuid[])
                      AND r.status = 'PendingCustomer' AND r.customer_deadline <= \(now)
                    RETURNING r.request_id, r.tenant_id, r.workload, r.customer_deadline
                )
                INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, activity, item,
                    request_id, workload, result, parameters)
                SELECT \(now), s.tenant_id, 'CustomerLockbox', 'System', 'System', 'Expire-AccessToCustomerDataRequest',
                    s.request_id::text, s.request_id, s.workload, 'Succeeded',
                    jsonb_build_object('Reason', 'no customer decision within 12 hours',
                                       'Deadline', to_char(s.customer_deadline AT TIME ZONE 'UTC',
                                                           'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                FROM swept s ORDER BY s.request_id
                RETURNING request_id
                """)
            let completed = try await connection.query(
                """
                WITH swept AS (
                    UPDATE lockbox.requests r SET status = 'Completed', ended_at = r.access_ends_at,
                        ended_reason = 'access window ended'
                    WHERE r.request_id = ANY(\(ids)::uuid[])
                      AND r.status = 'Approved' AND r.access_ends_at <= \(now)
                    RETURNING r.request_id, r.tenant_id, r.workload, r.access_ends_at
                )
                INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, activity, item,
                    request_id, workload, result, parameters)
                SELECT \(now), s.tenant_id, 'CustomerLockbox', 'System', 'System',
                    'Complete-AccessToCustomerDataRequest', s.request_id::text, s.request_id, s.workload, 'Succeeded',
                    jsonb_build_object('Reason', 'access window ended',
                                       'WindowEnd', to_char(s.access_ends_at AT TIME ZONE 'UTC',
                                                            'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                FROM swept s ORDER BY s.request_id
                RETURNING request_id
                """)
            return SweepResult(
                expired: try expired.map { try $0.decode(UUID.self, at: 0) },
                completed: try completed.map { try $0.decode(UUID.self, at: 0) })
        }
    }

    // MARK: Reading requests

    /// Filters for ``requests(_:)``; nil means any.
    public struct RequestFilter: Sendable {
        public var tenant: String?
        public var status: RequestStatus?
        public var createdAfter: Date?
        public var requestId: UUID?
        public var limit: Int
        public init(
            tenant: String? = nil, status: RequestStatus? = nil, createdAfter: Date? = nil, requestId: UUID? = nil,
            limit: Int = 1000
        ) {
            self.tenant = tenant
            self.status = status
            self.createdAfter = createdAfter
            self.requestId = requestId
            self.limit = limit
        }
    }

    /// Requests matching the filter, newest first, with their status as of now.
    public func requests(_ filter: RequestFilter = RequestFilter()) async throws -> [AccessRequest] {
        let now = try now()
        var query: PGQuery = "SELECT * FROM (" + Self.requestSelect(now: now) + ") q WHERE true "
        if let tenant = filter.tenant {
            _ = try await self.tenant(named: tenant)
            query += "AND q.tenant = \(tenant) "
        }
        if let status = filter.status { query += "AND q.status = \(status.rawValue) " }
        if let id = filter.requestId { query += "AND q.request_id = \(id) " }
        if let after = filter.createdAfter { query += "AND q.created_at > \(after) " }
        query += "ORDER BY q.created_at DESC, q.request_id LIMIT \(max(filter.limit, 0))"
        return try await read(query).map(Self.accessRequest)
    }

    /// One request; `notFound` if there is none.
    public func request(_ id: UUID) async throws -> AccessRequest {
        let now = try now()
        return try await reading { try await request(id, at: now, on: $0) }
    }

    /// The request as of `now`, read in the transaction that just changed it: what a change
    /// returns. Read after the commit, a failure to read it (the clock, the connection) was
    /// reported as the change's failure, though the change was made: a request created again.
    func request(_ id: UUID, at now: Date, on connection: PGConnection) async throws -> AccessRequest {
        let rows = try await connection.query(Self.requestSelect(now: now) + "WHERE r.request_id = \(id)")
        guard let row = rows.first else {
            throw LockboxError(.notFound, "no request with id \(id.lowercased)", field: "request id")
        }
        return try Self.accessRequest(row)
    }

    /// The request's history: every audit record that names it, oldest first.
    public func timeline(_ id: UUID) async throws -> [AuditRecord] {
        _ = try await request(id)
        return try await auditRecords(AuditFilter(requestId: id, newestFirst: false))
    }

    static func requestSelect(now: Date) -> PGQuery {
        """
        SELECT r.request_id, t.name AS tenant, r.workload, r.ticket, r.reason, r.requester,
            (extract(epoch FROM r.duration) / 60)::bigint AS duration_minutes, r.resource,
            CASE WHEN r.status = 'Approved' AND r.access_ends_at <= \(now) THEN 'Completed'
                 WHEN r.status = 'PendingCustomer' AND r.customer_deadline <= \(now) THEN 'Expired'
                 ELSE r.status END AS status,
            r.created_at, r.reviewed_at, r.internal_approver, r.notified_at, r.customer_deadline, r.decided_at,
            r.decided_by, r.decision, r.access_starts_at, r.access_ends_at,
            coalesce(r.ended_at, CASE WHEN r.status = 'Approved' AND r.access_ends_at <= \(now) THEN r.access_ends_at
                                      WHEN r.status = 'PendingCustomer' AND r.customer_deadline <= \(now)
                                          THEN r.customer_deadline END) AS ended_at,
            coalesce(r.ended_reason, CASE WHEN r.status = 'Approved' AND r.access_ends_at <= \(now)
                                              THEN 'access window ended'
                                          WHEN r.status = 'PendingCustomer' AND r.customer_deadline <= \(now)
                                              THEN 'no customer decision within 12 hours' END) AS ended_reason
        FROM lockbox.requests r JOIN lockbox.tenants t ON t.tenant_id = r.tenant_id

        """
    }

    static func accessRequest(_ row: PGRow) throws -> AccessRequest {
        let (id, tenant, workload, ticket, reason, requester, minutes, resource, status) = try row.decode(
            (UUID, String, String, String, String, String, Int, String?, String).self)
        return AccessRequest(
            requestId: id, tenant: tenant, workload: Workload(workload), ticket: ticket, reason: reason,
            requester: requester, durationMinutes: minutes, resource: resource,
            status: RequestStatus(rawValue: status) ?? .pendingInternal,
            createdAt: try row.decode(column: "created_at"),
            reviewedAt: try row.decode(column: "reviewed_at"),
            internalApprover: try row.decode(column: "internal_approver"),
            notifiedAt: try row.decode(column: "notified_at"),
            customerDeadline: try row.decode(column: "customer_deadline"),
            decidedAt: try row.decode(column: "decided_at"),
            decidedBy: try row.decode(column: "decided_by"),
            decision: try row.decode(column: "decision"),
            accessStartsAt: try row.decode(column: "access_starts_at"),
            accessEndsAt: try row.decode(column: "access_ends_at"),
            endedAt: try row.decode(column: "ended_at"),
            endedReason: try row.decode(column: "ended_reason"))
    }

    // MARK: Locking

    /// The locked row of a request and its tenant's details.
    struct LockedRequest {
        var requestId: UUID
        var tenantId: UUID
        var tenantName: String
        var serviceAccount: String
        var workload: String
        var requester: String
        var status: RequestStatus
        var durationMinutes: Int
        var customerDeadline: Date?
        var accessEndsAt: Date?
        /// The times recorded on the request (created, reviewed, decided, window start, ended).
        var changes: [Date]

        /// The status as of `now`, counting deadlines the sweeper has not recorded yet.
        func effectiveStatus(at now: Date) -> RequestStatus {
            if status == .approved, let ends = accessEndsAt, now >= ends { return .completed }
            if status == .pendingCustomer, let deadline = customerDeadline, now >= deadline { return .expired }
            return status
        }

        /// Refuses a `now` before the request's last recorded change: a clock set back (or two
        /// brokers' clocks apart) would date a review before the request, a decision before its
        /// notification, a window opened before the approval it follows, or a revoke or cancel
        /// before the window it ends. The time is ambiguous: nothing is done. (Operations the
        /// grant allowed, stamped by other brokers' clocks, date the end instead:
        /// ``Broker/grantEnd(_:at:on:)``.)
        /// A change recorded so far ahead that its own clock was wrong is passed over
        /// (``Broker/isAmbiguouslyBefore(_:_:)``), but not the changes recorded after it.
        func requireNotBeforeLastChange(_ now: Date) throws {
            if let lastChange = changes.filter({ Broker.isAmbiguouslyBefore(now, $0) }).max() {
                throw LockboxError(
                    .clockUnavailable,
                    "the time is ambiguous: the clock reads \(Broker.timestamp(now)), before request "
                        + "\(requestId.lowercased)'s last recorded change at \(Broker.timestamp(lastChange)); "
                        + "nothing was done")
            }
        }
    }

    /// For a cancel or a revoke, which end a grant at `now`: the time to record the end at,
    /// `now`, or the latest operation the grant allowed when `now` reads before it (by at most
    /// ``Broker/clockSpread``).
    ///
    /// The caller holds the request `FOR UPDATE`, so every operation the grant allowed has
    /// committed before the end; but each was stamped by its own broker's clock, and one a few
    /// seconds ahead of this one, with the end dated `now`, would read as done after the grant
    /// ended: the auditors' alarm query (`access_outside_grant`, `operator_actions.within_grant`)
    /// would list it. The end is dated at that operation instead (an operation at the very
    /// instant of the end reads as allowed before it). Refusing it as ambiguous, as this did,
    /// let an operator working through a broker whose clock was a few seconds ahead keep the
    /// customer's revoke (and their own cancel) refused for as long as they kept working: each
    /// new operation was again ahead of the clock. The time stays before the window's end: the
    /// operations were allowed inside it.
    func grantEnd(_ request: LockedRequest, at now: Date, on connection: PGConnection) async throws -> Date {
        guard request.status == .approved else { return now }
        let rows = try await connection.query(
            """
            SELECT occurred_at FROM lockbox.audit_records
            WHERE request_id = \(request.requestId) AND record_type = 'OperatorAction' AND result = 'Succeeded'
              AND occurred_at > \(now) AND occurred_at <= \(now.addingTimeInterval(Self.clockSpread))
            ORDER BY occurred_at DESC LIMIT 1
            """)
        if let latest = try rows.first?.decode(Date.self, at: 0), Self.isAmbiguouslyBefore(now, latest) {
            return latest
        }
        return now
    }

    /// Refuses unless `upn` is a global administrator or lockbox approver of the request's tenant.
    ///
    /// The caller holds the tenant `FOR SHARE` (``lockTenantThenRequest(_:on:)``), so the
    /// roles read here stay as read until the decision commits.
    func requireCustomerApprover(
        _ upn: String, of request: LockedRequest, on connection: PGConnection, action: String
    ) async throws {
        guard try await !customerRoles(of: upn, in: request.tenantId, on: connection).isEmpty else {
            throw LockboxError(
                .notAuthorized,
                "\(upn) is neither a global administrator nor a Customer Lockbox approver of \(request.tenantName) "
                    + "and cannot \(action)", field: "as")
        }
    }

    /// For a customer decision or a revoke: locks the request's tenant `FOR SHARE`, then the
    /// request (``lockRequest(_:on:)``), in that order.
    ///
    /// The tenant, until the decision commits: role changes lock it `FOR NO KEY UPDATE`
    /// (``lockTenant(_:on:)``), so a removal in flight is waited for and the roles are then
    /// read as it left them (the decision is refused as not authorized), and a removal that
    /// comes later waits for the decision. Without it the decision read the role as it was
    /// before the removal, went through, and was refused only at commit by migration 0015's
    /// check, as a database failure. (Role rows are not locked themselves: lockbox_app may
    /// not update them, which locking needs.)
    ///
    /// The tenant first: a revoke (or a refused decision on an approved request) that held
    /// the request `FOR UPDATE` while it waited for the tenant (behind a role change, an
    /// auditor grant, a Customer Lockbox switch, or a removal waiting for a notification
    /// being delivered) held up every operation under that grant, and with it the whole
    /// batch of other operators' calls sent with it. Nothing locks a tenant exclusively and
    /// then a request, so this order cannot deadlock with the request-then-tenant order of
    /// ``review(_:manager:approve:comment:clientIP:)`` (both share the tenant).
    func lockTenantThenRequest(_ id: UUID, on connection: PGConnection) async throws -> LockedRequest {
        try await connection.query(
            """
            SELECT 1 FROM lockbox.tenants t
            WHERE t.tenant_id = (SELECT r.tenant_id FROM lockbox.requests r WHERE r.request_id = \(id))
            FOR SHARE OF t
            """)
        return try await lockRequest(id, on: connection)
    }

    /// Locks the request row `FOR UPDATE`, not `FOR NO KEY UPDATE`: the authorization
    /// statements lock an approved request `FOR KEY SHARE` (migration 0021), which only
    /// `FOR UPDATE` conflicts with, so that a revoke or cancel and an operation under the
    /// grant wait for each other instead of both succeeding.
    ///
    /// In three steps, so that operations that come while it waits for those in flight queue
    /// behind it (migration 0025): PostgreSQL grants a row lock that does not conflict with the
    /// row's holders at once, and operations under the grant, one overlapping the next, took
    /// `FOR KEY SHARE` ahead of a waiting `FOR UPDATE` for as long as they came. First the row
    /// `FOR NO KEY UPDATE`, which waits for other changes of the request (a sweep, a decision)
    /// but not for operations, and is read; then, for an approved request, the grant's lock in
    /// the lock manager, exclusively: it waits for the operations in flight, which hold it
    /// shared, and the lock manager makes the ones that come after wait behind it; then the row
    /// `FOR UPDATE`, which no operation holds by then.
    func lockRequest(_ id: UUID, on connection: PGConnection) async throws -> LockedRequest {
        let rows = try await connection.query(
            """
            SELECT r.request_id, r.tenant_id, t.name, t.service_account, r.workload, r.requester, r.status,
                (extract(epoch FROM r.duration) / 60)::bigint, r.customer_deadline, r.access_ends_at,
                r.created_at, r.reviewed_at, r.decided_at, r.access_starts_at, r.ended_at
            FROM lockbox.requests r JOIN lockbox.tenants t ON t.tenant_id = r.tenant_id
            WHERE r.request_id = \(id)
            FOR NO KEY UPDATE OF r
            """)
        guard let row = rows.first else {
            throw LockboxError(.notFound, "no request with id \(id.lowercased)", field: "request id")
        }
        let (requestId, tenantId, tenantName, account, workload, requester, status, minutes, deadline, ends) =
            try row.decode((UUID, UUID, String, String, String, String, String, Int, Date?, Date?).self)
        if status == RequestStatus.approved.rawValue {
            try await connection.query("SELECT pg_advisory_xact_lock(lockbox.grant_lock_key(\(id)))")
        }
        try await connection.query("SELECT 1 FROM lockbox.requests WHERE request_id = \(id) FOR UPDATE")
        let changes = try (10...14).compactMap { try row.decode(Date?.self, at: $0) }
        return LockedRequest(
            requestId: requestId, tenantId: tenantId, tenantName: tenantName, serviceAccount: account,
            workload: workload, requester: requester, status: RequestStatus(rawValue: status) ?? .pendingInternal,
            durationMinutes: minutes, customerDeadline: deadline, accessEndsAt: ends, changes: changes)
    }
}

extension UUID {
    /// The lower-case form used in audit items and messages.
    public var lowercased: String { uuidString.lowercased() }
}
