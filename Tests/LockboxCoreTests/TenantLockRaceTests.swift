import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Synchronization
import Testing

/// Customer decisions and revokes beside a transaction holding their tenant (a role change,
/// an auditor grant, a Customer Lockbox switch: each locks it `FOR NO KEY UPDATE`), pinned
/// with a second real session; time moves only by the injected clock.
@Suite("decisions waiting for their tenant")
struct TenantLockRaceTests {
    /// Holds tenant contoso as a role change does, until `COMMIT`.
    static func holdTenant(_ world: World) async throws -> PGConnection {
        let pin = try await world.db.connect()
        try await pin.execute(script: "BEGIN; SELECT 1 FROM lockbox.tenants WHERE name = 'contoso' FOR NO KEY UPDATE")
        return pin
    }

    @Test(
        "a customer approval that waited past the deadline (for its request or its tenant) is refused as expired",
        arguments: ["request", "tenant"])
    func approvalWaitingPastDeadline(_ held: String) async throws {
        try await World.with { world in
            let request = try await world.pendingCustomer()
            world.clock.advance(by: .seconds(12 * 3600 - 1))
            // Another session holds the request (as a cancel, a sweep or a slow decision would),
            // or the tenant (as a role change would).
            let pin: PGConnection
            if held == "request" {
                pin = try await world.db.connect()
                try await pin.execute(script: "BEGIN")
                try await pin.query("SELECT 1 FROM lockbox.requests WHERE request_id = \(request.requestId) FOR UPDATE")
            } else {
                pin = try await Self.holdTenant(world)
            }
            let decision = Task {
                try await world.broker.decide(request.requestId, decision: .approve, by: "approver@contoso.com")
            }
            try await world.waitForLockWaits(1)
            // The deadline passes while the approval waits: when it gets the lock, it is too late.
            world.clock.advance(by: .seconds(2))
            try await pin.execute(script: "COMMIT")
            await pin.close()
            let error = try await #require(throws: LockboxError.self) { _ = try await decision.value }
            #expect(error.code == .expired, "\(error.debugDescription)")
            #expect(try await world.broker.request(request.requestId).status == .expired)
            #expect(try await world.broker.sweep().expired == [request.requestId])
        }
    }

    @Test("a revoke waiting for its tenant does not hold up operations under the grant meanwhile")
    func revokeWaitingForTenantLetsOperationsRun() async throws {
        try await World.with { world in
            let grant = try await world.approved()
            let pin = try await Self.holdTenant(world)
            world.clock.advance(by: .seconds(60))
            let revoke = Task { try await world.broker.revoke(grant.requestId, by: "approver@contoso.com") }
            try await world.waitForLockWaits(1)
            // The revoke has not taken effect: an operation under the grant runs now, without
            // waiting for the administrator's transaction (nor holding up the other operators'
            // calls batched with it).
            world.clock.advance(by: .seconds(1))
            let answered = Mutex(false)
            let attempt = Task {
                defer { answered.withLock { $0 = true } }
                return try await world.authorize()
            }
            try await world.waitForLockWaits(2, orUntil: { answered.withLock { $0 } })
            #expect(answered.withLock { $0 }, "the operation waited for a revoke that waits for its tenant")
            try await pin.execute(script: "COMMIT")
            await pin.close()
            let access = try await attempt.value
            let revoked = try await revoke.value
            #expect(revoked.status == .revoked)
            let action = try #require(
                try await world.broker.auditRecords(AuditFilter(requestId: grant.requestId))
                    .first { $0.id == access.auditID })
            #expect(try #require(revoked.endedAt) >= action.occurredAt)
            #expect(try await RaceTests.actionsOutsideGrant(world) == [])
            // After the revoke, refused.
            let error = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            #expect(error.code == .accessDenied && error.message.contains("Revoked"), "\(error.message)")
        }
    }

    @Test("an internal review that waited for its tenant notifies with the time it took effect")
    func reviewWaitingForTenantNotifiesAtItsTime() async throws {
        try await World.with { world in
            let request = try await world.newRequest()
            let pin = try await Self.holdTenant(world)
            let review = Task { try await world.broker.review(request.requestId, manager: "morgan", approve: true) }
            try await world.waitForLockWaits(1)
            world.clock.advance(by: .seconds(600))
            try await pin.execute(script: "COMMIT")
            await pin.close()
            let reviewed = try await review.value
            #expect(reviewed.notifiedAt == (try world.clock.now()), "the customer's 12 hours start when it is notified")
            #expect(reviewed.customerDeadline == (try world.clock.now()).addingTimeInterval(12 * 3600))
        }
    }

    @Test(
        "a role or auditor change or Customer Lockbox switch that waited for a review or decision is dated then",
        arguments: ["add", "remove", "switch", "auditor grant", "auditor revoke"])
    func tenantChangeWaitingIsDatedWhenItTakesEffect(_ change: String) async throws {
        try await World.with { world in
            try await world.db.withLogins([("late", nil)]) { logins in
                try await Self.changeWaitingIsDatedWhenItTakesEffect(change, world, auditor: logins[0].name)
            }
        }
    }

    static func changeWaitingIsDatedWhenItTakesEffect(_ change: String, _ world: World, auditor: String) async throws {
        _ = try await world.broker.addRole(
            tenant: "contoso", upn: "second@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
        if change == "auditor revoke" { _ = try await world.broker.grantAuditor(login: auditor, tenant: "contoso") }
        // Another session holds the tenant FOR SHARE, as an internal review or a customer
        // decision does until it commits.
        let pin = try await world.db.connect()
        try await pin.execute(script: "BEGIN; SELECT 1 FROM lockbox.tenants WHERE name = 'contoso' FOR SHARE")
        let task = Task {
            switch change {
            case "add":
                _ = try await world.broker.addRole(
                    tenant: "contoso", upn: "late@contoso.com", role: .customerLockboxApprover,
                    by: "admin@contoso.com")
            case "remove":
                try await world.broker.removeRole(
                    tenant: "contoso", upn: "second@contoso.com", role: .customerLockboxApprover,
                    by: "admin@contoso.com")
            case "auditor grant":
                _ = try await world.broker.grantAuditor(login: auditor, tenant: "contoso")
            case "auditor revoke":
                try await world.broker.revokeAuditor(login: auditor, tenant: "contoso")
            default:
                _ = try await world.broker.setCustomerLockbox(
                    tenant: "contoso", enabled: false, by: "admin@contoso.com")
            }
        }
        try await world.waitForLockWaits(1)
        // The review or decision holding the tenant takes effect (and is dated) now; the change
        // that waited for it comes after it, and its record and role must say so.
        world.clock.advance(by: .seconds(60))
        let effective = try world.clock.now()
        try await pin.execute(script: "COMMIT")
        await pin.close()
        try await task.value
        let record = try #require(try await world.broker.auditRecords(AuditFilter(tenant: "contoso")).first)
        #expect(
            [
                "Add-RoleGroupMember", "Remove-RoleGroupMember", "Set-CustomerLockboxSetting", "Add-AuditorTenant",
                "Remove-AuditorTenant",
            ].contains(record.activity), "\(record.activity)")
        #expect(record.occurredAt == effective, "dated before the review or decision it waited for")
        if change == "add" {
            let role = try #require(
                try await world.broker.roles(tenant: "contoso").first { $0.upn == "late@contoso.com" })
            #expect(role.grantedAt == effective)
        }
    }
}

/// The reason given for an attempt refused after it waited for a grant that ended meanwhile.
@Suite("refusals explained after waiting")
struct RefusalAfterWaitTests {
    @Test("an attempt that waited for a revoke while another request was approved is not told it is out of scope")
    func approvedWhileWaiting() async throws {
        try await World.with { world in
            let revoked = try await world.approved()
            let other = try await world.pendingCustomer()
            world.clock.advance(by: .seconds(60))
            // A revoke of the first grant in flight: it holds the request, as Broker.revoke does.
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN")
            try await pin.query(
                "SELECT 1 FROM lockbox.requests WHERE request_id = \(revoked.requestId) FOR UPDATE")
            try await pin.query(
                """
                UPDATE lockbox.requests SET status = 'Revoked', ended_at = \(try world.clock.now()),
                    ended_reason = 'revoked by customer'
                WHERE request_id = \(revoked.requestId)
                """)
            let attempt = Task { try await world.authorize() }
            try await world.waitForLockWaits(1)
            // Meanwhile the customer approves the operator's other request, for the whole workload.
            #expect(
                try await world.broker.decide(other.requestId, decision: .approve, by: "approver@contoso.com").status
                    == .approved)
            try await pin.execute(script: "COMMIT")
            await pin.close()
            // The attempt began before that approval, so it may be refused, but not as outside a
            // scope (the whole workload) that contains its resource.
            let error = try await #require(throws: LockboxError.self) { _ = try await attempt.value }
            #expect(error.code == .accessDenied)
            #expect(!error.message.contains("outside the scope"), "\(error.message)")
            #expect(error.message.contains("try again"), "\(error.message)")
            // Tried again, it is allowed under the new grant.
            #expect(try await world.authorize().requestID == other.requestId)
        }
    }
}
