import Foundation
import LockboxCore
import LockboxTestSupport
import Testing

/// Attempts shaped to break the audit record rather than the grant check: every
/// one must still be refused with its reason and recorded once, and none may
/// take down the other callers whose calls share its group-commit batch.
@Suite("Hostile attempts: every one is refused, said why, recorded, and harms no one else")
struct HostileInputTests {
    static let read = ExchangeOnlineSample.read

    @Test("an attempt naming no operation is refused, says why, and is recorded under its grant")
    func emptyOperation() async throws {
        try await Gateway.with { gateway in
            let grant = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            let before = try await gateway.auditRowCount()
            var attempt = gateway.attempt(.exchange, Self.read)
            attempt.operation = ""
            let error = try await #require(throws: LockboxError.self) {
                _ = try await gateway.broker.invoke(attempt, registry: gateway.registry)
            }
            #expect(error.code == .accessDenied, "\(error.debugDescription)")
            #expect(error.message.contains("operation must not be empty"), "\(error.message)")
            #expect(try await gateway.auditRowCount() == before + 1, "every attempt, allowed or refused, is recorded")
            let row = try await gateway.lastAuditRow()
            #expect(row.result == "Denied")
            #expect(row.actor == "alex")
            #expect(row.tenant == "contoso")
            #expect(row.requestID == grant.requestId)
            #expect(row.activity == "(none)")
            #expect(row.parameters["reason"] == .string("operation must not be empty"))
        }
    }

    @Test("attempts naming no operation, batched with honest ones, fail none of them")
    func emptyOperationInABatch() async throws {
        try await Gateway.with { gateway in
            var hostile = gateway.attempt(.exchange, Self.read, by: "blake")
            hostile.operation = ""
            try await Self.expectBatchedWithHonestOnes(hostile, gateway)
        }
    }

    @Test(
        "a NUL character in any field of an attempt is refused, recorded without it, never granted",
        arguments: ["operator", "tenant", "operation", "resource", "argument"])
    func nulCharacter(_ field: String) async throws {
        try await Gateway.with { gateway in
            let grant = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            var attempt = gateway.attempt(.exchange, Self.read)
            let nul = "\u{0}blake"
            switch field {
            case "operator": attempt.operatorAlias += nul
            case "tenant": attempt.tenant += nul
            case "operation": attempt.operation += nul
            case "resource":
                attempt.arguments = ["resource": Self.read.resource + nul]
            default:
                attempt.operation = "Search-Mailbox"
                attempt.arguments = ["mailbox": "alice@contoso.com", "query": "invoice" + nul]
            }
            let before = try await gateway.auditRowCount()
            let error = try await #require(throws: LockboxError.self) {
                _ = try await gateway.broker.invoke(attempt, registry: gateway.registry)
            }
            #expect(error.code == .accessDenied, "\(error.debugDescription)")
            #expect(!error.message.contains("Invoice 4471"))
            #expect(error.message.contains("must not contain a NUL character"), "\(error.message)")
            #expect(try await gateway.auditRowCount() == before + 1, "every attempt, allowed or refused, is recorded")
            let row = try await gateway.lastAuditRow()
            #expect(row.result == "Denied")
            // Recorded as given, the NUL shown as U+FFFD: not cut short into another name.
            let shown = "\u{FFFD}blake"
            switch field {
            case "operator": #expect(row.actor == "alex" + shown)
            case "tenant": #expect(row.tenant == nil, "contoso\u{0}blake is not contoso")
            case "operation": #expect(row.activity == Self.read.operation + shown)
            case "resource": #expect(row.parameters["resource"] == .string(Self.read.resource + shown))
            default:
                #expect(row.parameters["arguments"] == .object([
                    "mailbox": .string("alice@contoso.com"), "query": .string("invoice" + shown),
                ]))
                #expect(row.requestID == grant.requestId)
            }
        }
    }

    @Test("attempts with a NUL character, batched with honest ones, fail none of them")
    func nulCharacterInABatch() async throws {
        try await Gateway.with { gateway in
            var hostile = gateway.attempt(.exchange, Self.read, by: "blake")
            hostile.arguments["folder"] = "Inbox\u{0}"
            try await Self.expectBatchedWithHonestOnes(hostile, gateway)
        }
    }

    /// Runs 40 honest reads under alex's grant and 40 `hostile` attempts at once (group
    /// commit batches them together): every honest read succeeds, every hostile attempt is
    /// refused, and all 80 are recorded.
    static func expectBatchedWithHonestOnes(
        _ hostile: OperationAttempt, _ gateway: Gateway, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        _ = try await gateway.grant(.exchange, scope: "alice@contoso.com")
        let before = try await gateway.auditRowCount()
        let honest = gateway.attempt(.exchange, Self.read)
        let outcomes = await concurrentOutcomes(80) { index in
            if index.isMultiple(of: 2) {
                _ = try await gateway.broker.invoke(honest, registry: gateway.registry)
            } else {
                // Tell the hostile ones apart from honest ones by their error.
                do {
                    _ = try await gateway.broker.invoke(hostile, registry: gateway.registry)
                } catch let error as LockboxError where error.code == .accessDenied {
                    throw LockboxError(.invalidInput, "hostile attempt refused")
                }
            }
        }
        #expect(
            outcomes.filter { $0 == nil }.count == 40, "every honest read succeeded: \(outcomes)",
            sourceLocation: sourceLocation)
        #expect(
            outcomes.filter { $0 == .invalidInput }.count == 40, "every hostile attempt was refused",
            sourceLocation: sourceLocation)
        #expect(
            try await gateway.auditRowCount() == before + 80, "every attempt is recorded",
            sourceLocation: sourceLocation)
    }
}

extension HostileInputTests {
    /// A '/' followed by a combining mark is one Swift Character, so a split or a
    /// `contains("/")` on Characters does not see it; the database compares bytes.
    static let slashWithMark = "/\u{301}"

    @Test(
        "a '/' joined to a combining mark is a '/': no path segment holds one",
        arguments: Workload.builtIn.sorted())
    func slashWithCombiningMark(_ workload: Workload) async throws {
        try await Gateway.with { gateway in
            let connector = try gateway.connector(workload)
            let grant = try await gateway.grant(workload, scope: connector.sampleScope)
            // Inside the scope by its bytes, one segment more than Swift's Characters show.
            var deeper = connector.sampleRead
            deeper.path = [:]
            deeper.extra["resource"] = connector.sampleRead.resource + Self.slashWithMark + "x"
            try await gateway.expectDenied(
                gateway.attempt(workload, deeper), because: "must not contain '/'", request: .unchecked)
            // A scope holding one is refused when the request is made.
            let error = try await #require(throws: LockboxError.self) {
                _ = try await gateway.request(workload, scope: connector.sampleScope + Self.slashWithMark + "x")
            }
            #expect(error.code == .invalidInput, "\(error.debugDescription)")
            #expect(error.field == "resource")
            #expect(error.message.contains("'/'"), "\(error.message)")
            _ = grant
        }
    }
}

/// The Exchange sample read, without a connector instance.
enum ExchangeOnlineSample {
    static let read = SampleCall(
        operation: "Get-MailboxMessage",
        path: ["mailbox": "alice@contoso.com", "folder": "Inbox", "messageId": "msg-1001"],
        resource: "alice@contoso.com/Inbox/msg-1001", expect: "Invoice 4471 from Northwind Traders")
}

extension HostileInputTests {
    @Test("a Search-Mailbox query of zero width spaces is refused as blank before the check, recorded as Denied")
    func blankSearchQuery() async throws {
        try await Gateway.with { gateway in
            let grant = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            // Not white space to Swift, but to Foundation's trim, which the service used: the
            // attempt was allowed and recorded as Succeeded, then refused by the service.
            for query in ["\u{200B}", " \u{200B} "] {
                let search = SampleCall(
                    operation: "Search-Mailbox", path: ["mailbox": "alice@contoso.com"], extra: ["query": query],
                    resource: "alice@contoso.com", expect: "")
                try await gateway.expectDenied(
                    gateway.attempt(.exchange, search), because: "Search-Mailbox needs the argument query",
                    request: .unchecked, resource: "")
            }
            _ = grant
        }
    }
}
