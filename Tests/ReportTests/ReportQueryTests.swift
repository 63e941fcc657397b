import Foundation
import LockboxCore
import LockboxPostgres
import LockboxSQL
import LockboxTestSupport
import Testing

/// Each report in `sql/reports`, run with the real `psql -v tenant=… -v from=… -v to=… -f …`
/// against the fixture scenario.
@Suite("report queries")
struct ReportQueryTests {
    static let reports = [
        "access_outside_grant", "actions_by_request", "approval_latency", "denied_attempts", "operator_activity",
        "request_history",
    ]

    @Test("every report has a header saying what it answers and its parameters, and reads only the views")
    func headers() throws {
        #expect(SQLFolder.reportNames == Self.reports)
        for name in Self.reports {
            let text = try String(contentsOfFile: SQLFolder.report(name), encoding: .utf8)
            #expect(text.hasPrefix("-- \(name).sql — "), "\(name)")
            let header = text.split(separator: "\n").prefix { $0.hasPrefix("--") }.joined(separator: "\n")
            for parameter in ["tenant", "from", "to"] {
                #expect(header.contains("--   \(parameter) "), "\(name) documents \(parameter)")
                #expect(text.contains(":'\(parameter)'"), "\(name) uses \(parameter)")
            }
            #expect(header.contains("psql -v tenant="), "\(name) shows how to run it")
            let body = text.split(separator: "\n").filter { !$0.hasPrefix("--") }.joined(separator: "\n")
            let relations = Set(body.matches(of: /lockbox\.([a-z_]+)/).map { String($0.output.1) })
            let views: Set = ["audit_log", "access_requests", "operator_actions", "customer_tenants"]
            #expect(!relations.isEmpty && relations.isSubset(of: views), "\(name) reads \(relations)")
            // The binary carries the same text (the CLI can run them too).
            #expect(LockboxSQL.reports[name] == text, "\(name) is embedded")
        }
    }

    // MARK: request_history

    @Test("request_history: a tenant's requests in the period with decisions, status now, and action counts")
    func requestHistory() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            let whole = scenario.wholePeriod
            // Every tenant, the whole period; then a period that starts 7 hours ago.
            for (tenant, from) in [("contoso", whole.from), ("fabrikam", whole.from), ("contoso", scenario.minutes(-7 * 60))] {
                let rows = try await Psql.report(
                    "request_history", ReportParameters(tenant: tenant, from: from, to: whole.to),
                    connection: db.connectionString)
                let expected = scenario.requests
                    .filter { $0.tenant.name == tenant && $0.createdAt >= from }
                    .sorted { $0.createdAt < $1.createdAt }
                #expect(try rows.map { try $0.uuid("request_id") } == expected.map(\.id), "\(tenant) from \(from)")
                for (row, request) in zip(rows, expected) {
                    #expect(try row.string("tenant") == tenant)
                    #expect(try row.string("ticket") == request.ticket)
                    #expect(try row.string("status") == request.expectedStatus, "\(request.ticket)")
                    #expect(try row.text("decision") == request.decision)
                    #expect(try row.text("decided_by") == request.decidedBy)
                    #expect(try row.date("decided_at") == request.decidedAt)
                    #expect(try row.text("internal_approver") == request.reviewer)
                    #expect(try row.date("access_starts_at") == request.accessStartsAt)
                    #expect(try row.date("access_ends_at") == request.accessEndsAt)
                    #expect(try row.date("ended_at") == request.expectedEndedAt)
                    #expect(try row.text("ended_reason") == request.expectedEndedReason)
                    #expect(try row.duration("duration") == request.duration)
                    let under = scenario.actions.filter { $0.requestId == request.id }
                    #expect(try row.int("actions") == under.filter { $0.result == "Succeeded" }.count, "\(request.ticket)")
                    #expect(try row.int("refused_actions") == under.filter { $0.result == "Denied" }.count)
                }
            }
        }
    }

    // MARK: actions_by_request

    /// Where `actions_by_request` puts an action: under its request, or, when it named none, in its
    /// tenant's group of attempts with no request.
    struct ActionGroup: Hashable {
        var requestId: UUID?
        var tenant: String?

        init(_ action: Scenario.Action) {
            requestId = action.requestId
            tenant = action.requestId == nil ? action.tenant?.name : nil
        }

        /// The report's order of groups: requests by their first action (ties by id, as PostgreSQL orders
        /// uuids), then the groups with no request by tenant name, no known tenant last.
        func order(first: Date) -> (Int, Int, String, Date, String) {
            guard let requestId else { return (1, tenant == nil ? 1 : 0, tenant ?? "", first, "") }
            return (0, 0, "", first, requestId.uuidString.lowercased())
        }
    }

    @Test("actions_by_request: every action of the period under its request and ticket, in order")
    func actionsByRequest() async throws {
        try await TestDatabase.with { db in
            var scenario = try await Scenario.build(on: db.pool)
            // Besides contoso's, attempts that named no request in fabrikam and in a tenant that does not exist
            // (no tenant id): with tenant *, each tenant's are a group of their own.
            let t = scenario.minutes
            for var action in [
                Scenario.Action(
                    tenant: scenario.contoso, operatorAlias: "blake", workload: "OneDrive", operation: "Get-DriveFile",
                    resource: "user@contoso.com/Documents", at: t(-20), result: "Denied", requestId: nil,
                    reason: "no access request of operator blake for OneDrive in tenant contoso",
                    expectedWithinGrant: false),
                Scenario.Action(
                    tenant: scenario.fabrikam, operatorAlias: "sam", workload: "Exchange",
                    operation: "Get-MailboxFolder", resource: "ceo@fabrikam.com/Inbox", at: t(-50), result: "Denied", requestId: nil,
                    reason: "no access request of operator sam for Exchange in tenant fabrikam",
                    expectedWithinGrant: false),
                Scenario.Action(
                    tenant: nil, operatorAlias: "alex", workload: "Exchange", operation: "Get-MailboxFolder",
                    resource: "user@northwind.com/Inbox", at: t(-25), result: "Denied", requestId: nil,
                    reason: "no access request of operator alex for Exchange in tenant northwind",
                    expectedWithinGrant: false),
            ] {
                action.auditId = try await Scenario.insert(action, on: db.pool)
                scenario.actions.append(action)
            }
            let whole = scenario.wholePeriod
            for tenant in ["contoso", "fabrikam", "*"] {
                let rows = try await Psql.report(
                    "actions_by_request", ReportParameters(tenant: tenant, from: whole.from, to: whole.to),
                    connection: db.connectionString)
                // Requests in the order of their first action; then the actions with no request, one group per
                // tenant by name, those of no known tenant last.
                let shown = scenario.actions.filter { tenant == "*" || $0.tenant?.name == tenant }
                let groups = Dictionary(grouping: shown, by: ActionGroup.init)
                    .map { (group: $0.key, actions: $0.value.sorted { $0.at < $1.at }) }
                    .sorted { $0.group.order(first: $0.actions[0].at) < $1.group.order(first: $1.actions[0].at) }
                let expected = groups.flatMap { group in
                    group.actions.enumerated().map { (group, $0.offset + 1, $0.element) }
                }
                #expect(try rows.map { try $0.int("audit_id") } == expected.map { Int($0.2.auditId) }, "\(tenant)")
                for (row, (group, number, action)) in zip(rows, expected) {
                    let request = scenario.requests.first { $0.id == group.group.requestId }
                    #expect(try row.text("tenant") == action.tenant?.name)
                    #expect(try row.uuid("request_id") == group.group.requestId)
                    #expect(try row.text("ticket") == request?.ticket)
                    #expect(try row.text("requester") == request?.requester)
                    #expect(try row.text("request_status") == request?.expectedStatus)
                    #expect(try row.int("action_no") == number, "\(tenant): \(row)")
                    #expect(try row.int("request_actions") == group.actions.filter { $0.result == "Succeeded" }.count)
                    #expect(
                        try row.int("request_refused") == group.actions.filter { $0.result == "Denied" }.count,
                        "\(tenant): \(row)")
                    #expect(try row.string("operator") == action.operatorAlias)
                    #expect(try row.string("operation") == action.operation)
                    #expect(try row.string("resource") == action.resource)
                    #expect(try row.string("result") == action.result)
                    #expect(try row.bool("within_grant") == action.expectedWithinGrant)
                    #expect(try row.text("reason") == action.reason)
                    #expect(try row.date("occurred_at") == action.at)
                }
            }
        }
    }

    // MARK: access_outside_grant

    @Test("access_outside_grant: no rows when every allowed action is inside its grant")
    func noAccessOutsideGrant() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            let whole = scenario.wholePeriod
            for tenant in ["*", "contoso", "fabrikam"] {
                let rows = try await Psql.report(
                    "access_outside_grant", ReportParameters(tenant: tenant, from: whole.from, to: whole.to),
                    connection: db.connectionString)
                #expect(rows.isEmpty, "\(rows)")
            }
        }
    }

    /// An allowed operator action that must raise the alarm.
    enum Anomaly: String, CaseIterable, Sendable {
        case afterWindow, beforeWindow, afterRevoke, neverApproved, stillPending, otherOperator, otherTenant,
            otherWorkload, outsideScope, scopePrefixOnly

        func action(in scenario: Scenario) -> Scenario.Action {
            let active = scenario.request("SR-1001")
            var action = Scenario.Action(
                tenant: scenario.contoso, operatorAlias: "alex", workload: "Exchange", operation: "Get-MailboxFolder",
                resource: "user@contoso.com/Inbox", at: scenario.minutes(-100), result: "Succeeded",
                requestId: active.id, reason: nil, expectedWithinGrant: false)
            func under(_ ticket: String, at offset: Int) {
                let request = scenario.request(ticket)
                action.requestId = request.id
                action.operatorAlias = request.requester
                action.workload = request.workload
                action.resource = "anything"
                action.at = scenario.minutes(offset)
            }
            switch self {
            case .afterWindow: under("SR-1002", at: -300)
            case .beforeWindow: action.at = scenario.minutes(-150)
            case .afterRevoke: under("SR-1007", at: -300)
            case .neverApproved: under("SR-1004", at: -200)
            case .stillPending: under("SR-1006", at: -60)
            case .otherOperator: action.operatorAlias = "blake"
            case .otherTenant: action.tenant = scenario.fabrikam
            case .otherWorkload: action.workload = "SharePoint"
            case .outsideScope: action.resource = "other@contoso.com/Inbox"
            case .scopePrefixOnly: action.resource = "user@contoso.com.example/Inbox"
            }
            return action
        }

        var violation: String {
            switch self {
            case .afterWindow: "after the access window"
            case .beforeWindow: "before the access window"
            case .afterRevoke: "after the grant ended (revoked by customer)"
            case .neverApproved: "request never approved (Denied)"
            case .stillPending: "request never approved (PendingCustomer)"
            case .otherOperator: "operator is not the requester alex"
            case .otherTenant: "tenant differs from the request's contoso"
            case .otherWorkload: "workload differs from the request's Exchange"
            case .outsideScope, .scopePrefixOnly: "resource outside the request's scope user@contoso.com"
            }
        }
    }

    @Test("access_outside_grant: an allowed action outside its grant is reported with why", arguments: Anomaly.allCases)
    func accessOutsideGrant(_ anomaly: Anomaly) async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            var action = anomaly.action(in: scenario)
            action.auditId = try await Scenario.insert(action, on: db.pool)
            let within = try await db.pool.query(
                "SELECT within_grant FROM lockbox.operator_actions WHERE audit_id = \(action.auditId)")
            #expect(try within.first?.decode(Bool.self, at: 0) == false)

            let whole = scenario.wholePeriod
            let rows = try await Psql.report(
                "access_outside_grant", ReportParameters(tenant: "*", from: whole.from, to: whole.to),
                connection: db.connectionString)
            #expect(rows.count == 1, "\(rows)")
            let row = try #require(rows.first)
            #expect(try row.int("audit_id") == Int(action.auditId))
            #expect(try row.string("violation") == anomaly.violation)
            #expect(try row.string("operator") == action.operatorAlias)
            #expect(try row.uuid("request_id") == action.requestId)
            #expect(try row.text("ticket") == scenario.requests.first { $0.id == action.requestId }?.ticket)

            // Outside the period, or for the other tenant, it is not listed.
            let before = try await Psql.report(
                "access_outside_grant", ReportParameters(tenant: "*", from: whole.from, to: action.at),
                connection: db.connectionString)
            #expect(before.isEmpty)
            let other = action.tenant?.name == "contoso" ? "fabrikam" : "contoso"
            let elsewhere = try await Psql.report(
                "access_outside_grant", ReportParameters(tenant: other, from: whole.from, to: whole.to),
                connection: db.connectionString)
            #expect(elsewhere.isEmpty)
        }
    }

    @Test("every report reads a tenant's name in any letter case: -v tenant=Contoso is not an empty, all-clear report")
    func tenantNameInAnyCase() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            // An alarm to find: an allowed action after its window.
            let alarm = Anomaly.afterWindow.action(in: scenario)
            _ = try await Scenario.insert(alarm, on: db.pool)
            let whole = scenario.wholePeriod
            for name in Self.reports {
                let exact = try await Psql.report(
                    name, ReportParameters(tenant: "contoso", from: whole.from, to: whole.to),
                    connection: db.connectionString)
                #expect(!exact.isEmpty, "\(name)")
                for spelling in ["Contoso", "CONTOSO"] {
                    let rows = try await Psql.report(
                        name, ReportParameters(tenant: spelling, from: whole.from, to: whole.to),
                        connection: db.connectionString)
                    #expect(rows.map(\.description) == exact.map(\.description), "\(name) with tenant=\(spelling)")
                }
            }
        }
    }

    // MARK: denied_attempts

    @Test("denied_attempts: the refused attempts of the period with the reason")
    func deniedAttempts() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            let whole = scenario.wholePeriod
            for tenant in ["contoso", "fabrikam", "*"] {
                let rows = try await Psql.report(
                    "denied_attempts", ReportParameters(tenant: tenant, from: whole.from, to: whole.to),
                    connection: db.connectionString)
                let expected = scenario.actions
                    .filter { $0.result == "Denied" && (tenant == "*" || $0.tenant?.name == tenant) }
                    .sorted { $0.at < $1.at }
                #expect(try rows.map { try $0.int("audit_id") } == expected.map { Int($0.auditId) }, "\(tenant)")
                for (row, action) in zip(rows, expected) {
                    #expect(try row.text("reason") == action.reason)
                    #expect(try row.string("operator") == action.operatorAlias)
                    #expect(try row.string("operation") == action.operation)
                    #expect(try row.string("resource") == action.resource)
                    #expect(try row.text("tenant") == action.tenant?.name)
                    #expect(try row.uuid("request_id") == action.requestId)
                    #expect(try row.string("client_ip") == "10.20.30.40")
                }
            }
        }
    }

    // MARK: approval_latency

    struct Latency: Equatable, CustomStringConvertible {
        var tenant: String
        var requests, approved, denied, expired, decisions: Int
        var median, p95: Duration?
        var description: String {
            "\(tenant): \(requests) req, \(approved)/\(denied)/\(expired), \(decisions) decided, "
                + "median \(String(describing: median)), p95 \(String(describing: p95))"
        }

        /// The row of a tenant with no request in the period.
        static func noRequests(_ tenant: String) -> Latency {
            Latency(tenant: tenant, requests: 0, approved: 0, denied: 0, expired: 0, decisions: 0, median: nil, p95: nil)
        }
    }

    /// `approval_latency` for `tenant` over `period`, run with psql on `connection`.
    static func latencies(
        _ tenant: String, _ period: (from: Date, to: Date), connection: String
    ) async throws -> [Latency] {
        let rows = try await Psql.report(
            "approval_latency", ReportParameters(tenant: tenant, from: period.from, to: period.to),
            connection: connection)
        return try rows.map { row in
            Latency(
                tenant: try row.string("tenant"), requests: try row.int("requests"),
                approved: try row.int("approved"), denied: try row.int("denied"), expired: try row.int("expired"),
                decisions: try row.int("customer_decisions"), median: try row.duration("median_time_to_decision"),
                p95: try row.duration("p95_time_to_decision"))
        }
    }

    @Test("approval_latency: per tenant, decision counts and median and p95 time from notification to decision")
    func approvalLatency() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            let actual = try await Self.latencies("*", scenario.wholePeriod, connection: db.connectionString)
            let expected = [scenario.contoso, scenario.fabrikam].map { tenant in
                let requests = scenario.requests.filter { $0.tenant.id == tenant.id }
                let latencies = requests.compactMap(\.customerLatency)
                return Latency(
                    tenant: tenant.name, requests: requests.count, approved: requests.filter(\.wasApproved).count,
                    denied: requests.filter { $0.expectedStatus == "Denied" }.count,
                    expired: requests.filter { $0.expectedStatus == "Expired" }.count, decisions: latencies.count,
                    median: percentileCont(0.5, latencies), p95: percentileCont(0.95, latencies))
            }
            #expect(actual == expected)
            // The fixture has distinct latencies, so median and p95 really differ.
            #expect(expected[0].median != expected[0].p95)
        }
    }

    @Test("approval_latency: a tenant you may see with no request in the period gets a row of zeros")
    func approvalLatencyWithoutRequests() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            // A tenant made as `lockbox tenant create` makes it, which has never had a request.
            _ = try await Broker(pool: db.pool).createTenant(name: "northwind", admin: "admin@northwind.com")
            let whole = scenario.wholePeriod
            let all = try await Self.latencies("*", whole, connection: db.connectionString)
            #expect(all.map(\.tenant) == ["contoso", "fabrikam", "northwind"])
            #expect(all.last == .noRequests("northwind"))
            #expect(
                try await Self.latencies("northwind", whole, connection: db.connectionString)
                    == [.noRequests("northwind")])

            // A period after every request of the fixture: a row of zeros for each tenant.
            let late = (from: scenario.minutes(-50), to: whole.to)
            #expect(try await Self.latencies("*", late, connection: db.connectionString)
                == [.noRequests("contoso"), .noRequests("fabrikam"), .noRequests("northwind")])
            #expect(
                try await Self.latencies("fabrikam", late, connection: db.connectionString) == [.noRequests("fabrikam")])
            // Before any request, and before northwind was created: no row for northwind.
            let early = (from: whole.from, to: scenario.minutes(-1000))
            #expect(
                try await Self.latencies("*", early, connection: db.connectionString)
                    == [.noRequests("contoso"), .noRequests("fabrikam")])
            #expect(try await Self.latencies("northwind", early, connection: db.connectionString) == [])
            // A tenant that does not exist gets no row.
            #expect(try await Self.latencies("tailspin", whole, connection: db.connectionString) == [])

            // An auditor gets the rows of its tenants only, requests or not.
            try await db.withLogins([("aud_lat", "lockbox_auditor")]) { logins in
                let auditor = logins[0]
                try await db.mapAuditor(auditor, to: scenario.fabrikam)
                let connection = db.connectionString(user: auditor.name, password: auditor.password)
                #expect(try await Self.latencies("*", late, connection: connection) == [.noRequests("fabrikam")])
                #expect(try await Self.latencies("contoso", late, connection: connection) == [])
                #expect(try await Self.latencies("northwind", whole, connection: connection) == [])
            }
        }
    }

    // MARK: operator_activity

    struct Activity: Equatable {
        var alias: String
        var requests, approvedRequests, internalApprovals, internalRejections, actions, refusals, outsideGrant: Int
    }

    @Test("operator_activity: per operator, requests, internal approvals, actions and refusals")
    func operatorActivity() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            let whole = scenario.wholePeriod
            for tenant in ["contoso", "fabrikam", "*"] {
                let rows = try await Psql.report(
                    "operator_activity", ReportParameters(tenant: tenant, from: whole.from, to: whole.to),
                    connection: db.connectionString)
                let actual = try rows.map { row in
                    Activity(
                        alias: try row.string("operator"), requests: try row.int("requests"),
                        approvedRequests: try row.int("approved_requests"),
                        internalApprovals: try row.int("internal_approvals"),
                        internalRejections: try row.int("internal_rejections"), actions: try row.int("actions"),
                        refusals: try row.int("refusals"), outsideGrant: try row.int("outside_grant"))
                }
                let requests = scenario.requests.filter { tenant == "*" || $0.tenant.name == tenant }
                let actions = scenario.actions.filter { tenant == "*" || $0.tenant?.name == tenant }
                let aliases = Set(requests.map(\.requester) + requests.compactMap(\.reviewer) + actions.map(\.operatorAlias))
                let expected = aliases.sorted().map { alias in
                    let reviewed = requests.filter { $0.reviewer == alias }
                    return Activity(
                        alias: alias, requests: requests.filter { $0.requester == alias }.count,
                        approvedRequests: requests.filter { $0.requester == alias && $0.wasApproved }.count,
                        internalApprovals: reviewed.filter { $0.storedStatus != "Rejected" }.count,
                        internalRejections: reviewed.filter { $0.storedStatus == "Rejected" }.count,
                        actions: actions.filter { $0.operatorAlias == alias && $0.result == "Succeeded" }.count,
                        refusals: actions.filter { $0.operatorAlias == alias && $0.result == "Denied" }.count,
                        outsideGrant: 0)
                }
                #expect(actual == expected, "\(tenant)")
            }
        }
    }
}
