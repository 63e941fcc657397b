import Foundation
import LockboxCore

/// The content of the mock Exchange Online service, as the fixture file holds it.
struct ExchangeSeed: Codable, Sendable {
    var tenants: [String: ExchangeOrganization]
}

/// One tenant's mailboxes.
struct ExchangeOrganization: Codable, Sendable {
    var mailboxes: [Mailbox]
}

struct Mailbox: Codable, Sendable {
    var address: String
    var displayName: String
    var type: String
    var folders: [MailFolder]
}

struct MailFolder: Codable, Sendable {
    var name: String
    var messages: [MailMessage]
}

struct MailMessage: Codable, Sendable {
    var id: String
    var from: String
    var to: [String]
    var subject: String
    var received: String
    var body: String
    var attachments: [MailAttachment]
}

struct MailAttachment: Codable, Sendable {
    var name: String
    var contentType: String
    var content: String
}

// MARK: What operations return

extension Mailbox {
    var content: ContentValue {
        .object([
            "address": .string(address),
            "displayName": .string(displayName),
            "type": .string(type),
            "folders": .array(
                folders.map { .object(["name": .string($0.name), "itemCount": .int($0.messages.count)]) }),
        ])
    }
}

extension MailFolder {
    func content(mailbox: String) -> ContentValue {
        .object([
            "mailbox": .string(mailbox),
            "folder": .string(name),
            "itemCount": .int(messages.count),
            "messages": .array(messages.map { $0.summary(folder: nil) }),
        ])
    }
}

extension MailMessage {
    /// Headers only, for folder listings and search results.
    func summary(folder: String?) -> ContentValue {
        var fields: [String: ContentValue] = [
            "id": .string(id),
            "from": .string(from),
            "subject": .string(subject),
            "received": .string(received),
            "hasAttachments": .bool(!attachments.isEmpty),
        ]
        if let folder { fields["folder"] = .string(folder) }
        return .object(fields)
    }

    func content(mailbox: String, folder: String) -> ContentValue {
        .object([
            "id": .string(id),
            "mailbox": .string(mailbox),
            "folder": .string(folder),
            "from": .string(from),
            "to": .array(to.map(ContentValue.string)),
            "subject": .string(subject),
            "received": .string(received),
            "body": .string(body),
            "attachments": .array(
                attachments.map {
                    .object([
                        "name": .string($0.name), "contentType": .string($0.contentType),
                        "size": .int($0.content.utf8.count),
                    ])
                }),
        ])
    }

    func matches(_ query: String) -> Bool {
        [subject, body, from].contains { $0.localizedCaseInsensitiveContains(query) }
            || attachments.contains { $0.name.localizedCaseInsensitiveContains(query) }
    }
}

extension MailAttachment {
    func content(message: String) -> ContentValue {
        .object([
            "message": .string(message),
            "name": .string(name),
            "contentType": .string(contentType),
            "size": .int(content.utf8.count),
            "content": .string(content),
        ])
    }
}
