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
            world.clock.advance(by: .seconds(-5))
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
            world.clock.set(World.start.addingTimeInterval(3595))
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

    @Test("a revoke or cancel on a clock behind an operation the grant allowed ends the grant, dated at that operation")
    func clockBehindAllowedOperation() async throws {
        try await World.with { world in
            let revoked = try await world.approved()
            let cancelled = try await world.approved(by: "blake")
            // The operators work through another broker whose clock is 3 s ahead (both within the
            // spread), an operation a second each.
            let aheadClock = ManualClock(World.start.addingTimeInterval(3))
            let ahead = Broker(pool: world.db.pool, clock: aheadClock)
            func attempt(_ alias: String) async throws -> ContentAccess {
                try await ahead.authorize(
                    OperationAttempt(
                        operatorAlias: alias, tenant: "contoso", workload: .exchange, operation: "Get-MailboxFolder",
                        arguments: ["resource": "user@contoso.com/Inbox"], clientIP: "10.9.8.7"),
                    operation: "Get-MailboxFolder", resource: "user@contoso.com/Inbox")
            }
            for _ in 0..<3 {
                world.clock.advance(by: .seconds(1))
                aheadClock.advance(by: .seconds(1))
                _ = try await attempt("alex")
                _ = try await attempt("blake")
            }
            // Ending a grant at this broker's time would date the end before the operations it
            // follows: the alarm query (operator_actions.within_grant) would list them. Refused as
            // ambiguous instead, the customer's revoke (or the requester's cancel) was refused
            // again at every try for as long as the operator kept working. The end is dated at the
            // latest operation, which it follows.
            let latest = try aheadClock.now()
            let revokedNow = try await world.broker.revoke(revoked.requestId, by: "approver@contoso.com")
            #expect(revokedNow.status == .revoked && revokedNow.endedAt == latest)
            let cancelledNow = try await world.broker.decide(cancelled.requestId, decision: .cancel, by: "blake")
            #expect(cancelledNow.status == .cancelled && cancelledNow.endedAt == latest)
            let ends = try await world.broker.auditRecords(AuditFilter(tenant: "contoso")).filter {
                $0.activity == "Revoke-AccessToCustomerDataRequest" || $0.parameters.contains("\"Cancel\"")
            }
            #expect(ends.count == 2 && ends.allSatisfy { $0.occurredAt == latest }, "\(ends)")
            #expect(try await RaceTests.actionsOutsideGrant(world) == [])
            // The grants have ended: the next operations are refused.
            for alias in ["alex", "blake"] {
                let error = try await #require(throws: LockboxError.self) { _ = try await attempt(alias) }
                #expect(error.code == .accessDenied)
            }
            // A record further ahead than the spread was stamped by a clock that was wrong (say,
            // one corrected since): it does not date the end.
            world.clock.set(latest.addingTimeInterval(1))
            let far = try await world.approved(by: "blake")
            aheadClock.set(try world.clock.now().addingTimeInterval(Broker.clockSpread + 1))
            _ = try await attempt("blake")
            let cancelledFar = try await world.broker.decide(far.requestId, decision: .cancel, by: "blake")
            #expect(cancelledFar.endedAt == (try world.clock.now()))
        }
    }

    @Test("a clock behind the tenant's last change or decision refuses tenant changes and customer decisions")
    func clockBehindTenant() async throws {
        try await World.with { world in
            try await world.db.withLogins([("ida", "lockbox_auditor")]) { logins in
                let login = logins[0].name
                let pending = try await world.pendingCustomer()
                let active = try await world.approved(by: "blake")
                let waiting = try await world.pendingCustomer(by: "blake")
                // A decision at +60 s, then a broker whose clock is 5 s behind it: each change of
                // the tenant would be dated before the decision it followed.
                world.clock.set(World.start.addingTimeInterval(60))
                _ = try await world.broker.decide(pending.requestId, decision: .approve, by: "approver@contoso.com")
                world.clock.set(World.start.addingTimeInterval(55))
                let changes: [() async throws -> Void] = [
                    {
                        _ = try await world.broker.setCustomerLockbox(
                            tenant: "contoso", enabled: false, by: "admin@contoso.com")
                    },
                    {
                        _ = try await world.broker.addRole(
                            tenant: "contoso", upn: "new@contoso.com", role: .customerLockboxApprover,
                            by: "admin@contoso.com")
                    },
                    {
                        _ = try await world.broker.removeRole(
                            tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover,
                            by: "admin@contoso.com")
                    },
                    { _ = try await world.broker.grantAuditor(login: login, tenant: "contoso") },
                    // The request's own last change (its approval at the start) is before the clock:
                    // the tenant's decision since is what refuses it.
                    { _ = try await world.broker.revoke(active.requestId, by: "approver@contoso.com") },
                ]
                for change in changes {
                    try await world.expectRefusal(
                        .clockUnavailable, containing: "before tenant contoso's last recorded change or decision"
                    ) { try await change() }
                }
                // Another tenant's history does not hold this one back.
                _ = try await world.broker.grantAuditor(login: login, tenant: "fabrikam")
                // A role added at +90 s, then a decision by a clock that reads +85 s: refused too
                // (the request itself was last changed at the start).
                world.clock.set(World.start.addingTimeInterval(90))
                _ = try await world.broker.addRole(
                    tenant: "contoso", upn: "second@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
                world.clock.set(World.start.addingTimeInterval(85))
                try await world.expectRefusal(
                    .clockUnavailable, containing: "before tenant contoso's last recorded change or decision"
                ) {
                    _ = try await world.broker.decide(waiting.requestId, decision: .approve, by: "approver@contoso.com")
                }
                // At the same instant as the latest record, or after it, each goes through.
                world.clock.set(World.start.addingTimeInterval(90))
                _ = try await world.broker.decide(waiting.requestId, decision: .deny, by: "approver@contoso.com")
                _ = try await world.broker.removeRole(
                    tenant: "contoso", upn: "second@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
                _ = try await world.broker.revoke(active.requestId, by: "approver@contoso.com")
            }
        }
    }

    // A review holds the tenant FOR SHARE and reads its Customer Lockbox setting and its roles
    // (the notifications' recipients) as the changes before it left them: dated by a clock behind
    // them, the audit log showed a review that skipped the customer before the switch it followed.
    @Test("a clock behind the tenant's last change refuses the internal review")
    func clockBehindTenantRefusesReview() async throws {
        try await World.with { world in
            let created = try await world.newRequest()
            world.clock.set(World.start.addingTimeInterval(60))
            try await world.broker.setCustomerLockbox(tenant: "contoso", enabled: false, by: "admin@contoso.com")
            world.clock.set(World.start.addingTimeInterval(55))
            try await world.expectRefusal(
                .clockUnavailable, containing: "before tenant contoso's last recorded change or decision"
            ) {
                _ = try await world.broker.review(created.requestId, manager: "morgan", approve: true)
            }
            try await world.expectRefusal(
                .clockUnavailable, containing: "before tenant contoso's last recorded change or decision"
            ) {
                _ = try await world.broker.review(created.requestId, manager: "morgan", approve: false)
            }
            // At the switch's instant it goes through, with the setting the switch left.
            world.clock.set(World.start.addingTimeInterval(60))
            let reviewed = try await world.broker.review(created.requestId, manager: "morgan", approve: true)
            #expect(reviewed.status == .approved && reviewed.reviewedAt == World.start.addingTimeInterval(60))
        }
    }

    // Cancels, request creations, sweeps and other decisions write the tenant's history without
    // holding it against a decision. One whose clock was read after the decision's, committed
    // between the decision's clock read and its reading of that history, got a decision on the
    // same, correct clock refused as ambiguous. (The table lock stands for the decision being
    // held up at that point.)
    @Test("a decision is not refused for a record that committed after it read the clock")
    func recordCommittedAfterClockRead() async throws {
        try await World.with { world in
            let pending = try await world.pendingCustomer()
            let tenant = try await world.broker.tenant(named: "contoso")
            let gate = try await world.db.connect()
            try await gate.execute(script: "BEGIN; LOCK TABLE lockbox.audit_records IN ACCESS EXCLUSIVE MODE")
            let decision = Task {
                try await world.broker.decide(pending.requestId, decision: .approve, by: "approver@contoso.com")
            }
            try await world.waitForLockWaits(1)
            // Another command, on the same clock, reads it later and commits first.
            world.clock.set(World.start.addingTimeInterval(10))
            try await gate.query(
                """
                INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, activity,
                    result)
                VALUES (\(World.start.addingTimeInterval(10)), \(tenant.tenantId), 'CustomerLockbox', 'alex', 'alex',
                    'New-AccessToCustomerDataRequest', 'Succeeded')
                """)
            try await gate.execute(script: "COMMIT")
            await gate.close()
            let approved = try await decision.value
            #expect(approved.status == .approved && approved.decidedAt == World.start.addingTimeInterval(10))
        }
    }

    // A record stamped by a clock far ahead (one corrected since, a demo's) would otherwise block
    // every change of its tenant, a customer's revoke included, until real time caught up with it.
    @Test("a record far ahead of the brokers' clock spread does not block the tenant or the request")
    func recordFarAhead() async throws {
        try await World.with { world in
            let active = try await world.approved(by: "blake")
            let pending = try await world.pendingCustomer()
            // A decision stamped an hour ahead.
            world.clock.set(World.start.addingTimeInterval(3600))
            _ = try await world.broker.decide(pending.requestId, decision: .approve, by: "approver@contoso.com")
            // Within the spread of two brokers' clocks (10 s) it is ambiguous, beyond it not.
            world.clock.set(World.start.addingTimeInterval(3600 - Broker.clockSpread))
            try await world.expectRefusal(.clockUnavailable, containing: "before tenant contoso's last recorded") {
                _ = try await world.broker.revoke(active.requestId, by: "approver@contoso.com")
            }
            world.clock.set(World.start.addingTimeInterval(60))
            let revoked = try await world.broker.revoke(active.requestId, by: "approver@contoso.com")
            #expect(revoked.status == .revoked && revoked.endedAt == World.start.addingTimeInterval(60))
            _ = try await world.broker.removeRole(
                tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            // The request decided an hour ahead can be cancelled now too.
            let cancelled = try await world.broker.decide(pending.requestId, decision: .cancel, by: "alex")
            #expect(cancelled.status == .cancelled)
        }
    }

    // A record far ahead is passed over, not every record after it: a later record within the
    // spread of the clock still makes it ambiguous.
    @Test("a record far ahead does not lift the clock-behind check against the records after it")
    func recordFarAheadThenRecent() async throws {
        try await World.with { world in
            let pending = try await world.pendingCustomer()
            let waiting = try await world.pendingCustomer(by: "blake")
            // A decision stamped an hour ahead, then a role added at +60 s by a right clock.
            world.clock.set(World.start.addingTimeInterval(3600))
            _ = try await world.broker.decide(pending.requestId, decision: .approve, by: "approver@contoso.com")
            world.clock.set(World.start.addingTimeInterval(60))
            _ = try await world.broker.addRole(
                tenant: "contoso", upn: "second@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            // A broker 5 s behind that one dates its change before the role added.
            world.clock.set(World.start.addingTimeInterval(55))
            try await world.expectRefusal(
                .clockUnavailable, containing: "before tenant contoso's last recorded change or decision"
            ) {
                _ = try await world.broker.removeRole(
                    tenant: "contoso", upn: "second@contoso.com", role: .customerLockboxApprover,
                    by: "admin@contoso.com")
            }
            try await world.expectRefusal(.clockUnavailable, containing: "before tenant contoso's last recorded") {
                _ = try await world.broker.decide(waiting.requestId, decision: .approve, by: "second@contoso.com")
            }
            world.clock.set(World.start.addingTimeInterval(60))
            let approved = try await world.broker.decide(
                waiting.requestId, decision: .approve, by: "second@contoso.com")
            #expect(approved.status == .approved)
        }
    }

    @Test("a request change far ahead does not lift the clock-behind check against its later changes")
    func requestChangeFarAheadThenRecent() async throws {
        try await World.with { world in
            let created = try await world.newRequest()
            // Reviewed an hour ahead, then approved by the customer at +60 s by a right clock.
            world.clock.set(World.start.addingTimeInterval(3600))
            _ = try await world.broker.review(created.requestId, manager: "morgan", approve: true)
            world.clock.set(World.start.addingTimeInterval(60))
            _ = try await world.broker.decide(created.requestId, decision: .approve, by: "approver@contoso.com")
            // A cancel by a clock 5 s behind would end the grant before it was approved.
            world.clock.set(World.start.addingTimeInterval(55))
            try await world.expectRefusal(.clockUnavailable, containing: "before request") {
                _ = try await world.broker.decide(created.requestId, decision: .cancel, by: "alex")
            }
            world.clock.set(World.start.addingTimeInterval(61))
            let cancelled = try await world.broker.decide(created.requestId, decision: .cancel, by: "alex")
            #expect(cancelled.status == .cancelled)
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

@Suite("failure paths: the database fails in the middle")
struct DatabaseFailurePathTests {
    /// Every broker change but operator operations, each tried while `fail` is installed.
    static func everyChange(_ world: World, login: String) async throws -> [(String, () async throws -> Void)] {
        let created = try await world.newRequest()
        let pending = try await world.pendingCustomer(by: "blake")
        let active = try await world.approved()
        _ = try await world.approved(by: "blake", duration: .seconds(60))  // for the sweep to complete
        _ = try await world.broker.grantAuditor(login: login, tenant: "fabrikam")
        world.clock.advance(by: .seconds(120))
        let broker = world.broker
        return [
            ("request create", { _ = try await world.newRequest() }),
            ("review", { _ = try await broker.review(created.requestId, manager: "morgan", approve: true) }),
            ("reject", { _ = try await broker.review(created.requestId, manager: "morgan", approve: false) }),
            ("approve", { _ = try await broker.decide(pending.requestId, decision: .approve, by: "approver@contoso.com") }),
            ("deny", { _ = try await broker.decide(pending.requestId, decision: .deny, by: "approver@contoso.com") }),
            ("cancel", { _ = try await broker.decide(active.requestId, decision: .cancel, by: "alex") }),
            ("revoke", { _ = try await broker.revoke(active.requestId, by: "approver@contoso.com") }),
            ("sweep", { _ = try await broker.sweep() }),
            ("role add", {
                _ = try await broker.addRole(
                    tenant: "contoso", upn: "new@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            }),
            ("role remove", {
                try await broker.removeRole(
                    tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover,
                    by: "admin@contoso.com")
            }),
            ("lockbox off", {
                _ = try await broker.setCustomerLockbox(tenant: "contoso", enabled: false, by: "admin@contoso.com")
            }),
            ("tenant create", { _ = try await broker.createTenant(name: "northwind", admin: "admin@northwind.com") }),
            ("operator add", { _ = try await broker.addOperator(alias: "casey", isManager: false) }),
            ("auditor grant", { _ = try await broker.grantAuditor(login: login, tenant: "contoso") }),
            ("auditor revoke", { try await broker.revokeAuditor(login: login, tenant: "fabrikam") }),
        ]
    }

    @Test("an audit insert refused, or the connection ended before it, leaves nothing and says so", arguments: [
        ("RAISE EXCEPTION 'audit refused for the test'", "refused the change, nothing was done: audit refused"),
        ("PERFORM pg_terminate_backend(pg_backend_pid())", "unavailable, nothing was done"),
    ])
    func auditFails(statement: String, message: String) async throws {
        try await World.with { world in
            let login = "lockbox_fp_\(UInt32.random(in: 0...UInt32.max))"
            try await world.db.pool.query(PGQuery("CREATE ROLE " + login + " LOGIN"))
            let changes = try await Self.everyChange(world, login: login)
            try await world.db.pool.query(
                PGQuery(
                    "CREATE FUNCTION public.fail_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN " + statement
                        + "; RETURN NEW; END $$"))
            try await world.db.pool.query(
                """
                CREATE TRIGGER fail_audit BEFORE INSERT ON lockbox.audit_records
                FOR EACH ROW EXECUTE FUNCTION public.fail_audit()
                """)
            for (name, change) in changes {
                try await world.expectRefusal(.databaseUnavailable, containing: message) {
                    do { try await change() } catch let error as LockboxError {
                        #expect(!error.message.contains("may or may not"), "\(name): \(error.message)")
                        throw error
                    }
                }
            }
            try await world.db.pool.query("DROP TRIGGER fail_audit ON lockbox.audit_records")
            try await world.db.pool.query("DELETE FROM lockbox.auditor_tenants")
            try await world.db.pool.query(PGQuery("DROP ROLE " + login))
        }
    }
}

@Suite("failure paths of notification delivery")
struct DeliveryFailurePathTests {
    final class Recorder: NotificationDelivery {
        let sent = Mutex<[String]>([])
        func deliver(_ notification: LockboxNotification) async throws {
            sent.withLock { $0.append(notification.recipient) }
        }
    }

    @Test("a delivery whose marking as sent fails says what was delivered, not that nothing was done")
    func markingFails() async throws {
        try await World.with { world in
            _ = try await world.pendingCustomer()
            try await world.db.pool.query(
                PGQuery(
                    "CREATE FUNCTION public.fail_mark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                        + "IF NEW.sent_at IS NOT NULL AND NEW.recipient = 'approver@contoso.com' THEN "
                        + "RAISE EXCEPTION 'marking refused for the test'; END IF; RETURN NEW; END $$"))
            try await world.db.pool.query(
                """
                CREATE TRIGGER fail_mark BEFORE UPDATE ON lockbox.notifications
                FOR EACH ROW EXECUTE FUNCTION public.fail_mark()
                """)
            let recorder = Recorder()
            let error = try await #require(throws: LockboxError.self) {
                try await world.broker.deliverNotifications(using: recorder)
            }
            #expect(recorder.sent.withLock { $0 } == ["admin@contoso.com", "approver@contoso.com"])
            #expect(error.code == .databaseUnavailable)
            #expect(error.message.contains("to approver@contoso.com was delivered, but"), "\(error.message)")
            #expect(error.message.contains("may be delivered again"), "\(error.message)")
            #expect(error.message.contains("1 notification before it was delivered and marked sent"), "\(error.message)")
            #expect(!error.message.contains("nothing was done"), "\(error.message)")
            let sent = try await world.broker.notifications().filter { $0.sentAt != nil }.map(\.recipient)
            #expect(sent == ["admin@contoso.com"])
        }
    }

    struct Down: Error, CustomStringConvertible {
        var description: String { "the mail relay refused the connection" }
    }

    /// Delivers to the administrator; fails for anyone else.
    final class RefusingApprover: NotificationDelivery {
        func deliver(_ notification: LockboxNotification) async throws {
            if notification.recipient != "admin@contoso.com" { throw Down() }
        }
    }

    @Test("a delivery that fails names the notification and says it stays queued")
    func deliveryFails() async throws {
        try await World.with { world in
            _ = try await world.pendingCustomer()
            let error = try await #require(throws: LockboxError.self) {
                try await world.broker.deliverNotifications(using: RefusingApprover())
            }
            #expect(error.code == .operationFailed, "\(error.debugDescription)")
            #expect(error.message.contains("to approver@contoso.com failed, so it stays queued"), "\(error.message)")
            #expect(error.message.contains("the mail relay refused the connection"), "\(error.message)")
            #expect(error.message.contains("1 notification before it was delivered and marked sent"), "\(error.message)")
            let queued = try await world.broker.notifications().filter { $0.sentAt == nil }.map(\.recipient)
            #expect(queued == ["approver@contoso.com"])
        }
    }
}
