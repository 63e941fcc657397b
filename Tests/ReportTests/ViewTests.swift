import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Testing

@Suite("report views")
struct ViewTests {
    static let documentedColumns: [String: [String]] = [
        "audit_log": [
            "id", "occurred_at", "tenant_id", "tenant", "record_type", "user_id", "actor", "client_ip", "activity",
            "item", "request_id", "workload", "result", "parameters",
        ],
        "access_requests": [
            "request_id", "tenant_id", "tenant", "workload", "ticket", "reason", "resource", "requester",
            "internal_approver", "duration", "status", "created_at", "notified_at", "decided_at", "decided_by",
            "decision", "access_starts_at", "access_ends_at", "ended_at", "ended_reason",
        ],
        "operator_actions": [
            "audit_id", "occurred_at", "tenant_id", "tenant", "operator", "client_ip", "workload", "operation",
            "resource", "arguments", "result", "reason", "request_id", "ticket", "requester", "access_starts_at",
            "access_ends_at", "within_grant", "parameters",
        ],
        "customer_tenants": ["tenant_id", "tenant", "customer_lockbox", "created_at"],
    ]

    @Test("the views have exactly the documented columns, in order, and are security barriers")
    func columns() async throws {
        try await TestDatabase.with { db in
            for (view, expected) in Self.documentedColumns {
                let rows = try await db.pool.query(
                    """
                    SELECT column_name::text FROM information_schema.columns
                    WHERE table_schema = 'lockbox' AND table_name = \(view) ORDER BY ordinal_position
                    """)
                #expect(try rows.decode(String.self) == expected, "\(view)")
                let options = try await db.pool.query(
                    "SELECT coalesce(reloptions, '{}')::text FROM pg_class WHERE oid = to_regclass(\("lockbox." + view))")
                #expect(try options.first?.decode(String.self, at: 0).contains("security_barrier=true") == true, "\(view)")
            }
        }
    }

    @Test("access_requests gives every request its status as of now, without a sweep, and the same after one")
    func requestStatus() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            try await checkRequests(scenario, on: db.pool)
            // Nothing was swept: the base table still holds the stored states.
            for request in scenario.requests {
                let stored = try await db.pool.query(
                    "SELECT status FROM lockbox.requests WHERE request_id = \(request.id)")
                #expect(try stored.first?.decode(String.self, at: 0) == request.storedStatus)
            }

            // The broker's sweep records what the view already said.
            let swept = try await Broker(pool: db.pool).sweep()
            #expect(Set(swept.completed) == Set(scenario.requests.filter { $0.ticket == "SR-1002" }.map(\.id)))
            #expect(Set(swept.expired) == Set(scenario.requests.filter { $0.ticket == "SR-1003" }.map(\.id)))
            try await checkRequests(scenario, on: db.pool)
        }
    }

    private func checkRequests(_ scenario: Scenario, on pool: PGPool) async throws {
        let rows = try await pool.query("SELECT * FROM lockbox.access_requests")
        #expect(rows.count == scenario.requests.count)
        for request in scenario.requests {
            let row = try #require(rows.first(where: { (try? $0.decode(UUID.self, column: "request_id")) == request.id }))
            #expect(try row.decode(String.self, column: "status") == request.expectedStatus, "\(request.ticket)")
            #expect(try row.decode(Date?.self, column: "ended_at") == request.expectedEndedAt, "\(request.ticket)")
            #expect(
                try row.decode(String?.self, column: "ended_reason") == request.expectedEndedReason, "\(request.ticket)")
            #expect(try row.decode(String.self, column: "tenant") == request.tenant.name)
            #expect(try row.decode(UUID.self, column: "tenant_id") == request.tenant.id)
            #expect(try row.decode(String.self, column: "ticket") == request.ticket)
            #expect(try row.decode(String.self, column: "workload") == request.workload)
            #expect(try row.decode(String?.self, column: "resource") == request.resource)
            #expect(try row.decode(String.self, column: "requester") == request.requester)
            #expect(try row.decode(String?.self, column: "internal_approver") == request.reviewer)
            #expect(try row.decode(Duration.self, column: "duration") == request.duration)
            #expect(try row.decode(Date.self, column: "created_at") == request.createdAt)
            #expect(try row.decode(Date?.self, column: "notified_at") == request.notifiedAt)
            #expect(try row.decode(String?.self, column: "decision") == request.decision)
            #expect(try row.decode(String?.self, column: "decided_by") == request.decidedBy)
            #expect(try row.decode(Date?.self, column: "decided_at") == request.decidedAt)
            #expect(try row.decode(Date?.self, column: "access_starts_at") == request.accessStartsAt)
            #expect(try row.decode(Date?.self, column: "access_ends_at") == request.accessEndsAt)
        }
    }

    @Test("operator_actions joins each action to its request and tells whether it was inside the grant")
    func operatorActions() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            let rows = try await db.pool.query("SELECT * FROM lockbox.operator_actions ORDER BY audit_id")
            #expect(try rows.map { try $0.decode(Int64.self, column: "audit_id") } == scenario.actions.map(\.auditId))
            for (row, action) in zip(rows, scenario.actions) {
                let label = "\(action.operatorAlias) \(action.operation) \(action.resource)"
                #expect(try row.decode(Bool.self, column: "within_grant") == action.expectedWithinGrant, "\(label)")
                #expect(try row.decode(Date.self, column: "occurred_at") == action.at)
                #expect(try row.decode(String?.self, column: "tenant") == action.tenant?.name)
                #expect(try row.decode(String.self, column: "operator") == action.operatorAlias)
                #expect(try row.decode(String.self, column: "operation") == action.operation)
                #expect(try row.decode(String.self, column: "resource") == action.resource)
                #expect(try row.decode(String.self, column: "workload") == action.workload)
                #expect(try row.decode(String.self, column: "result") == action.result)
                #expect(try row.decode(String?.self, column: "reason") == action.reason)
                #expect(try row.decode(PGInet.self, column: "client_ip").address == "10.20.30.40")
                #expect(try row.decode(PGJSON.self, column: "arguments").decode([String: String].self)
                    == ["resource": action.resource])
                let request = scenario.requests.first { $0.id == action.requestId }
                #expect(try row.decode(UUID?.self, column: "request_id") == action.requestId)
                #expect(try row.decode(String?.self, column: "ticket") == request?.ticket)
                #expect(try row.decode(String?.self, column: "requester") == request?.requester)
                #expect(try row.decode(Date?.self, column: "access_starts_at") == request?.accessStartsAt)
                #expect(try row.decode(Date?.self, column: "access_ends_at") == request?.accessEndsAt)
            }
        }
    }

    @Test("audit_log holds every audit record with its tenant name, the User column and the real actor")
    func auditLog() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            let total = try await db.pool.query("SELECT count(*) FROM lockbox.audit_records")
            let rows = try await db.pool.query("SELECT * FROM lockbox.audit_log ORDER BY id")
            #expect(rows.count == (try total.first!.decode(Int.self, at: 0)))
            var perTenant: [String: Int] = [:]
            for row in rows { perTenant[try row.decode(String?.self, column: "tenant") ?? "", default: 0] += 1 }
            var expected = scenario.otherRecords
            for action in scenario.actions { expected[action.tenant?.name ?? "", default: 0] += 1 }
            #expect(perTenant == expected)
            let operatorRows = try rows.filter { try $0.decode(String.self, column: "record_type") == "OperatorAction" }
            #expect(operatorRows.count == scenario.actions.count)
            for row in operatorRows {
                #expect(try row.decode(String.self, column: "user_id") == "Microsoft Operator")
                let actor = try row.decode(String.self, column: "actor")
                #expect(Scenario.operators.map(\.0).contains(actor))
            }
        }
    }
}
