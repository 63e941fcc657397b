import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Testing

/// A broker on a fresh database with a tenant `contoso` (Customer Lockbox on,
/// global admin `admin@contoso.com`, approver `approver@contoso.com`), a tenant
/// `fabrikam` (approver `approver@fabrikam.com`), operators `alex` and `blake`
/// and support managers `morgan` and `sam`.
struct World {
    let db: TestDatabase
    let broker: Broker
    let clock: ManualClock
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    static func with(lockbox: Bool = true, _ body: (World) async throws -> Void) async throws {
        try await TestDatabase.with { db in
            let clock = ManualClock(start)
            let broker = Broker(pool: db.pool, clock: clock)
            _ = try await broker.createTenant(name: "contoso", admin: "admin@contoso.com")
            _ = try await broker.createTenant(name: "fabrikam", admin: "admin@fabrikam.com")
            if lockbox {
                try await broker.setCustomerLockbox(tenant: "contoso", enabled: true, by: "admin@contoso.com")
            }
            try await broker.setCustomerLockbox(tenant: "fabrikam", enabled: true, by: "admin@fabrikam.com")
            _ = try await broker.addRole(
                tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            _ = try await broker.addRole(
                tenant: "fabrikam", upn: "approver@fabrikam.com", role: .customerLockboxApprover,
                by: "admin@fabrikam.com")
            _ = try await broker.addOperator(alias: "alex", isManager: false)
            _ = try await broker.addOperator(alias: "blake", isManager: false)
            _ = try await broker.addOperator(alias: "morgan", isManager: true)
            _ = try await broker.addOperator(alias: "sam", isManager: true)
            try await body(World(db: db, broker: broker, clock: clock))
        }
    }

    func newRequest(
        by requester: String = "alex", tenant: String = "contoso", workload: Workload = .exchange,
        duration: Duration = .seconds(4 * 3600), resource: String? = nil
    ) async throws -> AccessRequest {
        try await broker.createRequest(
            NewAccessRequest(
                requester: requester, tenant: tenant, workload: workload, ticket: "SR-100200",
                reason: "Mailbox does not sync after migration", duration: duration, resource: resource,
                clientIP: "10.1.2.3"))
    }

    /// A request reviewed by `morgan` and waiting for the customer.
    func pendingCustomer(by requester: String = "alex", resource: String? = nil) async throws -> AccessRequest {
        let request = try await newRequest(by: requester, resource: resource)
        return try await broker.review(request.requestId, manager: "morgan", approve: true)
    }

    /// A request approved by the customer now.
    func approved(
        by requester: String = "alex", duration: Duration = .seconds(4 * 3600), resource: String? = nil
    ) async throws -> AccessRequest {
        let request = try await newRequest(by: requester, duration: duration, resource: resource)
        _ = try await broker.review(request.requestId, manager: "morgan", approve: true)
        return try await broker.decide(request.requestId, decision: .approve, by: "approver@contoso.com")
    }

    /// Authorizes a read of `resource` in Exchange for `alex` (or another operator).
    func authorize(
        _ operatorAlias: String = "alex", tenant: String = "contoso", workload: Workload = .exchange,
        resource: String = "user@contoso.com/Inbox"
    ) async throws -> ContentAccess {
        try await broker.authorize(
            OperationAttempt(
                operatorAlias: operatorAlias, tenant: tenant, workload: workload, operation: "Get-MailboxFolder",
                arguments: ["resource": resource], clientIP: "10.9.8.7"),
            operation: "Get-MailboxFolder", resource: resource)
    }

    /// Waits (polling, up to 20 s) until `count` sessions of this test's database wait for a
    /// lock, or `done` holds; for tests that pin one transaction behind another.
    func waitForLockWaits(_ count: Int, orUntil done: () -> Bool = { false }) async throws {
        for _ in 0..<2000 {
            if try await lockWaits() >= count || done() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("fewer than \(count) sessions ever waited for a lock")
    }

    /// How many sessions of this test's database wait for a lock now.
    func lockWaits() async throws -> Int {
        try await db.pool.query(
            """
            SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock'
            """
        ).first?.decode(Int.self, at: 0) ?? 0
    }

    /// Runs `statement` straight on the database (not through the broker) and requires
    /// the database to refuse it by `constraint` (a CHECK or a trigger naming its rule).
    func refusedByDatabase(
        _ statement: PGQuery, constraint: String, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let error = try await #require(throws: PostgresError.self, sourceLocation: sourceLocation) {
            try await db.pool.query(statement)
        }
        #expect(error.constraint == constraint, "\(error.message)", sourceLocation: sourceLocation)
    }

    /// A notification for `request` written straight into the table (not through the broker):
    /// as a database from before a rule would hold it, or to see the rule refuse it.
    static func notificationInsert(to recipient: String, body: String, for request: UUID) -> PGQuery {
        """
        INSERT INTO lockbox.notifications (tenant_id, request_id, recipient, subject, body, created_at)
        SELECT tenant_id, request_id, \(recipient), 'subject', \(body), now()
        FROM lockbox.requests WHERE request_id = \(request)
        """
    }

    /// Counts of every table and a digest of request and role state, to prove a refusal changed nothing.
    func snapshot() async throws -> [String] {
        let rows = try await db.pool.query(
            """
            SELECT (SELECT count(*) FROM lockbox.tenants)::text, (SELECT count(*) FROM lockbox.tenant_roles)::text,
                (SELECT count(*) FROM lockbox.operators)::text, (SELECT count(*) FROM lockbox.requests)::text,
                (SELECT count(*) FROM lockbox.audit_records)::text, (SELECT count(*) FROM lockbox.notifications)::text,
                coalesce((SELECT md5(string_agg(r::text, ',' ORDER BY request_id)) FROM lockbox.requests r), ''),
                coalesce((SELECT md5(string_agg(t::text, ',' ORDER BY tenant_id)) FROM lockbox.tenants t), ''),
                coalesce((SELECT md5(string_agg(x::text, ',' ORDER BY upn, role)) FROM lockbox.tenant_roles x), '')
            """)
        return try rows.first!.decode((String, String, String, String, String, String, String, String, String).self)
            |> { [$0.0, $0.1, $0.2, $0.3, $0.4, $0.5, $0.6, $0.7, $0.8] }
    }

    /// Asserts that `body` throws a LockboxError with `code` (and `field`, when given) and changes nothing.
    func expectRefusal(
        _ code: LockboxError.Code, field: String? = nil, containing text: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void
    ) async throws {
        let before = try await snapshot()
        do {
            try await body()
            Issue.record("expected \(code.rawValue), but it succeeded", sourceLocation: sourceLocation)
        } catch let error as LockboxError {
            #expect(error.code == code, "\(error.debugDescription)", sourceLocation: sourceLocation)
            if let field { #expect(error.field == field, "\(error.debugDescription)", sourceLocation: sourceLocation) }
            if let text {
                #expect(error.message.contains(text), "\(error.message)", sourceLocation: sourceLocation)
            }
        }
        let after = try await snapshot()
        #expect(before == after, "a refusal must change nothing", sourceLocation: sourceLocation)
    }

    func auditCount(activity: String? = nil, requestID: UUID? = nil) async throws -> Int {
        try await broker.auditRecords(AuditFilter(activity: activity, requestId: requestID)).count
    }
}

infix operator |>: AdditionPrecedence
func |> <A, B>(value: A, transform: (A) throws -> B) rethrows -> B { try transform(value) }
