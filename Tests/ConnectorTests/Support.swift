import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Testing

/// A broker on a fresh database with the connectors under test, tenants
/// `contoso` (Customer Lockbox on unless asked otherwise, global admin
/// `admin@contoso.com`) and `fabrikam` (on, `admin@fabrikam.com`), operators
/// `alex` and `blake`, and support manager `morgan`.
struct Gateway {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)
    static let clientIP = "10.20.30.40"

    let db: TestDatabase
    let broker: Broker
    let clock: ManualClock
    let registry: ConnectorRegistry

    static func with(lockbox: Bool = true, _ body: (Gateway) async throws -> Void) async throws {
        try await TestDatabase.with { db in
            let registry = connectorsUnderTest()
            let clock = ManualClock(start)
            let broker = Broker(pool: db.pool, clock: clock, workloads: registry.workloads)
            _ = try await broker.createTenant(name: "contoso", admin: "admin@contoso.com")
            _ = try await broker.createTenant(name: "fabrikam", admin: "admin@fabrikam.com")
            if lockbox {
                _ = try await broker.setCustomerLockbox(tenant: "contoso", enabled: true, by: "admin@contoso.com")
            }
            _ = try await broker.setCustomerLockbox(tenant: "fabrikam", enabled: true, by: "admin@fabrikam.com")
            _ = try await broker.addOperator(alias: "alex", isManager: false)
            _ = try await broker.addOperator(alias: "blake", isManager: false)
            _ = try await broker.addOperator(alias: "morgan", isManager: true)
            try await body(Gateway(db: db, broker: broker, clock: clock, registry: registry))
        }
    }

    /// The connector for `workload`, with its samples.
    func connector(_ workload: Workload, sourceLocation: SourceLocation = #_sourceLocation) throws
        -> any ConformanceSampling
    {
        try #require(
            registry[workload] as? any ConformanceSampling, "no samples for \(workload)", sourceLocation: sourceLocation
        )
    }

    // MARK: Requests

    /// A new request (`PendingInternal`).
    func request(
        _ workload: Workload, scope: String?, by requester: String = "alex", tenant: String = "contoso",
        duration: Duration = .seconds(3600)
    ) async throws -> AccessRequest {
        try await broker.createRequest(
            NewAccessRequest(
                requester: requester, tenant: tenant, workload: workload, ticket: "SR-2027-0042",
                reason: "Customer reports missing content after a migration", duration: duration, resource: scope,
                clientIP: Self.clientIP))
    }

    /// The internal review by `morgan`.
    func review(_ request: AccessRequest, approve: Bool = true) async throws -> AccessRequest {
        try await broker.review(request.requestId, manager: "morgan", approve: approve)
    }

    /// The customer's decision by the tenant's global administrator.
    func decide(_ request: AccessRequest, _ decision: ApprovalDecision) async throws -> AccessRequest {
        try await broker.decide(request.requestId, decision: decision, by: "admin@\(request.tenant).com")
    }

    /// A request through the whole chain: created, reviewed, approved by the customer now.
    func grant(
        _ workload: Workload, scope: String?, by requester: String = "alex", tenant: String = "contoso",
        duration: Duration = .seconds(3600)
    ) async throws -> AccessRequest {
        let created = try await request(workload, scope: scope, by: requester, tenant: tenant, duration: duration)
        let reviewed = try await review(created)
        let approved = reviewed.status == .approved ? reviewed : try await decide(reviewed, .approve)
        #expect(approved.status == .approved)
        return approved
    }

    // MARK: Attempts

    func attempt(
        _ workload: Workload, _ call: SampleCall, by operatorAlias: String = "alex", tenant: String = "contoso"
    ) -> OperationAttempt {
        OperationAttempt(
            operatorAlias: operatorAlias, tenant: tenant, workload: workload, operation: call.operation,
            arguments: call.arguments, clientIP: Self.clientIP)
    }

    /// The broker's authorization of `operation` on `resource` (alex, contoso), as a
    /// connector would ask for it, to hand to a mock service directly.
    func access(_ workload: Workload, _ operation: String, resource: String) async throws -> ContentAccess {
        try await broker.authorize(
            attempt(workload, SampleCall(operation: operation, path: [:], resource: "", expect: "")),
            operation: operation, resource: resource)
    }

    /// Invokes `attempt` and expects content containing `expect`, and exactly
    /// one `Succeeded` operator-action record under `request`.
    @discardableResult
    func expectAllowed(
        _ attempt: OperationAttempt, resource: String, expect: String, request: AccessRequest,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> OperationResult {
        let before = try await auditRowCount()
        let result = try await broker.invoke(attempt, registry: registry)
        #expect(json(result.value).contains(expect), "\(json(result.value))", sourceLocation: sourceLocation)
        #expect(result.access.requestID == request.requestId, sourceLocation: sourceLocation)
        #expect(result.access.resource == resource, sourceLocation: sourceLocation)
        #expect(try await auditRowCount() == before + 1, "one record per attempt", sourceLocation: sourceLocation)
        let row = try await lastAuditRow()
        #expect(row.id == result.access.auditID, sourceLocation: sourceLocation)
        row.expectOperatorAction(attempt, sourceLocation: sourceLocation)
        #expect(row.result == "Succeeded", sourceLocation: sourceLocation)
        #expect(row.requestID == request.requestId, sourceLocation: sourceLocation)
        #expect(row.parameters["resource"] == .string(resource), sourceLocation: sourceLocation)
        #expect(row.parameters["reason"] == nil, sourceLocation: sourceLocation)
        return result
    }

    /// What the audit record of a refusal must say about the request.
    enum ExpectedRequest {
        case request(AccessRequest)
        case none
        /// Not asserted (a refusal decided before the grant was looked up).
        case unchecked
    }

    /// Invokes `attempt` and expects `accessDenied` saying `reason`, no content,
    /// and exactly one `Denied` operator-action record carrying the reason.
    func expectDenied(
        _ attempt: OperationAttempt, because reason: String, request: ExpectedRequest, resource: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let before = try await auditRowCount()
        let error = try await #require(throws: LockboxError.self, sourceLocation: sourceLocation) {
            _ = try await broker.invoke(attempt, registry: registry)
        }
        #expect(error.code == .accessDenied, "\(error.debugDescription)", sourceLocation: sourceLocation)
        #expect(error.message.contains(reason), "\(error.message)", sourceLocation: sourceLocation)
        #expect(try await auditRowCount() == before + 1, "one record per attempt", sourceLocation: sourceLocation)
        let row = try await lastAuditRow()
        row.expectOperatorAction(attempt, sourceLocation: sourceLocation)
        #expect(row.result == "Denied", sourceLocation: sourceLocation)
        // The refusal names its record (the CLI prints it), where the reason is kept.
        #expect(error.auditID == row.id, "\(error.debugDescription)", sourceLocation: sourceLocation)
        guard case .string(let recorded) = row.parameters["reason"] else {
            Issue.record("the record of a refusal has no reason: \(row.parameters)", sourceLocation: sourceLocation)
            return
        }
        #expect(recorded.contains(reason), "\(recorded)", sourceLocation: sourceLocation)
        #expect(error.message.contains(recorded), "\(error.message)", sourceLocation: sourceLocation)
        if let resource {
            #expect(row.parameters["resource"] == .string(resource), sourceLocation: sourceLocation)
        }
        switch request {
        case .request(let request):
            #expect(row.requestID == request.requestId, sourceLocation: sourceLocation)
        case .none:
            #expect(row.requestID == nil, sourceLocation: sourceLocation)
        case .unchecked:
            break
        }
    }

    // MARK: The audit table itself

    func auditRowCount() async throws -> Int {
        try await db.pool.query("SELECT count(*) FROM lockbox.audit_records").first!.decode(Int.self, at: 0)
    }

    func lastAuditRow() async throws -> AuditRow {
        let rows = try await db.pool.query(
            """
            SELECT a.id, t.name, a.record_type, a.user_id, a.actor, host(a.client_ip), a.activity, a.item,
                a.request_id, a.workload, a.result, a.parameters::text
            FROM lockbox.audit_records a LEFT JOIN lockbox.tenants t ON t.tenant_id = a.tenant_id
            ORDER BY a.id DESC LIMIT 1
            """)
        let (id, tenant, type, user, actor, ip, activity, item, request, workload, result, parameters) =
            try rows.first!.decode(
                (Int64, String?, String, String, String, String?, String, String, UUID?, String?, String, String).self)
        guard case .object(let fields) = try JSONDecoder().decode(ContentValue.self, from: Data(parameters.utf8)) else {
            throw LockboxError(.invalidInput, "parameters are not a JSON object: \(parameters)")
        }
        return AuditRow(
            id: id, tenant: tenant, recordType: type, user: user, actor: actor, clientIP: ip, activity: activity,
            item: item, requestID: request, workload: workload, result: result, parameters: fields)
    }
}

/// One row of `lockbox.audit_records`, read with SQL.
struct AuditRow {
    var id: Int64
    var tenant: String?
    var recordType: String
    var user: String
    var actor: String
    var clientIP: String?
    var activity: String
    var item: String
    var requestID: UUID?
    var workload: String?
    var result: String
    var parameters: [String: ContentValue]

    /// The fields every operator-action record has, allowed or refused.
    func expectOperatorAction(_ attempt: OperationAttempt, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(recordType == "OperatorAction", sourceLocation: sourceLocation)
        #expect(user == "Microsoft Operator", sourceLocation: sourceLocation)
        #expect(actor == attempt.operatorAlias, sourceLocation: sourceLocation)
        #expect(clientIP == attempt.clientIP, sourceLocation: sourceLocation)
        #expect(activity == attempt.operation, sourceLocation: sourceLocation)
        #expect(item == "", sourceLocation: sourceLocation)
        #expect(workload == attempt.workload.rawValue, sourceLocation: sourceLocation)
        #expect(
            tenant == (["contoso", "fabrikam"].contains(attempt.tenant) ? attempt.tenant : nil),
            sourceLocation: sourceLocation)
        #expect(parameters["operation"] == .string(attempt.operation), sourceLocation: sourceLocation)
        #expect(parameters["operator"] == .string(attempt.operatorAlias), sourceLocation: sourceLocation)
        #expect(
            parameters["arguments"] == .object(attempt.arguments.mapValues(ContentValue.string)),
            sourceLocation: sourceLocation)
    }
}

/// Canonical JSON text of a value, for "the content contains …" checks.
func json(_ value: ContentValue) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "\(value)"
}

/// The connector of `workload` in `registry`, as its concrete type.
func concrete<C: Connector>(
    _ type: C.Type, _ registry: ConnectorRegistry, sourceLocation: SourceLocation = #_sourceLocation
) throws -> C {
    try #require(registry.all.lazy.compactMap { $0 as? C }.first, sourceLocation: sourceLocation)
}
