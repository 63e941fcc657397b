import Foundation
import LockboxCore
import LockboxPostgres
import Synchronization
import Testing

/// A clock that answers `reads` times, then can no longer be read.
final class ReadLimitedClock: LockboxClock {
    private let reads: Mutex<Int>
    private let date: Date

    init(_ date: Date, reads: Int) {
        self.date = date
        self.reads = Mutex(reads)
    }

    func now() throws -> Date {
        let left = reads.withLock { count -> Int in
            count -= 1
            return count
        }
        guard left >= 0 else { throw LockboxError(.clockUnavailable, "the clock is unavailable") }
        return date
    }
}

@Suite("failure paths of the request commands")
struct RequestFailurePathTests {
    @Test("a clock behind the request's last recorded change refuses the review, decision, cancel or revoke")
    func clockBehindRequest() async throws {
        try await World.with { world in
            let created = try await world.newRequest()
            world.clock.advance(by: .seconds(-60))
            try await world.expectRefusal(.clockUnavailable, containing: "before") {
                _ = try await world.broker.review(created.requestId, manager: "morgan", approve: true)
            }
            world.clock.set(World.start)
            let pending = try await world.broker.review(created.requestId, manager: "morgan", approve: true)
            #expect(pending.status == .pendingCustomer)
            world.clock.advance(by: .seconds(-1))
            try await world.expectRefusal(.clockUnavailable, containing: "before") {
                _ = try await world.broker.decide(created.requestId, decision: .approve, by: "approver@contoso.com")
            }
            try await world.expectRefusal(.clockUnavailable, containing: "before") {
                _ = try await world.broker.decide(created.requestId, decision: .cancel, by: "alex")
            }
            world.clock.set(World.start.addingTimeInterval(3600))
            _ = try await world.broker.decide(created.requestId, decision: .approve, by: "approver@contoso.com")
            world.clock.set(World.start.addingTimeInterval(1800))
            try await world.expectRefusal(.clockUnavailable, containing: "before") {
                _ = try await world.broker.revoke(created.requestId, by: "approver@contoso.com")
            }
            try await world.expectRefusal(.clockUnavailable, containing: "before") {
                _ = try await world.broker.decide(created.requestId, decision: .cancel, by: "alex")
            }
            world.clock.set(World.start.addingTimeInterval(3600))
            let revoked = try await world.broker.revoke(created.requestId, by: "approver@contoso.com")
            #expect(revoked.status == .revoked && revoked.endedAt == World.start.addingTimeInterval(3600))
        }
    }

    @Test("a change that committed is not reported as failed when the clock fails right after")
    func clockFailsAfterCommit() async throws {
        try await World.with { world in
            let at = World.start.addingTimeInterval(60)
            func broker() -> Broker { Broker(pool: world.db.pool, clock: ReadLimitedClock(at, reads: 1)) }
            let created = try await broker().createRequest(
                NewAccessRequest(
                    requester: "alex", tenant: "contoso", workload: .exchange, ticket: "SR-1", reason: "sync"))
            #expect(created.status == .pendingInternal)
            #expect(try await world.broker.requests(.init(createdAfter: World.start)).count == 1)
            let reviewed = try await broker().review(created.requestId, manager: "morgan", approve: true)
            #expect(reviewed.status == .pendingCustomer)
            let approved = try await broker().decide(
                created.requestId, decision: .approve, by: "approver@contoso.com")
            #expect(approved.status == .approved)
            let revoked = try await broker().revoke(created.requestId, by: "approver@contoso.com")
            #expect(revoked.status == .revoked)
        }
    }
}
