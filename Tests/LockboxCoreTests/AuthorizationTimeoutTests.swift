import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Synchronization
import Testing

/// An operation whose check is held up in the database (here by a lock another real
/// session keeps on its grant) is refused once the broker's authorization timeout has
/// passed, naming the wait, and is not recorded as allowed afterwards.
@Suite("authorizations held up in the database")
struct AuthorizationTimeoutTests {
    @Test(
        "an operation held up past the authorization timeout is refused, recorded nowhere, and the next one runs",
        arguments: [true, false])
    func heldUpOperation(groupCommit: Bool) async throws {
        try await World.with { world in
            let grant = try await world.approved()
            world.clock.advance(by: .seconds(60))
            // The held attempt waits for the test's own lock, released once it has answered: the
            // timeout only has to outlast the next operation, on a fresh connection, on a busy
            // machine (at 1 s a run could refuse it too).
            let broker = Broker(
                pool: world.db.pool, clock: world.clock, groupCommit: groupCommit,
                authorizationTimeout: .seconds(10))
            let attempt = OperationAttempt(
                operatorAlias: "alex", tenant: "contoso", workload: .exchange, operation: "Get-MailboxFolder",
                arguments: ["resource": "user@contoso.com/Inbox"], clientIP: "10.9.8.7")
            func authorize() async throws -> ContentAccess {
                try await broker.authorize(attempt, operation: "Get-MailboxFolder", resource: "user@contoso.com/Inbox")
            }
            let before = try await world.auditCount()
            // Another session holds the grant's request, as a revoke that never finishes would.
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN")
            try await pin.query("SELECT 1 FROM lockbox.requests WHERE request_id = \(grant.requestId) FOR UPDATE")
            let answered = Mutex(false)
            let held = Task {
                defer { answered.withLock { $0 = true } }
                return try await authorize()
            }
            try await world.waitForLockWaits(1)
            // Without a timeout the attempt would wait for as long as the lock is held.
            let end = ContinuousClock.now + .seconds(60)
            while !answered.withLock({ $0 }) && ContinuousClock.now < end {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(answered.withLock { $0 }, "the attempt was still waiting 60 s after its 10 s timeout")
            // The check was cancelled on the server (a timeout there, or a cancel request from
            // the broker), so it no longer waits and will not commit once the lock is gone.
            while try await world.lockWaits() > 0 && ContinuousClock.now < end {
                try await Task.sleep(for: .milliseconds(10))
            }
            try await pin.execute(script: "COMMIT")
            await pin.close()

            let error = try await #require(throws: LockboxError.self) { _ = try await held.value }
            #expect(error.code == .databaseUnavailable, "\(error.debugDescription)")
            #expect(error.message.hasPrefix("access denied: "), "\(error.message)")
            #expect(error.message.contains("within 10 s"), "\(error.message)")
            #expect(error.message.contains("so nothing was recorded or returned"), "\(error.message)")
            #expect(try await world.auditCount() == before, "a refused caller's operation was recorded")

            // The broker recovers: the next operation is checked, allowed and recorded.
            #expect(try await authorize().requestID == grant.requestId)
            #expect(try await world.auditCount() == before + 1)
        }
    }

    @Test(
        "a server that stops answering once a writer's connection is open is given up on, its set-up included",
        arguments: [true, false])
    func stallAfterConnecting(groupCommit: Bool) async throws {
        // The server answers the connection's session settings, then nothing more. It hangs up
        // long after the broker gives up (the timeout, then the cancel's grace: about 1 s), which
        // the operation would wait for otherwise; between the two, room for a busy machine.
        let server = try StalledServer(answering: 1, hangUpAfter: .seconds(60))
        defer { server.stop() }
        let pool = PGPool(conninfo: server.conninfo, maxConnections: 2)
        let broker = Broker(pool: pool, groupCommit: groupCommit, authorizationTimeout: .milliseconds(300))
        let start = ContinuousClock.now
        let error = try await #require(throws: LockboxError.self) {
            _ = try await broker.authorize(
                OperationAttempt(
                    operatorAlias: "alex", tenant: "contoso", workload: .exchange, operation: "Get-MailboxFolder",
                    arguments: ["resource": "user@contoso.com/Inbox"]),
                operation: "Get-MailboxFolder", resource: "user@contoso.com/Inbox")
        }
        let waited = ContinuousClock.now - start
        #expect(error.code == .databaseUnavailable, "\(error.debugDescription)")
        #expect(waited < .seconds(30), "the operation waited \(waited) for a server that no longer answers")
        await pool.close()
    }
}

/// A change whose COMMIT loses its connection may have been made: the broker says so.
@Suite("changes of unknown outcome")
struct CommitOutcomeTests {
    @Test("a change whose connection is lost during COMMIT is reported as maybe made, and it was")
    func lostDuringCommit() async throws {
        try await StalledCommits.withCluster { cluster, admin in
            try await Migrator(migrations: TestCluster.migrationScripts).migrate(on: admin)
            let pool = PGPool(conninfo: cluster.conninfo(), maxConnections: 2)
            let broker = Broker(pool: pool, clock: ManualClock(World.start))
            try await StalledCommits.stall(cluster, admin: admin)
            let creation = Task { try await broker.createTenant(name: "contoso", admin: "admin@contoso.com") }
            let pid = try await StalledCommits.waitingCommit(admin: admin)
            try await admin.query("SELECT pg_terminate_backend(\(pid))")
            let error = try await #require(throws: LockboxError.self) { _ = try await creation.value }
            #expect(error.code == .databaseUnavailable, "\(error.debugDescription)")
            #expect(error.message.contains("may or may not have been made"), "\(error.message)")
            #expect(!error.message.contains("nothing was done"), "\(error.message)")
            let tenants = try await admin.query("SELECT count(*) FROM lockbox.tenants WHERE name = 'contoso'")
            #expect(try tenants.first!.decode(Int.self, at: 0) == 1)
            await pool.close()
        }
    }
}
