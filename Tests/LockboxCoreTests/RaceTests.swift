import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Synchronization
import Testing

/// Lifecycle races, each pinned with a second real session (``World/waitForLockWaits(_:orUntil:)``),
/// never with sleeps; time moves only by the injected clock.
@Suite("lifecycle races")
struct RaceTests {
    /// Allowed operator actions that the auditors' alarm query (access_outside_grant) would list.
    static func actionsOutsideGrant(_ world: World) async throws -> [String] {
        try await world.db.pool.query(
            """
            SELECT a.audit_id::text || ' at ' || a.occurred_at::text || ', request ' || r.status || ' ended '
                || coalesce(r.ended_at::text, '-')
            FROM lockbox.operator_actions a LEFT JOIN lockbox.access_requests r ON r.request_id = a.request_id
            WHERE a.result = 'Succeeded' AND NOT a.within_grant
            """
        ).map { try $0.decode(String.self, at: 0) }
    }

    @Test("an authorization that reaches a grant while its revoke commits is refused, not allowed after the revoke")
    func revokeBeforeInFlightAuthorization() async throws {
        try await World.with { world in
            let grant = try await world.approved()
            _ = try await world.authorize()
            // Hold the tenant, so that the revoke stops after changing the request, before its
            // audit record and its commit (as a slow client or a busy server can hold it).
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN; SELECT 1 FROM lockbox.tenants WHERE name = 'contoso' FOR UPDATE")
            world.clock.advance(by: .seconds(60))
            let revoke = Task { try await world.broker.revoke(grant.requestId, by: "approver@contoso.com") }
            try await world.waitForLockWaits(1)
            // An operation starts while the revoke is in flight: its statement began before the
            // revoke committed, and it must not be answered until it knows the revoke's outcome.
            world.clock.advance(by: .seconds(1))
            let attempt = Task { try await world.authorize() }
            try await world.waitForLockWaits(2)
            try await pin.execute(script: "COMMIT")
            await pin.close()
            #expect(try await revoke.value.status == .revoked)
            let error = try await #require(throws: LockboxError.self) { _ = try await attempt.value }
            #expect(error.code == .accessDenied && error.message.contains("Revoked"), "\(error.message)")
            #expect(try await Self.actionsOutsideGrant(world) == [])
        }
    }

    @Test("the requester's cancel of an active grant stops an authorization in flight the same way")
    func cancelBeforeInFlightAuthorization() async throws {
        try await World.with { world in
            let grant = try await world.approved()
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN; SELECT 1 FROM lockbox.tenants WHERE name = 'contoso' FOR UPDATE")
            world.clock.advance(by: .seconds(60))
            let cancel = Task { try await world.broker.decide(grant.requestId, decision: .cancel, by: "alex") }
            try await world.waitForLockWaits(1)
            world.clock.advance(by: .seconds(1))
            // Several at once, so that the writers send them as a batch (authorize_batch.sql).
            let outcomes = Task {
                await concurrentOutcomes(8) { index in
                    _ = try await world.authorize(resource: "user@contoso.com/Inbox/\(index)")
                }
            }
            try await world.waitForLockWaits(2)
            try await pin.execute(script: "COMMIT")
            await pin.close()
            #expect(try await cancel.value.status == .cancelled)
            #expect(await outcomes.value == Array(repeating: .accessDenied, count: 8))
            #expect(try await Self.actionsOutsideGrant(world) == [])
        }
    }
}
