import Foundation
import LockboxPostgres
import LockboxTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A server that does not answer: the caller is told so, and nothing waits for ever.
@Suite("waiting for the server, bounded")
struct TimeoutTests {
    @Test(
        "a statement with no answer within its timeout fails, is cancelled on the server, and says so",
        arguments: [false, true])
    func statementTimeout(prepared: Bool) async throws {
        try await TestDatabase.with { db in
            try await db.pool.query("CREATE TABLE t (i int)")
            let connection = try await db.connect()
            let error = try await #require(throws: PostgresError.self) {
                try await connection.query(
                    "INSERT INTO t SELECT 1 FROM pg_sleep(60)", prepared: prepared, timeout: .milliseconds(200))
            }
            // The server answered the cancel request: the statement ended without committing.
            #expect(error.sqlState == "57014" && !error.isConnectionFailure, "\(error.debugDescription)")
            #expect(error.message.contains("did not answer within 200 ms"), "\(error.message)")
            #expect(error.message.contains("cancelled"), "\(error.message)")
            // The connection answered, so it is still good.
            #expect(connection.isUsable)
            #expect(try await connection.query("SELECT 1", prepared: prepared).first!.decode(Int.self, at: 0) == 1)
            // The server was asked to cancel the statement: it stops sleeping and commits nothing.
            // (Closing the connection alone would leave it running, and committing, for a minute.)
            var running = -1
            for _ in 0..<1000 where running != 0 {
                running = try await db.pool.query(
                    """
                    SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND query LIKE 'INSERT INTO t SELECT 1 FROM pg_sleep%'
                      AND pid <> pg_backend_pid()
                    """
                ).first!.decode(Int.self, at: 0)
                if running != 0 { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(running == 0, "the statement still runs on the server")
            #expect(try await db.pool.query("SELECT count(*) FROM t").first!.decode(Int.self, at: 0) == 0)
            // A statement that answers in time is unaffected.
            let other = try await db.connect()
            let rows = try await other.query("SELECT 41 + 1", prepared: prepared, timeout: .seconds(10))
            #expect(try rows.first!.decode(Int.self, at: 0) == 42)
            #expect(other.isUsable)
        }
    }

    @Test("connections wait 10 s to connect, unless the conninfo, PGCONNECT_TIMEOUT or a service file says otherwise")
    func connectTimeoutSources() async throws {
        try await TestDatabase.with { db in
            let plain = try await PGConnection.connect(db.connectionString)
            #expect(await plain.option("connect_timeout") == String(PGConnection.defaultConnectTimeout))
            let own = try await PGConnection.connect(db.connectionString + " connect_timeout=7")
            #expect(await own.option("connect_timeout") == "7")
            let url = "postgresql:///x?host=%2Ftmp&connect_timeout=5"
            for conninfo in [db.connectionString, url, "somedb", nil] {
                #expect(PGConnection.appliesDefaultConnectTimeout(to: conninfo, environment: [:]), "\(conninfo ?? "nil")")
                #expect(!PGConnection.appliesDefaultConnectTimeout(to: conninfo, environment: ["PGCONNECT_TIMEOUT": "3"]))
                #expect(!PGConnection.appliesDefaultConnectTimeout(to: conninfo, environment: ["PGSERVICE": "lockbox"]))
            }
            // A service file's connect_timeout would be overridden by an explicit one: none is given.
            for conninfo in ["service=lockbox", "service=lockbox dbname=other", "postgresql:///x?service=lockbox"] {
                #expect(!PGConnection.appliesDefaultConnectTimeout(to: conninfo, environment: [:]), "\(conninfo)")
            }
            #expect(PGConnection.appliesDefaultConnectTimeout(to: "dbname=x", environment: ["PGSERVICE": ""]))
        }
    }

    @Test("a server that accepts the connection but never answers is given up on after the connect timeout")
    func connectTimeout() async throws {
        // A socket that accepts connections (the kernel queues them) and never says a word.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lockbox-mute-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let listener = try StalledServer.listeningSocket(at: directory.appendingPathComponent(".s.PGSQL.5432").path)
        defer { close(listener) }

        let error = try await #require(throws: PostgresError.self) {
            _ = try await PGConnection.connect(
                "host=\(conninfoQuote(directory.path)) port=5432 user=nobody dbname=x", connectTimeout: 2)
        }
        #expect(error.kind == .connection, "\(error)")
        #expect(error.message.contains("timeout"), "\(error.message)")
    }

    @Test("a connection is made while Dispatch's global queue is busy: waiting for its server holds no thread of it")
    func connectBesideABusyGlobalQueue() async throws {
        // Dispatch's global queue is, on Linux, the pool Swift's tasks run on: as wide as the
        // cores, grown by one thread a second while all of them are blocked. A connection that
        // waited for its server there (up to the connect timeout) held one, and two at once held
        // up every task of the process. Here the queue is kept busy (100 items waiting, more than
        // it grows to in the 60 s the test waits): a connection made on it does not start in that
        // time; one made on a queue of its own starts at once (within 30 s on the busiest machine).
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("lockbox-mute-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let listener = try StalledServer.listeningSocket(at: directory.appendingPathComponent(".s.PGSQL.5432").path)
        defer { close(listener) }
        let busy = DispatchSemaphore(value: 0)
        for _ in 0..<100 { DispatchQueue.global().async { busy.wait() } }
        // A thread, which the busy queue does not hold up, sees the connection arrive (or gives up
        // after 60 s), then frees the queue.
        let arrived = Arrival()
        let start = ContinuousClock.now
        Thread {
            var descriptor = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            if poll(&descriptor, 1, 60_000) > 0 { arrived.set(ContinuousClock.now - start) }
            for _ in 0..<100 { busy.signal() }
        }.start()
        // A task of high priority: the busy queue serves those of default priority.
        let conninfo = "host=\(conninfoQuote(directory.path)) port=5432 user=nobody dbname=x"
        let connecting = Task(priority: .high) { try? await PGConnection.connect(conninfo, connectTimeout: 2) }
        _ = await connecting.value
        let after = try #require(arrived.value, "the connection never reached the server while the queue was busy")
        #expect(after < .seconds(30), "the connection reached the server after \(after)")
    }

    @Test("a server that lets the client in and then never answers is given up on, set-up included")
    func stallAfterStartup() async throws {
        // Given up on after the connect timeout (2 s) and the cancel's grace (0.5 s), the call
        // ends long before the server hangs up, which it would wait for otherwise; between the
        // two, room for a busy machine (the bound was 8 s, with the hang-up at 20 s).
        let server = try StalledServer(answering: 0, hangUpAfter: .seconds(60))
        defer { server.stop() }
        let start = ContinuousClock.now
        let error = try await #require(throws: PostgresError.self) {
            _ = try await PGConnection.connect(server.conninfo, connectTimeout: 2)
        }
        let waited = ContinuousClock.now - start
        #expect(error.kind == .connection, "\(error)")
        #expect(waited < .seconds(30), "the connection's set-up waited \(waited) for a server that never answers")
    }

    @Test("a statement too large for the socket's buffers, to a server that stops reading, is given up on at its timeout")
    func stallWhileSending() async throws {
        // The server answers the connection's session settings (and the statement's preparation),
        // then reads nothing more: a statement larger than the socket's buffers cannot all be
        // sent. Without a bound on the sending, the call waited until the server hung up, and
        // then failed as a lost connection, its timeout never applied.
        //
        // The server hangs up long after the timeout: the client's own work on the statement
        // before it sends a byte (checking and copying 8 MB, a debug build) counts against the
        // timeout too, and on a busy machine it took 2 to 4 s, once past 15 s: the server had
        // hung up by then, and the statement failed as a lost connection, before any waiting.
        let large = String(repeating: "x", count: 8 << 20)
        for prepared in [false, true] {
            let server = try StalledServer(
                answering: prepared ? 2 : 1, keepsReading: false, hangUpAfter: .seconds(120))
            defer { server.stop() }
            let connection = try await PGConnection.connect(server.conninfo, connectTimeout: 2)
            let error = try await #require(throws: PostgresError.self, "prepared: \(prepared)") {
                try await connection.query("SELECT \(large)", prepared: prepared, timeout: .milliseconds(300))
            }
            #expect(error.timedOut == .answer(after: .milliseconds(300)), "\(error.debugDescription)")
            #expect(error.isConnectionFailure, "\(error.debugDescription)")
            #expect(error.message.contains("did not take the statement within 300 ms"), "\(error.message)")
            #expect(!connection.isUsable)
            await connection.close()
        }
    }

    @Test("a statement whose commit is held up past its timeout is reported as it ended, not as not done")
    func commitPastTheTimeout() async throws {
        // Commits wait for a synchronous standby that never comes: a commit the client gave up
        // on completes anyway once it is asked to cancel (the server warns that the transaction
        // committed locally), as a slow commit of any kind would.
        try await StalledCommits.withCluster { cluster, admin in
            try await admin.execute(script: "CREATE TABLE t (i int)")
            try await StalledCommits.stall(cluster, admin: admin)

            let connection = try await PGConnection.connect(cluster.conninfo())
            let outcome: Result<PGRows, any Error>
            do {
                outcome = .success(
                    try await connection.query("INSERT INTO t VALUES (1)", prepared: true, timeout: .milliseconds(200)))
            } catch {
                outcome = .failure(error)
            }
            // Whatever the server did with the commit is now done (or never will be).
            try await Task.sleep(for: .seconds(2))
            let rows = try await admin.query("SELECT count(*) FROM t").first!.decode(Int.self, at: 0)
            switch outcome {
            case .success: #expect(rows == 1)
            case .failure(let error):
                #expect(rows == 0, "told it failed (\(error)), the statement committed all the same")
            }
            await connection.close()
        }
    }

    @Test("a COMMIT whose connection is lost is reported as of unknown outcome, not as not done")
    func commitOutcomeUnknown() async throws {
        try await StalledCommits.withCluster { cluster, admin in
            try await admin.execute(script: "CREATE TABLE t (i int)")
            try await StalledCommits.stall(cluster, admin: admin)
            let connection = try await PGConnection.connect(cluster.conninfo())
            let transaction = Task {
                try await connection.withTransaction { try await $0.query("INSERT INTO t VALUES (1)") }
            }
            // The COMMIT is written locally and waits; then its connection is lost.
            let pid = try await StalledCommits.waitingCommit(admin: admin)
            try await admin.query("SELECT pg_terminate_backend(\(pid))")
            let error = try await #require(throws: PostgresError.self) { try await transaction.value }
            #expect(error.isConnectionFailure && error.commitOutcomeUnknown, "\(error)")
            #expect(error.message.contains("whether it was committed is unknown"), "\(error.message)")
            // And indeed it was committed.
            #expect(try await admin.query("SELECT count(*) FROM t").first!.decode(Int.self, at: 0) == 1)
            // A failure before the COMMIT is not of unknown outcome.
            let other = try await PGConnection.connect(cluster.conninfo())
            let failed = try await #require(throws: PostgresError.self) {
                try await other.withTransaction { try await $0.query("INSERT INTO t VALUES ('x')") }
            }
            #expect(!failed.commitOutcomeUnknown)
            await other.close()
        }
    }
}

/// When a connection reached the server, once it has.
private final class Arrival: Sendable {
    private let after = Mutex<Duration?>(nil)
    func set(_ value: Duration) { after.withLock { $0 = value } }
    var value: Duration? { after.withLock { $0 } }
}
