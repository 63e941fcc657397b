import ArgumentParser
import Foundation
import LockboxConnectors
import LockboxCore
import LockboxPostgres
import LockboxSQL
import Synchronization

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Tell the Customer Lockbox story end to end on a throwaway PostgreSQL cluster.",
        discussion: """
            A tenant with Customer Lockbox on, a request for Exchange, the manager's approval, the \
            notification, the customer's approval, an allowed read, a refused SharePoint attempt, the \
            window ending, a denied request, an expired one, then the request history, an audit search \
            and an auditor's SQL report. Time moves on a demo clock; everything else is the real broker, \
            connectors and database. With --database-url (or LOCKBOX_DATABASE_URL or PG* variables) the \
            story is written to that database instead, which must be migrated and not have the demo's \
            tenant and operators yet.

            \(examples("lockbox demo", "lockbox demo --database-url postgres://localhost/lockbox_demo"))
            """)

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        let started = ContinuousClock.now
        let location = try DatabaseLocation.resolve(database)
        let out = StoryWriter()
        switch location {
        case .embedded:
            let directory =
                NSTemporaryDirectory()
                + "lockbox-demo-\(getpid())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
            let cluster = EmbeddedPostgres(directory: directory, durable: false)
            out.line("Customer Lockbox demo on a throwaway PostgreSQL cluster in \(directory)")
            do {
                try await cluster.start()
                try await cluster.removeWhenProcessExits(getpid())
                let admin = try await PGConnection.connect(cluster.conninfo(database: "postgres"))
                try await admin.execute(script: "CREATE DATABASE lockbox_demo")
                await admin.close()
                let pool = PGPool(conninfo: cluster.conninfo(database: "lockbox_demo"), maxConnections: 4)
                _ = try await pool.withConnection { try await Schema.migrator.migrate(on: $0) }
                try await Self.tell(pool: pool, out: out)
                await pool.close()
            } catch {
                try? await cluster.destroy()
                throw error
            }
            try? await cluster.destroy()
        case .url, .environment:
            out.line("Customer Lockbox demo on \(location.summary)")
            try await database.withSession { session in
                try await Self.requireFreshNames(session.pool)
                try await Self.tell(pool: session.pool, out: out)
            }
        }
        let elapsed = ContinuousClock.now - started
        out.line("")
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        out.line("Done in \(String(format: "%.1f", seconds)) s.")
    }

    static let tenant = "contoso"
    static let admin = "admin@contoso.com"
    static let approver = "approver@contoso.com"
    static let engineer = "alex"
    static let manager = "morgan"
    static let mailbox = "alice@contoso.com"
    static let message = "alice@contoso.com/Inbox/msg-1001"

    /// A named database must not already hold the demo's tenant (in any letter case: names are
    /// unique ignoring case, so `Contoso` would stop the story at its first step) or operators.
    static func requireFreshNames(_ pool: PGPool) async throws {
        let rows = try await pool.query(
            """
            SELECT (SELECT count(*) FROM lockbox.tenants WHERE lower(name) = lower(\(tenant)))
                + (SELECT count(*) FROM lockbox.operators WHERE alias IN (\(engineer), \(manager)))
            """)
        if try rows.first?.decode(Int.self, at: 0) ?? 0 > 0 {
            throw CLIError(
                "this database already has the demo's tenant \(tenant) or operators \(engineer), \(manager): run the "
                    + "demo on a fresh database, or without naming one (a throwaway cluster)")
        }
    }

    /// The story, through the real broker and connectors, on a demo clock.
    static func tell(pool: PGPool, out: StoryWriter) async throws {
        // Whole seconds: the database keeps microseconds, and the story's deadlines fall exactly on them.
        let clock = ManualClock(
            Date(timeIntervalSince1970: (try SystemClock().now().timeIntervalSince1970).rounded(.down)))
        let storyStart = try clock.now()
        let registry = standardConnectors()
        let broker = Broker(
            pool: pool, clock: clock, workloads: registry.workloads, scopePaths: registry.scopePaths, groupCommit: false)
        let table = Printer(format: .table)
        out.line("Demo clock starts at \(TimeText.render(try clock.now())).")

        out.step("A tenant with Customer Lockbox on, an approver, an engineer and a manager")
        _ = try await broker.createTenant(name: tenant, admin: admin)
        out.line("tenant \(tenant) created; global administrator \(admin); Customer Lockbox is off by default")
        try await broker.setCustomerLockbox(tenant: tenant, enabled: true, by: admin, clientIP: "203.0.113.10")
        out.line("\(admin) turns it on — Customer Lockbox: Off → On")
        _ = try await broker.addRole(
            tenant: tenant, upn: approver, role: .customerLockboxApprover, by: admin, clientIP: "203.0.113.10")
        out.line("\(admin) makes \(approver) a CustomerLockboxApprover")
        _ = try await broker.addOperator(alias: engineer, isManager: false)
        _ = try await broker.addOperator(alias: manager, isManager: true)
        out.line("support engineer \(engineer) and support manager \(manager) are registered")

        out.step("\(engineer) asks for access to Exchange")
        let first = try await broker.createRequest(
            NewAccessRequest(
                requester: engineer, tenant: tenant, workload: .exchange, ticket: "SR-4711",
                reason: "Outlook shows an invoice message as corrupted; need to inspect it", duration: .seconds(3600),
                resource: mailbox, clientIP: "198.51.100.7"))
        out.line(
            "request \(first.requestId.lowercased): \(first.status.rawValue), ticket \(first.ticket), "
                + "\(first.durationMinutes) min on mailbox \(mailbox)")

        out.step("\(manager) approves it internally (two-person rule)")
        let reviewed = try await broker.review(
            first.requestId, manager: manager, approve: true, clientIP: "198.51.100.8")
        out.line(
            "status \(reviewed.status.rawValue): the customer has 12 hours, until "
                + "\(TimeText.render(reviewed.customerDeadline ?? Date()))")

        out.step("The notification, as \(approver) reads it")
        let delivery = CollectingDelivery()
        try await broker.deliverNotifications(using: delivery)
        if let note = delivery.delivered.first(where: { $0.recipient == approver }) {
            out.line("To: \(note.recipient)")
            out.line("Subject: \(note.subject)")
            out.line("")
            for line in note.body.split(separator: "\n", omittingEmptySubsequences: false) { out.line("  " + line) }
        }
        out.line("(\(delivery.delivered.count) notifications sent: every global administrator and approver)")

        out.step("\(approver) approves")
        clock.advance(by: .seconds(10 * 60))
        let approved = try await broker.decide(
            first.requestId, decision: .approve, by: approver, comment: "go ahead", clientIP: "203.0.113.11")
        out.line(
            "status \(approved.status.rawValue): access window "
                + "\(TimeText.render(approved.accessStartsAt ?? Date())) – "
                + TimeText.render(approved.accessEndsAt ?? Date()))

        out.step("\(engineer) reads the message (allowed, audited)")
        clock.advance(by: .seconds(5 * 60))
        let read = OperationAttempt(
            operatorAlias: engineer, tenant: tenant, workload: .exchange, operation: "Get-MailboxMessage",
            arguments: ["resource": message], clientIP: "198.51.100.7")
        let result = try await broker.invoke(read, registry: registry)
        out.line(
            "Get-MailboxMessage \(message): allowed, audit record #\(result.access.auditID) under request "
                + result.access.requestID.lowercased)
        if case .object(let fields) = result.value {
            for key in ["from", "subject", "received"] {
                if case .string(let value)? = fields[key] { out.line("  \(key): \(value)") }
            }
        }

        out.step("The same engineer tries SharePoint (refused, audited)")
        let sharePoint = OperationAttempt(
            operatorAlias: engineer, tenant: tenant, workload: .sharePoint, operation: "Get-Site",
            arguments: ["resource": "finance"], clientIP: "198.51.100.7")
        try await out.refusal { _ = try await broker.invoke(sharePoint, registry: registry) }

        out.step("The window ends (demo clock +1 h) and the next read is refused")
        clock.advance(by: .seconds(3600))
        out.line("demo clock: \(TimeText.render(try clock.now()))")
        try await out.refusal { _ = try await broker.invoke(read, registry: registry) }

        out.step("A second request, denied by the customer")
        let second = try await broker.createRequest(
            NewAccessRequest(
                requester: engineer, tenant: tenant, workload: .exchange, ticket: "SR-4712",
                reason: "Follow-up on the corrupted message", duration: .seconds(1800), resource: mailbox))
        _ = try await broker.review(second.requestId, manager: manager, approve: true)
        let denied = try await broker.decide(
            second.requestId, decision: .deny, by: approver, comment: "use the export we sent instead")
        out.line("request \(second.requestId.lowercased): \(denied.status.rawValue) by \(denied.decidedBy ?? "?")")

        out.step("A third request, left unanswered for 12 hours")
        let third = try await broker.createRequest(
            NewAccessRequest(
                requester: engineer, tenant: tenant, workload: .exchange, ticket: "SR-4713",
                reason: "Check mailbox size quota", duration: .seconds(2 * 3600)))
        _ = try await broker.review(third.requestId, manager: manager, approve: true)
        out.line("request \(third.requestId.lowercased): PendingCustomer")
        clock.advance(by: .seconds(12 * 3600))
        out.line("demo clock +12 h: \(TimeText.render(try clock.now()))")
        try await out.refusal(prefix: "approving now is refused") {
            _ = try await broker.decide(third.requestId, decision: .approve, by: approver)
        }
        let swept = try await broker.sweep()
        out.line("sweep: \(swept.expired.count) expired, \(swept.completed.count) completed (each audited once)")

        out.step("Request history (lockbox request list --tenant \(tenant))")
        let requests = try await broker.requests(Broker.RequestFilter(tenant: tenant))
        out.text(
            table.render(
                list: requests.map(\.record), keys: AccessRequest.keys,
                columns: [
                    "requestId", "ticket", "requester", "status", "durationMinutes", "decidedBy", "endedReason",
                ]))

        out.step("Audit search (lockbox audit search --tenant \(tenant) --oldest-first)")
        let records = try await broker.auditRecords(AuditFilter(tenant: tenant, newestFirst: false))
        out.text(
            table.render(
                list: records.map(\.record), keys: AuditRecord.keys,
                columns: [
                    "id", "occurredAt", "user", "actor", "activity", "requestId", "result",
                ]))

        out.step("Auditor report: operator actions joined to their requests")
        let report = auditorReport(
            tenant: tenant, from: storyStart.addingTimeInterval(-60), to: try clock.now().addingTimeInterval(60))
        out.line("-- \(report.title)")
        out.line("")
        let rows = try await pool.query(report.query)
        let reportRecords = rows.map { row in
            Record(zip(row.columns, row.values).map { ($0, Value($1)) })
        }
        let shown = report.columns.filter(rows.columns.contains)
        out.text(table.render(list: reportRecords, keys: rows.columns, columns: shown.isEmpty ? rows.columns : shown))
    }

    /// The auditor's report joining operator actions to the requests they ran under:
    /// `sql/reports/actions_by_request.sql` with its psql variables bound as parameters,
    /// or, in a build without that report, the same join written here.
    static func auditorReport(
        tenant: String, from: Date, to: Date
    ) -> (title: String, query: PGQuery, columns: [String]) {
        let values = ["tenant": tenant, "from": TimeText.render(from), "to": TimeText.render(to)]
        let period = "tenant=\(tenant) from=\(values["from"]!) to=\(values["to"]!)"
        if let sql = LockboxSQL.reports["actions_by_request"] {
            return (
                "sql/reports/actions_by_request.sql (\(period)), through the auditor views",
                bindPsqlVariables(sql, values),
                [
                    "ticket", "request_status", "action_no", "occurred_at", "operation", "resource", "result",
                    "within_grant", "reason",
                ]
            )
        }
        let sql = """
            SELECT r.ticket, r.request_id, r.status AS request_status, a.occurred_at, a.activity AS operation,
                   a.parameters ->> 'resource' AS resource, a.result, a.parameters ->> 'reason' AS reason
            FROM lockbox.audit_records a
            JOIN lockbox.requests r ON r.request_id = a.request_id
            JOIN lockbox.tenants t ON t.tenant_id = r.tenant_id
            WHERE t.name = $1 AND a.record_type = 'OperatorAction' AND a.occurred_at >= $2 AND a.occurred_at < $3
            ORDER BY r.created_at, a.id
            """
        return ("operator actions by request (\(period))", PGQuery(sql, [tenant, from, to]), [])
    }

    /// Turns a report's psql variables (`:'name'`) into `$n` parameters bound to `values`.
    static func bindPsqlVariables(_ sql: String, _ values: [String: String]) -> PGQuery {
        var names: [String] = []
        let text = sql.replacing(/:'([A-Za-z_][A-Za-z0-9_]*)'/) { match in
            let name = String(match.output.1)
            if !names.contains(name) { names.append(name) }
            return "$\(names.firstIndex(of: name)! + 1)"
        }
        return PGQuery(text, names.map { values[$0] ?? "" })
    }
}

/// Writes the story to standard output as it happens.
final class StoryWriter: Sendable {
    private let steps = Mutex(0)

    func line(_ text: some StringProtocol) {
        FileHandle.standardOutput.write(Data((String(text) + "\n").utf8))
    }

    func text(_ text: String) {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() { self.line("  " + line) }
    }

    func step(_ title: String) {
        let number = steps.withLock { value in
            value += 1
            return value
        }
        line("")
        line("\(number). \(title)")
    }

    /// Runs `body`, which the broker must refuse, and prints the refusal; a success is a failure of the demo.
    func refusal(prefix: String = "refused", _ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as LockboxError {
            line("\(prefix): \(error.message)" + (error.auditID.map { ", audit record #\($0)" } ?? ""))
            return
        }
        throw CLIError("the demo expected a refusal (\(prefix)), but the broker allowed it")
    }
}
