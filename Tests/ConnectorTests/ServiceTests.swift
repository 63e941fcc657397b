import ExchangeOnline
import Foundation
import LockboxConnectors
import LockboxCore
import LockboxTestSupport
import OneDrive
import SharePointOnline
import Testing

/// The mock services themselves: changes really change their content, and a
/// content method refuses an access granted for another operation or resource.
@Suite("Mock services")
struct ServiceTests {
    static let contoso = "contoso"

    // MARK: Exchange Online

    /// Restoring alice's deleted `msg-1004`: it addresses her mailbox, the message is an argument.
    static let restore = SampleCall(
        operation: "Restore-DeletedItem", path: ["mailbox": "alice@contoso.com"], extra: ["messageId": "msg-1004"],
        resource: "alice@contoso.com", expect: "Q1 vendor payment schedule")

    /// The headers of one of alice's folders, through the broker (`Get-MailboxFolder` by `operatorAlias`).
    static func aliceFolder(
        _ name: String, _ gateway: Gateway, by operatorAlias: String = "alex", registry: ConnectorRegistry? = nil
    ) async throws -> String {
        try await json(
            gateway.broker.invoke(
                gateway.attempt(
                    .exchange,
                    SampleCall(
                        operation: "Get-MailboxFolder", path: ["mailbox": "alice@contoso.com", "folder": name],
                        resource: "", expect: ""),
                    by: operatorAlias),
                registry: registry ?? gateway.registry
            ).value)
    }

    @Test("Restore-DeletedItem moves the message from Deleted Items back to the Inbox, once")
    func restoreDeletedItem() async throws {
        try await Gateway.with { gateway in
            let grant = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            func folder(_ name: String) async throws -> String { try await Self.aliceFolder(name, gateway) }
            #expect(try await folder("Deleted Items").contains("msg-1004"))
            #expect(try await !folder("Inbox").contains("msg-1004"))

            let restore = Self.restore
            let result = try await gateway.expectAllowed(
                gateway.attempt(.exchange, restore), resource: restore.resource, expect: restore.expect, request: grant)
            #expect(json(result.value).contains(#""auditRecord":\#(result.access.auditID)"#))

            #expect(try await !folder("Deleted Items").contains("msg-1004"))
            #expect(try await folder("Inbox").contains("msg-1004"))
            // The restored message reads from the Inbox now, attachment included.
            try await gateway.expectAllowed(
                gateway.attempt(
                    .exchange,
                    SampleCall(
                        operation: "Get-MessageAttachment",
                        path: [
                            "mailbox": "alice@contoso.com", "folder": "Inbox", "messageId": "msg-1004",
                            "attachment": "payment-schedule-q1.csv",
                        ], resource: "", expect: "")),
                resource: "alice@contoso.com/Inbox/msg-1004/payment-schedule-q1.csv", expect: "Adventure Works",
                request: grant)

            // A second restore is authorized and recorded, but there is nothing left to restore.
            let before = try await gateway.auditRowCount()
            let again = try await #require(throws: LockboxError.self) {
                _ = try await gateway.broker.invoke(gateway.attempt(.exchange, restore), registry: gateway.registry)
            }
            #expect(again.code == .notFound)
            #expect(try await gateway.auditRowCount() == before + 1)

            // Other tenants and other connector instances keep their own content.
            let fresh = try concrete(ExchangeOnlineConnector.self, standardConnectors())
            let freshAccess = try await gateway.broker.authorize(
                gateway.attempt(.exchange, restore), operation: "Get-MailboxFolder",
                resource: "alice@contoso.com/Deleted Items")
            let untouched = try fresh.service.folder(freshAccess, mailbox: "alice@contoso.com", folder: "Deleted Items")
            #expect(json(untouched).contains("msg-1004"))
        }
    }

    @Test("concurrent restores of one deleted message: exactly one succeeds, each attempt is recorded")
    func concurrentRestore() async throws {
        try await Gateway.with { gateway in
            _ = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            let attempt = gateway.attempt(.exchange, Self.restore)
            let before = try await gateway.auditRowCount()
            let outcomes = await concurrentOutcomes(8) { _ in
                _ = try await gateway.broker.invoke(attempt, registry: gateway.registry)
            }
            #expect(outcomes.filter { $0 == nil }.count == 1)
            #expect(outcomes.filter { $0 == .notFound }.count == 7)
            #expect(try await gateway.auditRowCount() == before + 8)
        }
    }

    @Test(
        "a grant scoped to one folder of the mailbox cannot restore: the broker refuses it, as the restore changes two",
        arguments: ["alice@contoso.com/Deleted Items", "alice@contoso.com/Inbox"])
    func restoreNeedsTheMailbox(_ scope: String) async throws {
        try await Gateway.with { gateway in
            let grant = try await gateway.grant(.exchange, scope: scope)
            // blake, granted the whole mailbox, looks at both folders before and after.
            _ = try await gateway.grant(.exchange, scope: "alice@contoso.com", by: "blake")
            let deletedItems = try await Self.aliceFolder("Deleted Items", gateway, by: "blake")
            let inbox = try await Self.aliceFolder("Inbox", gateway, by: "blake")
            #expect(deletedItems.contains("msg-1004") && !inbox.contains("msg-1004"))

            try await gateway.expectDenied(
                gateway.attempt(.exchange, Self.restore),
                because: "resource alice@contoso.com is outside the scope \(scope) of request",
                request: .request(grant), resource: "alice@contoso.com")
            let deletedItemsAfter = try await Self.aliceFolder("Deleted Items", gateway, by: "blake")
            let inboxAfter = try await Self.aliceFolder("Inbox", gateway, by: "blake")
            #expect(deletedItemsAfter == deletedItems, "Deleted Items unchanged")
            #expect(inboxAfter == inbox, "Inbox unchanged")
        }
    }

    @Test(
        "a restore is allowed under a grant on the mailbox or on the whole workload, and recorded on the mailbox",
        arguments: ["alice@contoso.com", nil] as [String?])
    func restoreIsRecordedOnTheMailbox(_ scope: String?) async throws {
        try await Gateway.with { gateway in
            let grant = try await gateway.grant(.exchange, scope: scope)
            let attempt = gateway.attempt(.exchange, Self.restore)
            let result = try await gateway.expectAllowed(
                attempt, resource: "alice@contoso.com", expect: #""restoredTo":"Inbox""#, request: grant)
            #expect(result.access.resource == "alice@contoso.com")
            let row = try await gateway.lastAuditRow()
            #expect(row.result == "Succeeded")
            #expect(row.parameters["resource"] == .string("alice@contoso.com"))
            let arguments = row.parameters["arguments"]
            #expect(arguments == .object(["mailbox": .string("alice@contoso.com"), "messageId": .string("msg-1004")]))
            // The customer's view shows the same: the mailbox, and the message among the arguments.
            let viewed = try await gateway.db.pool.query(
                """
                SELECT resource, arguments->>'messageId', result, within_grant
                FROM lockbox.operator_actions WHERE audit_id = \(result.access.auditID)
                """)
            let (resource, messageID, outcome, withinGrant) = try #require(viewed.first).decode(
                (String, String?, String, Bool?).self)
            #expect(resource == "alice@contoso.com")
            #expect(messageID == "msg-1004")
            #expect(outcome == "Succeeded" && withinGrant == true)
        }
    }

    @Test("a restore into an Inbox that already holds a message with that id is refused and changes nothing")
    func restoreIntoAnInboxHoldingTheID() async throws {
        func message(_ id: String, _ subject: String) -> String {
            #"{"id": "\#(id)", "from": "bob@contoso.com", "to": ["alice@contoso.com"], "subject": "\#(subject)", "received": "2027-01-01T00:00:00Z", "body": "\#(subject) body", "attachments": []}"#
        }
        let fixture = FileManager.default.temporaryDirectory.appendingPathComponent("restore-\(UUID().uuidString).json")
        try Data(
            (#"{"tenants": {"contoso": {"mailboxes": [{"address": "alice@contoso.com", "displayName": "Alice", "type": "UserMailbox", "folders": ["#
                + #"{"name": "Inbox", "messages": ["# + message("msg-7", "kept in the Inbox") + "]}, "
                + #"{"name": "Deleted Items", "messages": ["# + message("msg-7", "deleted twin") + "]}]}]}}}").utf8
        ).write(to: fixture)
        defer { try? FileManager.default.removeItem(at: fixture) }
        var registry = connectorsUnderTest()
        registry.register(ExchangeOnlineConnector(service: try ExchangeOnlineService(contentsOf: fixture)))

        try await Gateway.with { gateway in
            _ = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            let inbox = try await Self.aliceFolder("Inbox", gateway, registry: registry)
            let deletedItems = try await Self.aliceFolder("Deleted Items", gateway, registry: registry)
            #expect(inbox.contains("kept in the Inbox") && deletedItems.contains("deleted twin"))

            var restore = Self.restore
            restore.extra["messageId"] = "msg-7"
            let attempt = gateway.attempt(.exchange, restore)
            let error = try await #require(throws: LockboxError.self) {
                _ = try await gateway.broker.invoke(attempt, registry: registry)
            }
            #expect(error.code == .alreadyExists, "\(error.debugDescription)")
            #expect(error.field == "messageId")
            #expect(error.message.contains("already holds a message msg-7"), "\(error.message)")

            let inboxAfter = try await Self.aliceFolder("Inbox", gateway, registry: registry)
            let deletedItemsAfter = try await Self.aliceFolder("Deleted Items", gateway, registry: registry)
            #expect(inboxAfter == inbox, "the Inbox holds msg-7 once, as before")
            #expect(deletedItemsAfter == deletedItems, "msg-7 stays in Deleted Items")
        }
    }

    @Test(
        "a malformed restore is refused before anything runs, naming the argument at fault",
        arguments: [
            (["messageId": ""], "messageId", "messageId must not be empty"),
            (["messageId": "msg/1004"], "messageId", "messageId must not contain '/'"),
            (["messageId": ".."], "messageId", "messageId must be a name"),
            ([:], "messageId", "Restore-DeletedItem needs the argument messageId"),
            (
                ["messageId": "msg-1004", "folder": "Inbox"], "folder",
                "Restore-DeletedItem restores from Deleted Items only, not from Inbox"
            ),
            (
                ["messageId": "msg-1004", "resource": "alice@contoso.com/Deleted Items/msg-1004"], "resource",
                "Restore-DeletedItem addresses a resource of the form mailbox, not"
            ),
        ] as [([String: String], String, String)])
    func malformedRestore(_ arguments: [String: String], _ field: String, _ reason: String) async throws {
        var restore = Self.restore
        restore.extra = arguments
        let connector = try concrete(ExchangeOnlineConnector.self, connectorsUnderTest())
        let descriptor = ExchangeOperation.restoreDeletedItem.descriptor
        let error = try #require(throws: LockboxError.self) {
            _ = try connector.resource(for: descriptor, tenant: "contoso", arguments: restore.arguments)
        }
        #expect(error.code == .invalidInput && error.field == field, "\(error.debugDescription)")
        #expect(error.message.contains(reason), "\(error.message)")

        try await Gateway.with { gateway in
            _ = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            try await gateway.expectDenied(
                gateway.attempt(.exchange, restore), because: "invalid arguments for Restore-DeletedItem: \(reason)",
                request: .unchecked, resource: arguments["resource"] ?? "")
            let deletedItems = try await Self.aliceFolder("Deleted Items", gateway)
            #expect(deletedItems.contains("msg-1004"), "nothing was restored")
        }
    }

    @Test("an access opens its operation once: the same call again, or through a copy, is refused")
    func accessIsSingleUse() async throws {
        try await Gateway.with { gateway in
            _ = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            let service = try concrete(ExchangeOnlineConnector.self, gateway.registry).service
            let access = try await gateway.access(.exchange, "Get-Mailbox", resource: "alice@contoso.com")
            let copy = access
            #expect(json(try service.mailbox(access, address: "alice@contoso.com")).contains("Alice Martin"))
            for reused in [access, copy] {
                let error = #expect(throws: LockboxError.self) {
                    _ = try service.mailbox(reused, address: "alice@contoso.com")
                }
                #expect(error?.code == .accessDenied)
                let spent = "(audit record \(access.auditID)) has already opened its operation"
                #expect(error?.message.contains(spent) == true)
            }
            // A new authorization (a new audit record) opens it again.
            let again = try await gateway.access(.exchange, "Get-Mailbox", resource: "alice@contoso.com")
            #expect(again.auditID != access.auditID)
            #expect(json(try service.mailbox(again, address: "alice@contoso.com")).contains("Alice Martin"))
        }
    }

    @Test("an Exchange access for one operation or resource opens no other")
    func exchangeAccessIsBinding() async throws {
        try await Gateway.with { gateway in
            _ = try await gateway.grant(.exchange, scope: "alice@contoso.com")
            let service = try concrete(ExchangeOnlineConnector.self, gateway.registry).service
            let access = try await gateway.access(.exchange, "Get-Mailbox", resource: "alice@contoso.com")
            #expect(json(try service.mailbox(access, address: "alice@contoso.com")).contains("Alice Martin"))

            func expectRefused(_ body: () throws -> ContentValue, sourceLocation: SourceLocation = #_sourceLocation) {
                let error = #expect(throws: LockboxError.self, sourceLocation: sourceLocation) { _ = try body() }
                #expect(error?.code == .accessDenied, sourceLocation: sourceLocation)
            }
            expectRefused { try service.mailbox(access, address: "bob@contoso.com") }
            expectRefused { try service.folder(access, mailbox: "alice@contoso.com", folder: "Inbox") }
            expectRefused {
                try service.message(access, mailbox: "alice@contoso.com", folder: "Inbox", messageID: "msg-1001")
            }
            expectRefused { try service.search(access, mailbox: "alice@contoso.com", query: "invoice") }
            expectRefused {
                try service.attachment(
                    access, mailbox: "alice@contoso.com", folder: "Inbox", messageID: "msg-1001",
                    name: "invoice-4471.csv")
            }
            expectRefused {
                try service.restoreDeletedItem(access, mailbox: "alice@contoso.com", messageID: "msg-1004")
            }
            // A restore changes two folders: an access for the message in Deleted Items does not open it.
            let inDeletedItems = try await gateway.access(
                .exchange, "Restore-DeletedItem", resource: "alice@contoso.com/Deleted Items/msg-1004")
            expectRefused {
                try service.restoreDeletedItem(inDeletedItems, mailbox: "alice@contoso.com", messageID: "msg-1004")
            }

            // The refused restore changed nothing.
            let check = try await gateway.access(
                .exchange, "Get-MailboxFolder", resource: "alice@contoso.com/Deleted Items")
            #expect(
                json(try service.folder(check, mailbox: "alice@contoso.com", folder: "Deleted Items")).contains(
                    "msg-1004"))
        }
    }

    // MARK: SharePoint Online

    @Test("Repair-SiteDocumentPermission makes a document inherit the site's permissions again")
    func repairDocumentPermission() async throws {
        try await Gateway.with { gateway in
            let grant = try await gateway.grant(.sharePoint, scope: "finance")
            let document = ["site": "finance", "library": "Documents", "document": "q4-forecast.xlsx"]
            func read(_ operation: String, _ path: [String: String]) async throws -> String {
                try await json(
                    gateway.broker.invoke(
                        gateway.attempt(
                            .sharePoint, SampleCall(operation: operation, path: path, resource: "", expect: "")),
                        registry: gateway.registry
                    ).value)
            }
            let broken = try await read("Get-SiteDocument", document)
            #expect(broken.contains(#""inheritsPermissions":false"#))
            let former = #""principal":"sam.former@contoso.com""#
            #expect(broken.contains(former) && !broken.contains("Finance Members"))
            #expect(try await read("Get-SitePermission", ["site": "finance"]).contains("Documents/q4-forecast.xlsx"))

            let repair = SampleCall(
                operation: "Repair-SiteDocumentPermission", path: document,
                resource: "finance/Documents/q4-forecast.xlsx", expect: #""changed":true"#)
            let result = try await gateway.expectAllowed(
                gateway.attempt(.sharePoint, repair), resource: repair.resource, expect: repair.expect, request: grant)
            #expect(
                json(result.value).contains(#""removedPermissions":[{\#(former)"#),
                "the removed permissions are reported")

            let repaired = try await read("Get-SiteDocument", document)
            #expect(repaired.contains(#""inheritsPermissions":true"#))
            #expect(repaired.contains("Finance Members") && !repaired.contains(former))
            #expect(
                try await read("Get-SitePermission", ["site": "finance"]).contains(
                    #""documentsWithUniquePermissions":[]"#))
            // Repairing again is recorded and reports that nothing changed.
            try await gateway.expectAllowed(
                gateway.attempt(.sharePoint, repair), resource: repair.resource, expect: #""changed":false"#,
                request: grant)
        }
    }

    @Test("a SharePoint access for one operation or resource opens no other")
    func sharePointAccessIsBinding() async throws {
        try await Gateway.with { gateway in
            _ = try await gateway.grant(.sharePoint, scope: "finance")
            let service = try concrete(SharePointOnlineConnector.self, gateway.registry).service
            let access = try await gateway.access(.sharePoint, "Get-Site", resource: "finance")
            #expect(json(try service.site(access, site: "finance")).contains("Vendor Contracts"))
            for body: () throws -> ContentValue in [
                { try service.site(access, site: "sales") },
                { try service.permissions(access, site: "finance") },
                { try service.library(access, site: "finance", library: "Documents") },
                { try service.document(access, site: "finance", library: "Documents", document: "budget-2027.xlsx") },
                {
                    try service.repairDocumentPermission(
                        access, site: "finance", library: "Documents", document: "q4-forecast.xlsx")
                },
            ] {
                let error = #expect(throws: LockboxError.self) { _ = try body() }
                #expect(error?.code == .accessDenied)
            }
            let check = try await gateway.access(
                .sharePoint, "Get-SiteDocument", resource: "finance/Documents/q4-forecast.xlsx")
            let unchanged = try service.document(
                check, site: "finance", library: "Documents", document: "q4-forecast.xlsx")
            #expect(json(unchanged).contains(#""inheritsPermissions":false"#))
        }
    }

    // MARK: OneDrive

    @Test("Restore-FileVersion adds a new current version with the old content and keeps the history")
    func restoreFileVersion() async throws {
        try await Gateway.with { gateway in
            let grant = try await gateway.grant(.oneDrive, scope: "alice@contoso.com")
            let file = ["owner": "alice@contoso.com", "folder": "Documents", "file": "board-report.docx"]
            let resource = "alice@contoso.com/Documents/board-report.docx"
            func call(_ operation: String, _ extra: [String: String] = [:]) -> SampleCall {
                SampleCall(operation: operation, path: file, extra: extra, resource: resource, expect: "")
            }
            try await gateway.expectAllowed(
                gateway.attempt(.oneDrive, call("Get-DriveFile")), resource: resource,
                expect: #""content":"Board report, Janu","currentVersion":"3.0""#, request: grant)

            let restored = try await gateway.expectAllowed(
                gateway.attempt(.oneDrive, call("Restore-FileVersion", ["version": "2.0"])), resource: resource,
                expect: #""currentVersion":"4.0""#, request: grant)

            let current = try await gateway.expectAllowed(
                gateway.attempt(.oneDrive, call("Get-DriveFile")), resource: resource,
                expect: #""currentVersion":"4.0""#, request: grant)
            #expect(json(current.value).contains("Appendix: regional figures"))
            #expect(json(current.value).contains(#""versions":["1.0","2.0","3.0","4.0"]"#))
            let history = try await gateway.expectAllowed(
                gateway.attempt(.oneDrive, call("Get-DriveFileVersion")), resource: resource,
                expect: #""restoredFrom":"2.0""#, request: grant)
            #expect(json(history.value).contains(#""auditRecord":\#(restored.access.auditID)"#))
            #expect(json(history.value).contains(grant.requestId.lowercased))
            // The damaged version is still there.
            try await gateway.expectAllowed(
                gateway.attempt(.oneDrive, call("Get-DriveFileVersion", ["version": "3.0"])), resource: resource,
                expect: #""content":"Board report, Janu""#, request: grant)

            for (version, code) in [("4.0", LockboxError.Code.invalidInput), ("9.0", .notFound)] {
                let error = try await #require(throws: LockboxError.self) {
                    _ = try await gateway.broker.invoke(
                        gateway.attempt(.oneDrive, call("Restore-FileVersion", ["version": version])),
                        registry: gateway.registry)
                }
                #expect(error.code == code, "\(error.debugDescription)")
            }
        }
    }

    @Test("a OneDrive access for one operation or resource opens no other")
    func oneDriveAccessIsBinding() async throws {
        try await Gateway.with { gateway in
            _ = try await gateway.grant(.oneDrive, scope: "alice@contoso.com")
            let service = try concrete(OneDriveConnector.self, gateway.registry).service
            let resource = "alice@contoso.com/Documents/board-report.docx"
            let access = try await gateway.access(.oneDrive, "Get-DriveFile", resource: resource)
            let (owner, folder, file) = ("alice@contoso.com", "Documents", "board-report.docx")
            #expect(json(try service.file(access, owner: owner, folder: folder, file: file)).contains("3.0"))
            for body: () throws -> ContentValue in [
                { try service.file(access, owner: owner, folder: folder, file: "expenses-december.xlsx") },
                { try service.drive(access, owner: owner) },
                { try service.folder(access, owner: owner, folder: folder) },
                { try service.fileVersion(access, owner: owner, folder: folder, file: file, version: "1.0") },
                { try service.restoreVersion(access, owner: owner, folder: folder, file: file, version: "1.0") },
            ] {
                let error = #expect(throws: LockboxError.self) { _ = try body() }
                #expect(error?.code == .accessDenied)
            }
            // The refused restore changed nothing (seen through an authorization of its own).
            let check = try await gateway.access(.oneDrive, "Get-DriveFile", resource: resource)
            #expect(
                json(try service.file(check, owner: owner, folder: folder, file: file)).contains(
                    #""currentVersion":"3.0""#))
        }
    }

    // MARK: Fixtures

    @Test("each connector's seed content covers contoso and fabrikam and is the same every time")
    func fixtures() async throws {
        try await Gateway.with { gateway in
            for workload in [Workload.exchange, .sharePoint, .oneDrive] {
                let connector = try gateway.connector(workload)
                _ = try await gateway.grant(workload, scope: nil)
                _ = try await gateway.grant(workload, scope: nil, tenant: "fabrikam")
                var seen: [String] = []
                for (tenant, call) in [("contoso", connector.sampleRead), ("fabrikam", connector.sampleOtherTenant)] {
                    let first = try await gateway.broker.invoke(
                        gateway.attempt(workload, call, tenant: tenant), registry: gateway.registry)
                    #expect(json(first.value).contains(call.expect))
                    seen.append(json(first.value))
                }
                // A fresh registry loads identical content.
                let again = try #require(standardConnectors()[workload])
                let access = try await gateway.broker.authorize(
                    gateway.attempt(workload, connector.sampleRead), operation: connector.sampleRead.operation,
                    resource: connector.sampleRead.resource)
                #expect(json(try await again.perform(access, arguments: [:])) == seen[0])
            }
        }
    }
}
