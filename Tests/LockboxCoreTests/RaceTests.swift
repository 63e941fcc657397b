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
            // Hold the tenant's role table, so that the revoke stops once it holds the request,
            // before changing it and committing (as a slow client or a busy server can hold it).
            // (Not the tenant row: the revoke locks the tenant before the request, so that a
            // revoke waiting for its tenant holds no operation up: TenantLockRaceTests.)
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN; LOCK TABLE lockbox.tenant_roles IN ACCESS EXCLUSIVE MODE")
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

    @Test("a revoke that waited for the request records its end after the operations that ran meanwhile")
    func revokeTimeIsTakenUnderItsLock() async throws {
        try await World.with { world in
            let grant = try await world.approved()
            // Another session holds the request without blocking authorizations (as the
            // sweeper's update of it would), so that the revoke waits for it.
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN")
            try await pin.query("SELECT 1 FROM lockbox.requests WHERE request_id = \(grant.requestId) FOR NO KEY UPDATE")
            world.clock.advance(by: .seconds(60))
            let revoke = Task { try await world.broker.revoke(grant.requestId, by: "approver@contoso.com") }
            try await world.waitForLockWaits(1)
            // The grant is still active: an operation runs and is recorded while the revoke waits.
            world.clock.advance(by: .seconds(1))
            let access = try await world.authorize()
            try await pin.execute(script: "COMMIT")
            await pin.close()
            let revoked = try await revoke.value
            let ended = try #require(revoked.endedAt)
            let action = try #require(try await world.broker.auditRecords(AuditFilter(requestId: grant.requestId))
                .first { $0.id == access.auditID })
            #expect(ended >= action.occurredAt, "the revoke is recorded as ending the grant before an operation it let run")
            #expect(try await Self.actionsOutsideGrant(world) == [])
        }
    }

    @Test("an operation that comes while a revoke waits for the operations in flight queues behind it and is refused")
    func operationQueuesBehindWaitingRevoke() async throws {
        try await World.with { world in
            let grant = try await world.approved()
            world.clock.advance(by: .seconds(60))
            // An operation in flight holds the grant until it commits: this one is held at its audit
            // record, whose id another session has taken (inserted, not committed).
            let held = try await world.db.connect()
            try await held.execute(script: "BEGIN")
            try await held.query(
                """
                INSERT INTO lockbox.audit_records (id, occurred_at, record_type, user_id, actor, activity, result)
                OVERRIDING SYSTEM VALUE
                SELECT last_value + CASE WHEN is_called THEN 1 ELSE 0 END, now(), 'OperatorAction',
                    'Microsoft Operator', 'held', 'held', 'Denied'
                FROM lockbox.audit_records_id_seq
                """)
            let first = Task { try await world.authorize() }
            try await world.waitForLockWaits(1)
            // The customer revokes: it waits for the operation in flight.
            let revoke = Task { try await world.broker.revoke(grant.requestId, by: "approver@contoso.com") }
            try await world.waitForLockWaits(2)
            // Another operation comes while the revoke waits. It was let in ahead of the revoke, and
            // so was each one after it: an operator running operations at once kept the customer's
            // revoke (or their own cancel) waiting for as long as they kept it up, until its
            // statement timeout refused it with nothing done.
            world.clock.advance(by: .seconds(1))
            let answered = Mutex(false)
            let second = Task {
                defer { answered.withLock { $0 = true } }
                return try await world.authorize(resource: "user@contoso.com/Inbox/2")
            }
            try await world.waitForLockWaits(3, orUntil: { answered.withLock { $0 } })
            try await held.execute(script: "ROLLBACK")
            await held.close()
            let allowed = try await first.value
            let revoked = try await revoke.value
            #expect(revoked.status == .revoked)
            let error = try await #require(throws: LockboxError.self) { _ = try await second.value }
            #expect(error.code == .accessDenied && error.message.contains("Revoked"), "\(error.message)")
            let action = try #require(
                try await world.broker.auditRecords(AuditFilter(requestId: grant.requestId))
                    .first { $0.id == allowed.auditID })
            #expect(try #require(revoked.endedAt) >= action.occurredAt)
            #expect(try await Self.actionsOutsideGrant(world) == [])
        }
    }

    @Test(
        "a notification delivered while a decision or role removal is in flight is not recorded sent after it",
        arguments: ["decision", "removal"])
    func deliveryDuringDecisionOrRemoval(_ change: String) async throws {
        try await World.with { world in
            let request = try await world.pendingCustomer()
            // Hold the role table, so that the decision or removal stops once it has read its
            // clock, before it withdraws the request's (or the approver's) queued notifications.
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN; LOCK TABLE lockbox.tenant_roles IN ACCESS EXCLUSIVE MODE")
            world.clock.advance(by: .seconds(60))
            let task = Task {
                if change == "decision" {
                    _ = try await world.broker.decide(request.requestId, decision: .deny, by: "approver@contoso.com")
                } else {
                    try await world.broker.removeRole(
                        tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover,
                        by: "admin@contoso.com")
                }
            }
            try await world.waitForLockWaits(1)
            let changedAt = try world.clock.now()
            // A deliverer runs meanwhile, a moment later.
            world.clock.advance(by: .seconds(1))
            let sent = try await world.broker.deliverNotifications(using: DeliveryFailurePathTests.Recorder())
            try await pin.execute(script: "COMMIT")
            await pin.close()
            try await task.value
            let record = try #require(try await world.broker.auditRecords(AuditFilter(tenant: "contoso")).first)
            #expect(record.occurredAt == changedAt)
            // Each notification the change concerns is sent before it, or withdrawn by it: none
            // reads as sent to the approver after their role was removed, or as asking for a
            // decision already made.
            let concerned = try await world.broker.notifications().filter {
                change == "decision" ? $0.requestId == request.requestId : $0.recipient == "approver@contoso.com"
            }
            #expect(!concerned.isEmpty)
            for notification in concerned {
                if let sentAt = notification.sentAt {
                    #expect(sentAt <= changedAt, "sent at \(sentAt), after the \(change) at \(changedAt)")
                } else {
                    #expect(notification.withdrawnAt == changedAt)
                }
            }
            #expect(sent == 0 || change == "removal", "\(sent) sent")
        }
    }

    @Test("sweeps running at once record each expiry and completion exactly once")
    func concurrentSweeps() async throws {
        try await World.with { world in
            let pending = [try await world.pendingCustomer(), try await world.pendingCustomer(by: "blake")]
            let active = [try await world.approved(duration: .seconds(3600)), try await world.approved(by: "blake")]
            world.clock.advance(by: .seconds(12 * 3600))
            let results = try await withThrowingTaskGroup(of: Broker.SweepResult.self) { group in
                for _ in 0..<6 { group.addTask { try await world.broker.sweep() } }
                var all: [Broker.SweepResult] = []
                for try await result in group { all.append(result) }
                return all
            }
            let expired: [UUID] = results.flatMap(\.expired)
            let completed: [UUID] = results.flatMap(\.completed)
            #expect(expired.count == 2 && Set(expired) == Set(pending.map(\.requestId)))
            #expect(completed.count == 2 && Set(completed) == Set(active.map(\.requestId)))
            #expect(try await world.auditCount(activity: "Expire-AccessToCustomerDataRequest") == 2)
            #expect(try await world.auditCount(activity: "Complete-AccessToCustomerDataRequest") == 2)
        }
    }

    @Test("a sweep and a role removal withdrawing the same notifications in opposite orders do not deadlock")
    func sweepBesideRoleRemoval() async throws {
        try await World.with { world in
            // Two reviews at once: the second request's reviewer read the clock a moment before the
            // first's but queued its notifications after it, so the sweep (by deadline) meets the
            // second request first while the removal (by notification) meets the first one's first.
            // Both are held at their audit record (the table locked), so that neither has committed
            // when the other reads the tenant's latest record: the second is not dated before a
            // review that committed before it.
            let first = try await world.newRequest()
            let second = try await world.newRequest(by: "blake")
            let gate = try await world.db.connect()
            try await gate.execute(script: "BEGIN; LOCK TABLE lockbox.audit_records IN SHARE MODE")
            world.clock.advance(by: .seconds(1))
            let firstReview = Task { try await world.broker.review(first.requestId, manager: "morgan", approve: true) }
            try await world.waitForLockWaits(1)
            world.clock.advance(by: .seconds(-1))
            let secondReview = Task { try await world.broker.review(second.requestId, manager: "sam", approve: true) }
            try await world.waitForLockWaits(2)
            try await gate.execute(script: "COMMIT")
            await gate.close()
            let firstReviewed = try await firstReview.value
            let secondReviewed = try await secondReview.value
            #expect(try #require(secondReviewed.customerDeadline) < #require(firstReviewed.customerDeadline))
            let order = try await world.db.pool.query(
                """
                SELECT max(notification_id) FILTER (WHERE request_id = \(first.requestId))
                    < min(notification_id) FILTER (WHERE request_id = \(second.requestId))
                FROM lockbox.notifications
                """)
            #expect(try order.first?.decode(Bool.self, at: 0) == true, "the first's notifications are queued first")
            let ids = try await world.db.pool.query(
                """
                SELECT notification_id FROM lockbox.notifications
                WHERE request_id = \(first.requestId) AND recipient = 'admin@contoso.com'
                """)
            let held = try #require(ids.first).decode(Int64.self, at: 0)
            // A deliverer is sending the first request's notification to the administrator.
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN")
            try await pin.query("SELECT 1 FROM lockbox.notifications WHERE notification_id = \(held) FOR UPDATE")
            world.clock.advance(by: .seconds(12 * 3600 + 1))
            let sweep = Task { try await world.broker.sweep() }
            try await world.waitForLockWaits(1)
            let removed = Mutex(false)
            let removal = Task {
                defer { removed.withLock { $0 = true } }
                try await world.broker.removeRole(
                    tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover,
                    by: "admin@contoso.com")
            }
            try await world.waitForLockWaits(2, orUntil: { removed.withLock { $0 } })
            try await pin.execute(script: "COMMIT")
            await pin.close()
            let swept = try await sweep.value
            try await removal.value
            #expect(Set(swept.expired) == [first.requestId, second.requestId])
            #expect(try await world.auditCount(activity: "Expire-AccessToCustomerDataRequest") == 2)
            let notifications = try await world.broker.notifications()
            #expect(notifications.count == 4)
            #expect(notifications.allSatisfy { $0.sentAt == nil && $0.withdrawnAt != nil }, "\(notifications)")
        }
    }
}

@Suite("role removal beside a decision by that person")
struct RoleRemovalRaceTests {
    @Test("a decision by someone whose role is being removed waits for the removal and is refused as not authorized")
    func decisionDuringRemovalOfTheDecider() async throws {
        try await World.with { world in
            let decided = try await world.pendingCustomer()
            let other = try await world.pendingCustomer(by: "blake")
            // A deliverer is sending the approver's notification of the other request, so that
            // the removal stops after deleting the role, before it commits.
            let ids = try await world.db.pool.query(
                """
                SELECT notification_id FROM lockbox.notifications
                WHERE request_id = \(other.requestId) AND recipient = 'approver@contoso.com'
                """)
            let held = try #require(ids.first).decode(Int64.self, at: 0)
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN")
            try await pin.query("SELECT 1 FROM lockbox.notifications WHERE notification_id = \(held) FOR UPDATE")
            let removal = Task {
                try await world.broker.removeRole(
                    tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover,
                    by: "admin@contoso.com")
            }
            try await world.waitForLockWaits(1)
            let decision = Task {
                try await world.broker.decide(decided.requestId, decision: .approve, by: "approver@contoso.com")
            }
            try await world.waitForLockWaits(2)
            try await pin.execute(script: "COMMIT")
            await pin.close()
            _ = try await removal.value
            let error = try await #require(throws: LockboxError.self) { _ = try await decision.value }
            #expect(error.code == .notAuthorized && error.field == "as", "\(error.debugDescription)")
            #expect(try await world.broker.request(decided.requestId).status == .pendingCustomer)
            // The tenant's other approver still decides it.
            #expect(
                try await world.broker.decide(decided.requestId, decision: .approve, by: "admin@contoso.com").status
                    == .approved)
        }
    }
}

@Suite("global administrators removed at once")
struct AdministratorRemovalRaceTests {
    @Test("two sessions removing a tenant's last two global administrators at once do not leave it with none")
    func concurrentRemovalsKeepOne() async throws {
        try await World.with { world in
            _ = try await world.broker.addRole(
                tenant: "contoso", upn: "second@contoso.com", role: .globalAdministrator, by: "admin@contoso.com")
            // Two sessions as the brokers' login, as two brokers (or an administrator's SQL beside a
            // broker) would remove roles; neither goes through the broker's check.
            try await world.db.withLogins([("one", "lockbox_app"), ("two", "lockbox_app")]) { logins in
                let first = try await world.db.connect(user: logins[0].name, password: logins[0].password)
                let second = try await world.db.connect(user: logins[1].name, password: logins[1].password)
                try await first.execute(
                    script: """
                        BEGIN; DELETE FROM lockbox.tenant_roles
                        WHERE upn = 'admin@contoso.com' AND role = 'GlobalAdministrator'
                        """)
                try await second.execute(script: "BEGIN")
                let done = Mutex(false)
                let removal = Task {
                    defer { done.withLock { $0 = true } }
                    try await second.query(
                        """
                        DELETE FROM lockbox.tenant_roles
                        WHERE upn = 'second@contoso.com' AND role = 'GlobalAdministrator'
                        """)
                }
                try await world.waitForLockWaits(1, orUntil: { done.withLock { $0 } })
                try await first.execute(script: "COMMIT")
                let error = try await #require(throws: PostgresError.self) { try await removal.value }
                #expect(error.constraint == "tenant_roles_last_global_admin", "\(error.message)")
                // (A COMMIT of the failed transaction rolls it back; without the rule it removed the other.)
                try await second.execute(script: "COMMIT")
                await first.close()
                await second.close()
                let admins = try await world.broker.roles(tenant: "contoso").filter { $0.role == .globalAdministrator }
                #expect(admins.map(\.upn) == ["second@contoso.com"])
            }
        }
    }
}
