import Foundation
import LockboxCore

/// The pre-approved operations of the Exchange Online connector, by catalogue name.
public enum ExchangeOperation: String, CaseIterable, Sendable {
    /// A mailbox's properties and folders (read).
    case getMailbox = "Get-Mailbox"
    /// The message headers of one folder (read).
    case getMailboxFolder = "Get-MailboxFolder"
    /// One message with its body (read).
    case getMailboxMessage = "Get-MailboxMessage"
    /// Messages of a mailbox or folder matching a query (read).
    case searchMailbox = "Search-Mailbox"
    /// One attachment with its content (read).
    case getMessageAttachment = "Get-MessageAttachment"
    /// Moves a message from Deleted Items back to the Inbox (change). It changes
    /// two folders, so it addresses the mailbox; the message is the argument `messageId`.
    case restoreDeletedItem = "Restore-DeletedItem"

    /// The catalogue entry: kind, what it addresses, and its required arguments.
    public var descriptor: OperationDescriptor {
        switch self {
        case .getMailbox:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a mailbox: mailbox",
                summary: "Shows a mailbox's properties and its folders with item counts.",
                requiredArguments: ["mailbox"])
        case .getMailboxFolder:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a folder of a mailbox: mailbox/folder",
                summary: "Lists the message headers (sender, subject, date) of one folder.",
                requiredArguments: ["mailbox", "folder"])
        case .getMailboxMessage:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a message in a mailbox folder: mailbox/folder/messageId",
                summary: "Shows one message with its body and the names of its attachments.",
                requiredArguments: ["mailbox", "folder", "messageId"])
        case .searchMailbox:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a mailbox or one of its folders: mailbox[/folder]",
                summary: "Finds messages whose subject, body, sender or attachment names contain the query.",
                requiredArguments: ["mailbox", "query"], optionalArguments: ["folder"])
        case .getMessageAttachment:
            OperationDescriptor(
                name: rawValue, kind: .read,
                addresses: "an attachment of a message: mailbox/folder/messageId/attachment",
                summary: "Shows one attachment of a message, with its content.",
                requiredArguments: ["mailbox", "folder", "messageId", "attachment"])
        case .restoreDeletedItem:
            OperationDescriptor(
                name: rawValue, kind: .change,
                addresses: "a mailbox: mailbox (it changes two folders; the message is the argument messageId)",
                summary:
                    "Moves a message from Deleted Items back to the Inbox, unless the Inbox already holds "
                    + "a message with that id.",
                requiredArguments: ["mailbox", "messageId"], optionalArguments: ["folder"])
        }
    }

    /// Whether a `Search-Mailbox` query is blank: only white space, by Swift's rule or by
    /// Foundation's (which also counts U+200B, zero width space). The connector refuses such a
    /// query before the broker's check, and the service by the same rule, so that no query the
    /// service refuses is first recorded as an allowed operation.
    static func isBlankQuery(_ query: String) -> Bool {
        query.allSatisfy(\.isWhitespace) || query.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }

    /// How many path segments the operation's resource has.
    var depth: ClosedRange<Int> {
        switch self {
        case .getMailbox, .restoreDeletedItem: 1...1
        case .getMailboxFolder: 2...2
        case .getMailboxMessage: 3...3
        case .searchMailbox: 1...2
        case .getMessageAttachment: 4...4
        }
    }
}

/// The Exchange Online connector (workload `Exchange`): mailboxes, folders,
/// messages and attachments of a mock service, reachable only through the broker.
///
/// Resources are `mailbox[/folder[/messageId[/attachment]]]`, e.g.
/// `alice@contoso.com/Inbox/msg-1001`; a request scoped to `alice@contoso.com`
/// covers everything in that mailbox. `Restore-DeletedItem` addresses the
/// mailbox itself, as it changes two of its folders (Deleted Items and the
/// Inbox): only a grant covering the whole mailbox allows it, and the message is
/// the argument `messageId`. Every operation also accepts the path as one
/// `resource` argument instead of the named ones.
public struct ExchangeOnlineConnector: Connector {
    /// The mock service holding the content; its methods require a ``ContentAccess``.
    public let service: ExchangeOnlineService

    private static let paths = ResourcePath(
        segmentArguments: ["mailbox", "folder", "messageId", "attachment"], firstSegment: "a mailbox address",
        firstIsAddress: true)

    /// Request scopes are checked against the same paths.
    public var scopePath: ResourcePath? { Self.paths }

    /// A connector over the deterministic seed content (`Fixtures/exchange.json`).
    public init() { self.init(service: ExchangeOnlineService()) }

    /// A connector over the given service.
    public init(service: ExchangeOnlineService) { self.service = service }

    /// `Exchange`.
    public var workload: Workload { .exchange }

    /// Five reads and one change (`Restore-DeletedItem`); nothing else runs.
    public var catalogue: [OperationDescriptor] { Self.operations }
    private static let operations = ExchangeOperation.allCases.map(\.descriptor)

    /// The path of what the operation addresses, mailbox address lower-cased
    /// (for `Restore-DeletedItem`, the mailbox). Refuses an operation outside the
    /// catalogue, a missing argument (naming it), a malformed mailbox address or
    /// path segment (`messageId` included), and `Restore-DeletedItem` from another
    /// folder than Deleted Items.
    public func resource(for operation: OperationDescriptor, tenant: String, arguments: [String: String]) throws
        -> String
    {
        guard let known = ExchangeOperation(rawValue: operation.name) else {
            throw LockboxError(
                .invalidInput, "\(operation.name) is not an Exchange Online operation", field: "operation")
        }
        var pathArguments = arguments
        if known == .restoreDeletedItem {
            // The message and the folder it comes from are arguments beside the path (the mailbox).
            pathArguments = arguments.filter { $0.key == "mailbox" || $0.key == "resource" }
            _ = try Self.restoredMessage(arguments)
        }
        if known == .searchMailbox, ExchangeOperation.isBlankQuery(arguments["query"] ?? "") {
            throw LockboxError(.invalidInput, "Search-Mailbox needs the argument query", field: "query")
        }
        let segments = try Self.paths.segments(for: known.rawValue, depth: known.depth, arguments: pathArguments)
        return segments.joined(separator: "/")
    }

    /// The id of the message `Restore-DeletedItem` restores: the argument `messageId`,
    /// checked as a path segment. Refuses a missing or malformed id, and a `folder`
    /// argument other than Deleted Items (the only folder it restores from).
    private static func restoredMessage(_ arguments: [String: String]) throws -> String {
        let operation = ExchangeOperation.restoreDeletedItem.rawValue
        guard let messageID = arguments["messageId"] else {
            throw LockboxError(
                .invalidInput, "\(operation) needs the argument messageId (the message to restore)", field: "messageId")
        }
        let checked = try paths.segment(messageID, argument: "messageId")
        if let folder = arguments["folder"] {
            let from = try paths.segment(folder, argument: "folder")
            guard from.sameSegment(as: ExchangeOnlineService.deletedItems) else {
                throw LockboxError(
                    .invalidInput,
                    "\(operation) restores from \(ExchangeOnlineService.deletedItems) only, not from \(from)",
                    field: "folder")
            }
        }
        return checked
    }

    /// Runs the operation the broker authorized, on the tenant and resource of
    /// `access` only (other arguments: `query` for `Search-Mailbox`; `messageId`,
    /// and `folder` if given, for `Restore-DeletedItem`, checked as
    /// ``resource(for:tenant:arguments:)`` checks them). Refuses an access for
    /// another workload or an operation outside the catalogue.
    public func perform(_ access: ContentAccess, arguments: [String: String]) async throws -> ContentValue {
        guard access.workload == workload, let operation = ExchangeOperation(rawValue: access.operation) else {
            throw LockboxError(
                .accessDenied,
                "the Exchange Online connector does not perform \(access.operation) on \(access.workload)")
        }
        let path = try Self.paths.split(access.resource, for: operation.rawValue, depth: operation.depth)
        switch operation {
        case .getMailbox:
            return try service.mailbox(access, address: path[0])
        case .getMailboxFolder:
            return try service.folder(access, mailbox: path[0], folder: path[1])
        case .getMailboxMessage:
            return try service.message(access, mailbox: path[0], folder: path[1], messageID: path[2])
        case .searchMailbox:
            return try service.search(
                access, mailbox: path[0], folder: path.count > 1 ? path[1] : nil, query: arguments["query"] ?? "")
        case .getMessageAttachment:
            return try service.attachment(
                access, mailbox: path[0], folder: path[1], messageID: path[2], name: path[3])
        case .restoreDeletedItem:
            return try service.restoreDeletedItem(
                access, mailbox: path[0], messageID: Self.restoredMessage(arguments))
        }
    }
}
