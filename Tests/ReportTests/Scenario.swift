import Foundation
import LockboxPostgres
import LockboxTestSupport

/// The fixture every report test runs against, written straight into the base
/// tables (parameterised SQL), with times relative to the real clock because
/// the views compare them with the server's `now()`.
///
/// - `contoso` (Customer Lockbox on) and `fabrikam` (off), each with the
///   `New-Tenant` audit record the broker writes;
/// - operators `alex` and `blake`, support managers `morgan` and `sam`;
/// - contoso requests: an active grant with actions inside its window, one
///   whose window ended with no sweep (reads Completed), one revoked early, one
///   pending past its 12 hours with no sweep (reads Expired), one denied, one
///   rejected internally, one pending within its 12 hours;
/// - fabrikam: one approved internally with lockbox off, one pending internal review;
/// - operator actions inside grants, and refused attempts (outside the
///   catalogue, after the window, after a revoke, on an expired request, with
///   no request at all, on a request not yet approved).
struct Scenario: Sendable {
    struct Tenant: Sendable {
        let id = UUID()
        let name: String
        let lockbox: Bool
    }

    struct Request: Sendable {
        let id = UUID()
        var tenant: Tenant
        var requester: String
        var workload: String
        var ticket: String
        var resource: String?
        var duration: Duration
        var createdAt: Date
        /// Internal review (approval, or rejection when `storedStatus` is Rejected).
        var reviewer: String?
        var reviewedAt: Date?
        /// Set when the customer was notified (lockbox on).
        var notifiedAt: Date?
        var decision: String?
        var decidedBy: String?
        var decidedAt: Date?
        var accessStartsAt: Date?
        var storedStatus: String
        var storedEndedAt: Date?
        var storedEndedReason: String?
        /// What `lockbox.access_requests` must say now.
        var expectedStatus: String
        var expectedEndedAt: Date?
        var expectedEndedReason: String?

        var accessEndsAt: Date? { accessStartsAt.map { $0.addingTimeInterval(seconds(duration)) } }
        /// Notification to customer decision, for Approve and Deny.
        var customerLatency: Duration? {
            guard let notifiedAt, let decidedAt, decision == "Approve" || decision == "Deny" else { return nil }
            return .seconds(Int64(decidedAt.timeIntervalSince(notifiedAt)))
        }
        var wasApproved: Bool { accessStartsAt != nil }
    }

    struct Action: Sendable {
        var auditId: Int64 = 0
        var tenant: Tenant?
        var operatorAlias: String
        var workload: String
        var operation: String
        var resource: String
        var at: Date
        var result: String
        var requestId: UUID?
        var reason: String?
        /// What `lockbox.operator_actions.within_grant` must say.
        var expectedWithinGrant: Bool
    }

    let base: Date
    let contoso: Tenant
    let fabrikam: Tenant
    var requests: [Request]
    var actions: [Action]
    /// Audit records that are not operator actions, per tenant name ("" for none).
    var otherRecords: [String: Int] = [:]

    static let operators = [("alex", false), ("blake", false), ("morgan", true), ("sam", true)]

    /// A period that holds the whole scenario.
    var wholePeriod: (from: Date, to: Date) { (minutes(-24 * 60), minutes(24 * 60)) }

    func minutes(_ offset: Int) -> Date { base.addingTimeInterval(Double(offset * 60)) }

    func request(_ ticket: String) -> Request { requests.first { $0.ticket == ticket }! }
    func tenant(_ name: String) -> Tenant { name == contoso.name ? contoso : fabrikam }

    // MARK: Building

    /// The scenario, as of the current whole second.
    init() {
        base = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        contoso = Tenant(name: "contoso", lockbox: true)
        fabrikam = Tenant(name: "fabrikam", lockbox: false)
        requests = []
        actions = []
        let t = minutes

        // contoso (Customer Lockbox on)
        let active = Request(
            tenant: contoso, requester: "alex", workload: "Exchange", ticket: "SR-1001", resource: "user@contoso.com",
            duration: .seconds(4 * 3600), createdAt: t(-180), reviewer: "morgan", reviewedAt: t(-170),
            notifiedAt: t(-170), decision: "Approve", decidedBy: "approver@contoso.com", decidedAt: t(-140),
            accessStartsAt: t(-140), storedStatus: "Approved", expectedStatus: "Approved")
        let lapsed = Request(
            tenant: contoso, requester: "blake", workload: "SharePoint", ticket: "SR-1002", resource: nil,
            duration: .seconds(2 * 3600), createdAt: t(-600), reviewer: "sam", reviewedAt: t(-590),
            notifiedAt: t(-590), decision: "Approve", decidedBy: "admin@contoso.com", decidedAt: t(-530),
            accessStartsAt: t(-530), storedStatus: "Approved", expectedStatus: "Completed",
            expectedEndedAt: t(-410), expectedEndedReason: "access window ended")
        let revoked = Request(
            tenant: contoso, requester: "alex", workload: "Exchange", ticket: "SR-1007", resource: nil,
            duration: .seconds(4 * 3600), createdAt: t(-480), reviewer: "morgan", reviewedAt: t(-470),
            notifiedAt: t(-470), decision: "Approve", decidedBy: "approver@contoso.com", decidedAt: t(-450),
            accessStartsAt: t(-450), storedStatus: "Revoked", storedEndedAt: t(-360),
            storedEndedReason: "revoked by customer", expectedStatus: "Revoked", expectedEndedAt: t(-360),
            expectedEndedReason: "revoked by customer")
        let stale = Request(
            tenant: contoso, requester: "alex", workload: "OneDrive", ticket: "SR-1003", resource: nil,
            duration: .seconds(3600), createdAt: t(-900), reviewer: "morgan", reviewedAt: t(-840),
            notifiedAt: t(-840), storedStatus: "PendingCustomer", expectedStatus: "Expired",
            expectedEndedAt: t(-120), expectedEndedReason: "no customer decision within 12 hours")
        let denied = Request(
            tenant: contoso, requester: "blake", workload: "Exchange", ticket: "SR-1004", resource: nil,
            duration: .seconds(3600), createdAt: t(-360), reviewer: "sam", reviewedAt: t(-350), notifiedAt: t(-350),
            decision: "Deny", decidedBy: "approver@contoso.com", decidedAt: t(-260), storedStatus: "Denied",
            storedEndedAt: t(-260), storedEndedReason: "denied by customer", expectedStatus: "Denied",
            expectedEndedAt: t(-260), expectedEndedReason: "denied by customer")
        let rejected = Request(
            tenant: contoso, requester: "alex", workload: "Exchange", ticket: "SR-1005", resource: nil,
            duration: .seconds(3600), createdAt: t(-300), reviewer: "morgan", reviewedAt: t(-270),
            storedStatus: "Rejected", storedEndedAt: t(-270), storedEndedReason: "rejected by support manager",
            expectedStatus: "Rejected", expectedEndedAt: t(-270), expectedEndedReason: "rejected by support manager")
        let pending = Request(
            tenant: contoso, requester: "blake", workload: "OneDrive", ticket: "SR-1006", resource: nil,
            duration: .seconds(3600), createdAt: t(-120), reviewer: "sam", reviewedAt: t(-110), notifiedAt: t(-110),
            storedStatus: "PendingCustomer", expectedStatus: "PendingCustomer")
        // fabrikam (Customer Lockbox off: internal approval grants access)
        let lockboxOff = Request(
            tenant: fabrikam, requester: "alex", workload: "Exchange", ticket: "FB-2001", resource: nil,
            duration: .seconds(4 * 3600), createdAt: t(-190), reviewer: "morgan", reviewedAt: t(-180),
            accessStartsAt: t(-180), storedStatus: "Approved", expectedStatus: "Approved")
        let unreviewed = Request(
            tenant: fabrikam, requester: "blake", workload: "SharePoint", ticket: "FB-2002", resource: nil,
            duration: .seconds(3600), createdAt: t(-60), storedStatus: "PendingInternal",
            expectedStatus: "PendingInternal")
        requests = [active, lapsed, revoked, stale, denied, rejected, pending, lockboxOff, unreviewed]

        func action(
            _ request: Request?, tenant: Tenant? = nil, by alias: String, _ operation: String, _ resource: String,
            workload: String? = nil, at offset: Int, denied reason: String? = nil, within: Bool
        ) -> Action {
            Action(
                tenant: tenant ?? request?.tenant, operatorAlias: alias, workload: workload ?? request!.workload,
                operation: operation, resource: resource, at: t(offset), result: reason == nil ? "Succeeded" : "Denied",
                requestId: request?.id, reason: reason, expectedWithinGrant: within)
        }
        actions = [
            action(active, by: "alex", "Get-MailboxFolder", "user@contoso.com/Inbox", at: -120, within: true),
            action(
                active, by: "alex", "Remove-Mailbox", "user@contoso.com", at: -90,
                denied: "operation Remove-Mailbox is not in the pre-approved catalogue of the Exchange connector",
                within: true),
            action(active, by: "alex", "Get-MailboxMessage", "user@contoso.com/Inbox/42", at: -60, within: true),
            action(lapsed, by: "blake", "Get-SiteFile", "sites/support/Shared Documents/log.txt", at: -480, within: true),
            action(
                lapsed, by: "blake", "Get-SiteFile", "sites/support/Shared Documents/log.txt", at: -300,
                denied: "the access window of request \(lapsed.id.uuidString.lowercased()) ended", within: false),
            action(revoked, by: "alex", "Get-MailboxFolder", "ceo@contoso.com/Inbox", at: -420, within: true),
            // Stamped at the very instant of the revocation: authorized before it.
            action(revoked, by: "alex", "Get-MailboxFolder", "ceo@contoso.com/Sent", at: -360, within: true),
            action(
                revoked, by: "alex", "Get-MailboxFolder", "ceo@contoso.com/Sent", at: -300,
                denied: "request \(revoked.id.uuidString.lowercased()) is Revoked, not approved", within: false),
            action(
                stale, by: "alex", "Get-DriveItem", "user@contoso.com/Documents/plan.xlsx", at: -60,
                denied: "request \(stale.id.uuidString.lowercased()) expired without a customer decision",
                within: false),
            action(
                nil, tenant: contoso, by: "sam", "Get-MailboxFolder", "user@contoso.com/Inbox", workload: "Exchange",
                at: -30, denied: "no access request of operator sam for Exchange in tenant contoso", within: false),
            action(lockboxOff, by: "alex", "Get-MailboxMessage", "ceo@fabrikam.com/Inbox/1", at: -120, within: true),
            action(
                unreviewed, by: "blake", "Get-SiteFile", "sites/hr/Shared Documents/x.docx", at: -40,
                denied: "request \(unreviewed.id.uuidString.lowercased()) is PendingInternal, not approved",
                within: false),
        ]
    }

    /// Writes the scenario into the database's base tables.
    static func build(on pool: PGPool) async throws -> Scenario {
        var scenario = Scenario()
        try await scenario.insert(on: pool)
        return scenario
    }

    private mutating func insert(on pool: PGPool) async throws {
        let created = minutes(-24 * 60)
        for tenant in [contoso, fabrikam] {
            try await pool.query(
                """
                INSERT INTO lockbox.tenants (tenant_id, name, customer_lockbox, service_account, created_at)
                VALUES (\(tenant.id), \(tenant.name), \(tenant.lockbox), \("lockbox-service@\(tenant.name).com"), \(created))
                """)
            try await record(
                on: pool, tenant: tenant, type: "TenantSettings", user: "System", activity: "New-Tenant",
                item: tenant.name, requestId: nil, workload: nil, at: created,
                parameters: [
                    "Tenant": tenant.name, "GlobalAdministrator": "admin@\(tenant.name).com",
                    "CustomerLockbox": tenant.lockbox ? "On" : "Off",
                ])
            for (upn, role) in [("admin@\(tenant.name).com", "GlobalAdministrator"),
                                ("approver@\(tenant.name).com", "CustomerLockboxApprover")] {
                try await pool.query(
                    """
                    INSERT INTO lockbox.tenant_roles (tenant_id, upn, role, granted_at, granted_by)
                    VALUES (\(tenant.id), \(upn), \(role), \(created), 'System')
                    """)
            }
        }
        for (alias, isManager) in Self.operators {
            try await pool.query(
                "INSERT INTO lockbox.operators (alias, is_manager, created_at) VALUES (\(alias), \(isManager), \(created))")
            try await record(
                on: pool, tenant: nil, type: "OperatorManagement", user: "System", activity: "New-SupportOperator",
                item: alias, requestId: nil, workload: nil, at: created, parameters: ["IsManager": "\(isManager)"])
        }
        // The scenario's requests are history, inserted in their final states, which the
        // lifecycle's rules (migration 0015) refuse to insert: off while they are loaded.
        try await pool.withConnection {
            try await $0.execute(script: "ALTER TABLE lockbox.requests DISABLE TRIGGER requests_rules")
        }
        for request in requests {
            try await pool.query(
                """
                INSERT INTO lockbox.requests (request_id, tenant_id, workload, ticket, reason, resource, requester,
                    duration, status, created_at, reviewed_at, internal_approver, notified_at, customer_deadline,
                    decided_at, decided_by, decision, access_starts_at, access_ends_at, ended_at, ended_reason)
                VALUES (\(request.id), \(request.tenant.id), \(request.workload), \(request.ticket),
                    \("Customer reports a problem (\(request.ticket))"), \(request.resource), \(request.requester),
                    \(request.duration), \(request.storedStatus), \(request.createdAt), \(request.reviewedAt),
                    \(request.reviewer), \(request.notifiedAt), CAST(\(request.notifiedAt) AS timestamptz) + interval '12 hours',
                    \(request.decidedAt), \(request.decidedBy), \(request.decision), \(request.accessStartsAt),
                    CAST(\(request.accessStartsAt) AS timestamptz) + CAST(\(request.duration) AS interval),
                    \(request.storedEndedAt), \(request.storedEndedReason))
                """)
            try await record(
                on: pool, tenant: request.tenant, type: "CustomerLockbox", user: request.requester,
                activity: "New-AccessToCustomerDataRequest", item: request.id.uuidString.lowercased(),
                requestId: request.id, workload: request.workload, at: request.createdAt,
                parameters: ["Ticket": request.ticket])
        }
        try await pool.withConnection {
            try await $0.execute(script: "ALTER TABLE lockbox.requests ENABLE TRIGGER requests_rules")
        }
        for index in actions.indices {
            actions[index].auditId = try await Self.insert(actions[index], on: pool)
        }
    }

    private mutating func record(
        on pool: PGPool, tenant: Tenant?, type: String, user: String, activity: String, item: String,
        requestId: UUID?, workload: String?, at: Date, parameters: [String: String]
    ) async throws {
        let json = try PGJSON(encoding: parameters)
        try await pool.query(
            """
            INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, activity, item,
                request_id, workload, result, parameters)
            VALUES (\(at), \(tenant?.id), \(type), \(user), \(user), \(activity), \(item), \(requestId), \(workload),
                'Succeeded', \(json))
            """)
        otherRecords[tenant?.name ?? "", default: 0] += 1
    }

    /// The audit parameters `lockbox.authorize` writes for an operator action.
    struct ActionParameters: Encodable {
        var operation: String
        var resource: String
        var `operator`: String
        var arguments: [String: String]
        var reason: String?
    }

    /// Inserts one operator action record as `lockbox.authorize` writes it; returns its audit id.
    static func insert(_ action: Action, on pool: PGPool) async throws -> Int64 {
        let parameters = try PGJSON(
            encoding: ActionParameters(
                operation: action.operation, resource: action.resource, operator: action.operatorAlias,
                arguments: ["resource": action.resource], reason: action.reason))
        let rows = try await pool.query(
            """
            INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, client_ip,
                activity, item, request_id, workload, result, parameters)
            VALUES (\(action.at), \(action.tenant?.id), 'OperatorAction', 'Microsoft Operator', \(action.operatorAlias),
                \(PGInet("10.20.30.40")), \(action.operation), '', \(action.requestId), \(action.workload),
                \(action.result), \(parameters))
            RETURNING id
            """)
        return try rows.first!.decode(Int64.self, at: 0)
    }
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// `percentile_cont` over intervals as PostgreSQL computes it: linear interpolation
/// between the two nearest ranks, to the microsecond; then rounded down to the
/// second, as the report does.
func percentileCont(_ fraction: Double, _ values: [Duration]) -> Duration? {
    let micros = values.map { $0.components.seconds * 1_000_000 + $0.components.attoseconds / 1_000_000_000_000 }.sorted()
    guard !micros.isEmpty else { return nil }
    let position = fraction * Double(micros.count - 1)
    let lower = Int(position.rounded(.down))
    let upper = Int(position.rounded(.up))
    let proportion = position - Double(lower)
    let value = micros[lower] + Int64((Double(micros[upper] - micros[lower]) * proportion).rounded())
    return .seconds(value / 1_000_000)
}
