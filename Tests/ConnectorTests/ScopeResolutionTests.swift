import ExchangeOnline
import Foundation
import LockboxCore
import OneDrive
import SharePointOnline
import Testing

/// The broker checks a resource against a grant's scope byte by byte; the mock
/// services must resolve a path segment to the item of exactly those bytes, not
/// to another item whose name is only canonically equivalent (`Café` composed,
/// U+00E9, and `Café` decomposed, `e` U+0301, are different names to the
/// database and to the scope the customer approved, but equal as Swift strings).
@Suite("Scope resolution")
struct ScopeResolutionTests {
    /// Composed `Café` (U+00E9): outside the scope.
    static let composed = "Caf\u{E9}"
    /// Decomposed `Café` (`e` U+0301): the scope.
    static let decomposed = "Cafe\u{301}"

    static func fixture(_ text: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("scope-\(UUID().uuidString).json")
        try Data(text.utf8).write(to: url)
        return url
    }

    static func invoke(
        _ gateway: Gateway, _ registry: ConnectorRegistry, _ workload: Workload, _ operation: String,
        _ arguments: [String: String]
    ) async throws -> String {
        try await json(
            gateway.broker.invoke(
                OperationAttempt(
                    operatorAlias: "alex", tenant: "contoso", workload: workload, operation: operation,
                    arguments: arguments, clientIP: Gateway.clientIP),
                registry: registry
            ).value)
    }

    @Test("Exchange: a grant on a folder reads that folder, not a sibling whose name is canonically equal")
    func exchangeFolder() async throws {
        func folder(_ name: String, _ id: String, _ subject: String) -> String {
            #"{"name": "\#(name)", "messages": [{"id": "\#(id)", "from": "bob@contoso.com", "to": [], "subject": "\#(subject)", "received": "2027-01-01T00:00:00Z", "body": "\#(subject) body", "attachments": []}]}"#
        }
        let url = try Self.fixture(
            #"{"tenants": {"contoso": {"mailboxes": [{"address": "alice@contoso.com", "displayName": "Alice", "type": "UserMailbox", "folders": ["#
                + folder(Self.composed, "msg-out", "outside-secret") + ", "
                + folder(Self.decomposed, "msg-in", "inside-scope") + "]}]}}}")
        defer { try? FileManager.default.removeItem(at: url) }
        let registry = ConnectorRegistry([ExchangeOnlineConnector(service: try ExchangeOnlineService(contentsOf: url))])
        try await Gateway.with { gateway in
            _ = try await gateway.grant(.exchange, scope: "alice@contoso.com/\(Self.decomposed)")
            let listed = try await Self.invoke(
                gateway, registry, .exchange, "Get-MailboxFolder",
                ["mailbox": "alice@contoso.com", "folder": Self.decomposed])
            #expect(listed.contains("inside-scope") && !listed.contains("outside-secret"), "\(listed)")
            let found = try await Self.invoke(
                gateway, registry, .exchange, "Search-Mailbox",
                ["mailbox": "alice@contoso.com", "folder": Self.decomposed, "query": "body"])
            #expect(found.contains("inside-scope") && !found.contains("outside-secret"), "\(found)")
            let read = try await Self.invoke(
                gateway, registry, .exchange, "Get-MailboxMessage",
                ["mailbox": "alice@contoso.com", "folder": Self.decomposed, "messageId": "msg-in"])
            #expect(read.contains("inside-scope"), "\(read)")
            // The sibling's message is not found under the scoped folder's name.
            let error = try await #require(throws: LockboxError.self) {
                _ = try await Self.invoke(
                    gateway, registry, .exchange, "Get-MailboxMessage",
                    ["mailbox": "alice@contoso.com", "folder": Self.decomposed, "messageId": "msg-out"])
            }
            #expect(error.code == .notFound && !error.message.contains("outside-secret"), "\(error.message)")
        }
    }

    @Test("SharePoint: a grant on a library reads and repairs that library, not a canonically equal sibling")
    func sharePointLibrary() async throws {
        func library(_ name: String, _ document: String) -> String {
            #"{"name": "\#(name)", "documents": [{"name": "plan.docx", "author": "a", "modified": "2027-01-01T00:00:00Z", "modifiedBy": "a", "content": "\#(document)", "permissions": [{"principal": "x@contoso.com", "role": "Read"}]}]}"#
        }
        let url = try Self.fixture(
            #"{"tenants": {"contoso": {"sites": [{"name": "finance", "title": "F", "description": "d", "owner": "alice@contoso.com", "permissions": [], "libraries": ["#
                + library(Self.composed, "outside-secret") + ", " + library(Self.decomposed, "inside-scope") + "]}]}}}")
        defer { try? FileManager.default.removeItem(at: url) }
        let registry = ConnectorRegistry([
            SharePointOnlineConnector(service: try SharePointOnlineService(contentsOf: url))
        ])
        try await Gateway.with { gateway in
            _ = try await gateway.grant(.sharePoint, scope: "finance/\(Self.decomposed)")
            let path = ["site": "finance", "library": Self.decomposed, "document": "plan.docx"]
            let read = try await Self.invoke(gateway, registry, .sharePoint, "Get-SiteDocument", path)
            #expect(read.contains("inside-scope") && !read.contains("outside-secret"), "\(read)")
            _ = try await Self.invoke(gateway, registry, .sharePoint, "Repair-SiteDocumentPermission", path)
            // The repair changed the scoped library's document, not the sibling's.
            let after = try await Self.invoke(gateway, registry, .sharePoint, "Get-SiteDocument", path)
            #expect(after.contains(#""inheritsPermissions":true"#), "\(after)")
        }
    }

    @Test("OneDrive: a grant on a folder reads and restores that folder's file, not a canonically equal sibling's")
    func oneDriveFolder() async throws {
        func folder(_ name: String, _ content: String) -> String {
            #"{"name": "\#(name)", "files": [{"name": "notes.txt", "versions": [{"id": "1.0", "modified": "2027-01-01T00:00:00Z", "modifiedBy": "a", "content": "\#(content) v1"}, {"id": "2.0", "modified": "2027-01-02T00:00:00Z", "modifiedBy": "a", "content": "\#(content) v2"}]}]}"#
        }
        let url = try Self.fixture(
            #"{"tenants": {"contoso": {"drives": [{"owner": "alice@contoso.com", "displayName": "Alice", "quotaBytes": 1000, "folders": ["#
                + folder(Self.composed, "outside-secret") + ", " + folder(Self.decomposed, "inside-scope") + "]}]}}}")
        defer { try? FileManager.default.removeItem(at: url) }
        let registry = ConnectorRegistry([OneDriveConnector(service: try OneDriveService(contentsOf: url))])
        try await Gateway.with { gateway in
            _ = try await gateway.grant(.oneDrive, scope: "alice@contoso.com/\(Self.decomposed)")
            let path = ["owner": "alice@contoso.com", "folder": Self.decomposed, "file": "notes.txt"]
            let read = try await Self.invoke(gateway, registry, .oneDrive, "Get-DriveFile", path)
            #expect(read.contains("inside-scope") && !read.contains("outside-secret"), "\(read)")
            var restore = path
            restore["version"] = "1.0"
            let restored = try await Self.invoke(gateway, registry, .oneDrive, "Restore-FileVersion", restore)
            #expect(restored.contains(#""currentVersion":"3.0""#), "\(restored)")
            let after = try await Self.invoke(gateway, registry, .oneDrive, "Get-DriveFile", path)
            #expect(after.contains("inside-scope v1") && !after.contains("outside-secret"), "\(after)")
        }
    }
}
