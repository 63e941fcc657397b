import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Synchronization
import Testing

/// Every command but an operation's authorization waits for the database for at most the
/// broker's statement timeout (and as long for a pooled connection), then is refused,
/// naming the wait and saying what was done: nothing, or, for a COMMIT that did not
/// answer, maybe the change.
@Suite("commands held up in the database")
struct StatementTimeoutTests {
    /// How long the broker in these tests waits for the database. What it waits for is held
    /// up by the test itself (a lock, a connection, a commit that never comes) until the
    /// command has answered, so the timeout only has to outlast what the command does before
    /// and after that wait on a busy machine. There the whole test process can go a few
    /// seconds without running a task (runs under load measured pauses of 2.6 s), and the
    /// server ends a transaction left idle for the timeout (idle-in-transaction): at 200 ms,
    /// then 1 s, a decision was refused as a lost connection instead of naming its wait.
    static let timeout: Duration = .seconds(10)

    /// Waits (polling, up to 60 s) until `answered` holds: a command past its timeout has
    /// ended long before; one that would wait for ever is found still waiting.
    static func waitUntil(_ answered: borrowing Mutex<Bool>) async throws {
        let end = ContinuousClock.now + .seconds(60)
        while !answered.withLock({ $0 }) && ContinuousClock.now < end { try await Task.sleep(for: .milliseconds(10)) }
    }

    @Test(
        "a decision or revoke held up by a lock past the statement timeout is refused, nothing done, and runs later",
        arguments: ["decide", "revoke"])
    func heldUpByLock(change: String) async throws {
        try await World.with { world in
            let request = change == "decide" ? try await world.pendingCustomer() : try await world.approved()
            let broker = Broker(pool: world.db.pool, clock: world.clock, statementTimeout: Self.timeout)
            @Sendable func attempt() async throws -> AccessRequest {
                change == "decide"
                    ? try await broker.decide(request.requestId, decision: .approve, by: "approver@contoso.com")
                    : try await broker.revoke(request.requestId, by: "approver@contoso.com")
            }
            let before = try await world.snapshot()
            // Another session holds the request, as a decision that never finishes would.
            let pin = try await world.db.connect()
            try await pin.execute(script: "BEGIN")
            try await pin.query("SELECT 1 FROM lockbox.requests WHERE request_id = \(request.requestId) FOR UPDATE")
            let answered = Mutex(false)
            let held = Task {
                defer { answered.withLock { $0 = true } }
                return try await attempt()
            }
            try await Self.waitUntil(answered)
            #expect(answered.withLock { $0 }, "the \(change) was still waiting 60 s after its 10 s timeout")
            try await pin.execute(script: "COMMIT")
            await pin.close()

            let error = try await #require(throws: LockboxError.self) { _ = try await held.value }
            #expect(error.code == .databaseUnavailable, "\(error.debugDescription)")
            #expect(
                error.message
                    == "the lockbox database did not answer within 10 s, so nothing was done: the change was "
                    + "cancelled and rolled back",
                "\(error.debugDescription)")
            #expect(try await world.snapshot() == before, "a refused \(change) changed something")
            #expect(try await world.broker.request(request.requestId).status == request.status)

            // Nothing is left behind: the same change, once the lock is gone, is made.
            let done = try await attempt()
            #expect(done.status == (change == "decide" ? .approved : .revoked))
        }
    }

    @Test("a change whose COMMIT does not answer within the statement timeout is reported as maybe made")
    func commitWithoutAnswer() async throws {
        // Commits wait for a synchronous standby that never comes. Asked to cancel, the server
        // stops waiting, commits locally and warns that the standby may not have it.
        try await StalledCommits.withCluster { cluster, admin in
            try await Migrator(migrations: TestCluster.migrationScripts).migrate(on: admin)
            let pool = PGPool(conninfo: cluster.conninfo(), maxConnections: 2)
            let broker = Broker(pool: pool, clock: ManualClock(World.start), statementTimeout: Self.timeout)
            try await StalledCommits.stall(cluster, admin: admin)
            let answered = Mutex(false)
            let creation = Task {
                defer { answered.withLock { $0 = true } }
                return try await broker.createTenant(name: "contoso", admin: "admin@contoso.com")
            }
            try await Self.waitUntil(answered)
            #expect(answered.withLock { $0 }, "the change was still waiting 60 s after its 10 s timeout")
            if !answered.withLock({ $0 }) {
                try await admin.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            }
            let error = try await #require(throws: LockboxError.self) { _ = try await creation.value }
            #expect(error.code == .databaseUnavailable, "\(error.debugDescription)")
            #expect(
                error.message
                    == "the lockbox database did not answer the commit of the change within 10 s: it may or may not "
                    + "have been made; look (e.g. request show, audit search) before trying again",
                "\(error.debugDescription)")
            // Here it was made (locally).
            let tenants = try await admin.query("SELECT count(*) FROM lockbox.tenants WHERE name = 'contoso'")
            #expect(try tenants.first!.decode(Int.self, at: 0) == 1)
            await pool.close()
        }
    }

    @Test("reads on a server that stops answering end, saying the read did not complete")
    func readsOnStalledServer() async throws {
        // The server answers each connection's session settings, then nothing more. It hangs up
        // on a client silent for 60 s: a connection made but not yet used when the test process
        // is held up must still be there for its read (at 10 s it was within reach of a busy
        // machine, and the read would fail as a lost connection instead of naming its wait).
        let server = try StalledServer(answering: 1, hangUpAfter: .seconds(60))
        defer { server.stop() }
        let pool = PGPool(conninfo: server.conninfo, maxConnections: 2)
        let broker = Broker(pool: pool, clock: ManualClock(World.start), statementTimeout: .milliseconds(200))
        let reads: [(String, @Sendable () async throws -> Void)] = [
            ("tenant list", { _ = try await broker.tenants() }),
            ("request show", { _ = try await broker.request(UUID()) }),
            ("audit search", { _ = try await broker.auditRecords() }),
        ]
        for (name, read) in reads {
            let error = try await #require(throws: LockboxError.self, "\(name)") { try await read() }
            #expect(error.code == .databaseUnavailable, "\(name): \(error.debugDescription)")
            #expect(
                error.message == "the lockbox database did not answer within 200 ms: the read did not complete",
                "\(name): \(error.debugDescription)")
        }
        // A connection that never answered is not kept for the next command.
        #expect(await pool.statistics.open == 0)
        await pool.close()
    }

    @Test("a command that waits past the statement timeout for a pooled connection is refused, nothing done")
    func leaseWait() async throws {
        try await World.with { world in
            let pool = PGPool(conninfo: world.db.conninfo, database: world.db.name, maxConnections: 1)
            let broker = Broker(pool: pool, clock: world.clock, statementTimeout: Self.timeout)
            let before = try await world.snapshot()
            // Another task holds the pool's only connection.
            let (held, release) = AsyncStream.makeStream(of: Void.self)
            let (leased, leasedNow) = AsyncStream.makeStream(of: Void.self)
            let holder = Task {
                try await pool.withConnection { _ in
                    leasedNow.yield()
                    for await _ in held { break }
                }
            }
            for await _ in leased { break }
            let answered = Mutex(false)
            let waiting = Task {
                defer { answered.withLock { $0 = true } }
                return try await broker.addOperator(alias: "casey", isManager: false)
            }
            try await Self.waitUntil(answered)
            #expect(answered.withLock { $0 }, "the command was still waiting 60 s after its 10 s timeout")
            release.yield()
            try await holder.value

            let error = try await #require(throws: LockboxError.self) { _ = try await waiting.value }
            #expect(error.code == .databaseUnavailable, "\(error.debugDescription)")
            #expect(
                error.message == "no connection to the lockbox database became free within 10 s, so nothing was done",
                "\(error.debugDescription)")
            #expect(try await world.snapshot() == before)
            // The pool is whole: the next command gets the connection.
            #expect(try await broker.addOperator(alias: "casey", isManager: false).alias == "casey")
            #expect(await pool.statistics.open == 1)
            await pool.close()
        }
    }
}
