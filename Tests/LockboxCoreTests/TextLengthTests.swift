import Foundation
import LockboxCore
import LockboxTestSupport
import Testing

/// The broker's length limits are the database's: PostgreSQL's length() counts
/// code points, not the grapheme clusters Swift's `count` does, so a text of few
/// Characters but many code points must be refused by the broker, naming the
/// field and the rule, not by a CHECK constraint.
@Suite("text limits count what the database counts")
struct TextLengthTests {
    /// "é" written as "e" and a combining acute: one Character, two code points.
    static func decomposed(_ count: Int) -> String { String(repeating: "e\u{301}", count: count) }

    @Test("a ticket, reason or scope within the limit in Characters but over it in code points is refused by field")
    func codePoints() async throws {
        try await World.with { world in
            try await world.expectRefusal(.invalidInput, field: "ticket", containing: "at most 64 characters") {
                _ = try await world.broker.createRequest(
                    NewAccessRequest(
                        requester: "alex", tenant: "contoso", workload: .exchange, ticket: Self.decomposed(40),
                        reason: "Mailbox does not sync"))
            }
            try await world.expectRefusal(.invalidInput, field: "reason", containing: "at most 2000 characters") {
                _ = try await world.broker.createRequest(
                    NewAccessRequest(
                        requester: "alex", tenant: "contoso", workload: .exchange, ticket: "SR-1",
                        reason: Self.decomposed(1500)))
            }
            let segment = Self.decomposed(200)
            try await world.expectRefusal(.invalidInput, field: "resource", containing: "at most 512 characters") {
                _ = try await world.newRequest(
                    workload: .sharePoint, resource: "finance/\(segment)/\(segment)")
            }
            // At the limit in code points, accepted.
            let request = try await world.broker.createRequest(
                NewAccessRequest(
                    requester: "alex", tenant: "contoso", workload: .exchange, ticket: Self.decomposed(32),
                    reason: "Mailbox does not sync"))
            #expect(request.ticket == Self.decomposed(32))
        }
    }
}
