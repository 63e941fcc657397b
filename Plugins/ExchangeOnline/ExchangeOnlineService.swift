import Foundation
import LockboxCore
import Synchronization

/// A mock Exchange Online: the mailboxes, folders, messages and attachments of
/// several tenants, in memory.
///
/// Every content method takes a ``ContentAccess``, which only the broker
/// creates after checking the operator's grant and writing the audit record,
/// and refuses with `accessDenied` unless that access was granted for exactly
/// this operation and this resource. A method reads only the tenant the access
/// names. Content that does not exist is refused with `notFound`.
public final class ExchangeOnlineService: Sendable {
    /// The folder deleted messages wait in until they are restored.
    public static let deletedItems = "Deleted Items"
    /// The folder restored messages go back to.
    public static let inbox = "Inbox"

    private let organizations: Mutex<[String: ExchangeOrganization]>

    /// Loads the deterministic seed content built into the connector
    /// (`Fixtures/exchange.json`, embedded at build time: tenants `contoso` and `fabrikam`).
    /// Stops the program if it is malformed, which is a build bug.
    public convenience init() {
        do {
            try self.init(data: try embeddedFixture("exchange.json", in: embeddedFixtures), source: "exchange.json")
        } catch {
            preconditionFailure("the built-in Exchange Online fixture Fixtures/exchange.json cannot be loaded: \(error)")
        }
    }

    /// Loads content from a fixture file shaped like `Fixtures/exchange.json`;
    /// throws if the file cannot be read or decoded.
    public convenience init(contentsOf url: URL) throws {
        try self.init(data: Data(contentsOf: url), source: url.lastPathComponent)
    }

    /// Loads content shaped like `Fixtures/exchange.json`; `source` names it in errors.
    init(data: Data, source: String) throws {
        let seed = try JSONDecoder().decode(ExchangeSeed.self, from: data)
        organizations = Mutex(seed.tenants)
    }

    // MARK: Reads

    /// `Get-Mailbox`: a mailbox's properties and folders (names and item counts).
    /// Refuses an access for any other operation or resource than `address`.
    public func mailbox(_ access: ContentAccess, address: String) throws -> ContentValue {
        try access.require(workload: .exchange, operation: ExchangeOperation.getMailbox.rawValue, resource: address)
        return try mailbox(address, in: access).content
    }

    /// `Get-MailboxFolder`: the message headers of one folder.
    /// Refuses an access for any other operation or resource than `address/folder`.
    public func folder(_ access: ContentAccess, mailbox address: String, folder: String) throws -> ContentValue {
        try access.require(
            workload: .exchange, operation: ExchangeOperation.getMailboxFolder.rawValue,
            resource: "\(address)/\(folder)")
        return try self.folder(folder, of: mailbox(address, in: access)).content(mailbox: address)
    }

    /// `Get-MailboxMessage`: one message with its body and the list of its attachments.
    /// Refuses an access for any other operation or resource than `address/folder/messageID`.
    public func message(
        _ access: ContentAccess, mailbox address: String, folder: String, messageID: String
    ) throws -> ContentValue {
        try access.require(
            workload: .exchange, operation: ExchangeOperation.getMailboxMessage.rawValue,
            resource: "\(address)/\(folder)/\(messageID)")
        let box = try mailbox(address, in: access)
        return try message(messageID, in: self.folder(folder, of: box), of: box).content(
            mailbox: address, folder: folder)
    }

    /// `Search-Mailbox`: the headers of the messages of one mailbox (or of one
    /// of its folders) whose subject, body, sender or attachment names contain
    /// `query`, case-insensitively. Refuses an empty query, and an access for
    /// any other operation or resource than `address` (or `address/folder`).
    public func search(
        _ access: ContentAccess, mailbox address: String, folder: String? = nil, query: String
    ) throws -> ContentValue {
        try access.require(
            workload: .exchange, operation: ExchangeOperation.searchMailbox.rawValue,
            resource: folder.map { "\(address)/\($0)" } ?? address)
        guard !ExchangeOperation.isBlankQuery(query) else {
            throw LockboxError(.invalidInput, "Search-Mailbox needs a non-empty query", field: "query")
        }
        let box = try mailbox(address, in: access)
        let folders = try folder.map { [try self.folder($0, of: box)] } ?? box.folders
        let matches = folders.flatMap { folder in
            folder.messages.filter { $0.matches(query) }.map { $0.summary(folder: folder.name) }
        }
        var result: [String: ContentValue] = [
            "mailbox": .string(address), "query": .string(query), "matchCount": .int(matches.count),
            "matches": .array(matches),
        ]
        if let folder { result["folder"] = .string(folder) }
        return .object(result)
    }

    /// `Get-MessageAttachment`: one attachment of a message, with its content.
    /// Refuses an access for any other operation or resource than
    /// `address/folder/messageID/name`.
    public func attachment(
        _ access: ContentAccess, mailbox address: String, folder: String, messageID: String, name: String
    ) throws -> ContentValue {
        try access.require(
            workload: .exchange, operation: ExchangeOperation.getMessageAttachment.rawValue,
            resource: "\(address)/\(folder)/\(messageID)/\(name)")
        let box = try mailbox(address, in: access)
        let message = try message(messageID, in: self.folder(folder, of: box), of: box)
        guard let attachment = message.attachments.first(where: { $0.name.sameSegment(as: name) }) else {
            throw LockboxError(
                .notFound, "message \(messageID) in \(address)/\(folder) has no attachment named \(name)",
                field: "attachment")
        }
        return attachment.content(message: messageID)
    }

    // MARK: Changes

    /// `Restore-DeletedItem`: moves the message `messageID` from Deleted Items
    /// back to the Inbox (creating the Inbox if the mailbox has none). It changes
    /// two folders of the mailbox, so the access must be for the mailbox itself:
    /// refuses an access for any other operation or resource than `address`, a
    /// message that is not in Deleted Items (`notFound`), and one whose id the
    /// Inbox already holds (`alreadyExists`); a refusal changes nothing. Safe to
    /// call concurrently: of two restores of one message, exactly one succeeds.
    public func restoreDeletedItem(_ access: ContentAccess, mailbox address: String, messageID: String) throws
        -> ContentValue
    {
        try access.require(
            workload: .exchange, operation: ExchangeOperation.restoreDeletedItem.rawValue, resource: address)
        return try organizations.withLock { organizations in
            guard var organization = organizations[access.tenant] else { throw Self.noOrganization(access.tenant) }
            guard
                let box = organization.mailboxes.firstIndex(where: { $0.address.lowercased().sameSegment(as: address) })
            else {
                throw Self.noMailbox(address, access.tenant)
            }
            var folders = organization.mailboxes[box].folders
            guard let deleted = folders.firstIndex(where: { $0.name.sameSegment(as: Self.deletedItems) }),
                let index = folders[deleted].messages.firstIndex(where: { $0.id.sameSegment(as: messageID) })
            else {
                throw LockboxError(
                    .notFound, "mailbox \(address) has no message \(messageID) in \(Self.deletedItems)",
                    field: "messageId")
            }
            let inbox = folders.firstIndex(where: { $0.name.sameSegment(as: Self.inbox) })
            if let inbox, folders[inbox].messages.contains(where: { $0.id.sameSegment(as: messageID) }) {
                throw LockboxError(
                    .alreadyExists,
                    "the \(Self.inbox) of mailbox \(address) already holds a message \(messageID): "
                        + "not restored, it stays in \(Self.deletedItems)",
                    field: "messageId")
            }
            let message = folders[deleted].messages.remove(at: index)
            if let inbox {
                folders[inbox].messages.append(message)
            } else {
                folders.append(MailFolder(name: Self.inbox, messages: [message]))
            }
            organization.mailboxes[box].folders = folders
            organizations[access.tenant] = organization
            return .object([
                "id": .string(message.id),
                "mailbox": .string(address),
                "subject": .string(message.subject),
                "restoredFrom": .string(Self.deletedItems),
                "restoredTo": .string(Self.inbox),
                "requestId": .string(access.requestID.uuidString.lowercased()),
                "auditRecord": .int(Int(access.auditID)),
            ])
        }
    }

    // MARK: Lookups

    private func mailbox(_ address: String, in access: ContentAccess) throws -> Mailbox {
        guard let organization = organizations.withLock({ $0[access.tenant] }) else {
            throw Self.noOrganization(access.tenant)
        }
        guard
            let mailbox = organization.mailboxes.first(where: { $0.address.lowercased().sameSegment(as: address) })
        else {
            throw Self.noMailbox(address, access.tenant)
        }
        return mailbox
    }

    private func folder(_ name: String, of mailbox: Mailbox) throws -> MailFolder {
        guard let folder = mailbox.folders.first(where: { $0.name.sameSegment(as: name) }) else {
            throw LockboxError(.notFound, "mailbox \(mailbox.address) has no folder named \(name)", field: "folder")
        }
        return folder
    }

    private func message(_ id: String, in folder: MailFolder, of mailbox: Mailbox) throws -> MailMessage {
        guard let message = folder.messages.first(where: { $0.id.sameSegment(as: id) }) else {
            throw LockboxError(
                .notFound, "folder \(folder.name) of mailbox \(mailbox.address) has no message \(id)",
                field: "messageId")
        }
        return message
    }

    private static func noOrganization(_ tenant: String) -> LockboxError {
        LockboxError(.notFound, "tenant \(tenant) has no Exchange Online organization", field: "tenant")
    }

    private static func noMailbox(_ address: String, _ tenant: String) -> LockboxError {
        LockboxError(.notFound, "tenant \(tenant) has no mailbox \(address)", field: "mailbox")
    }
}
