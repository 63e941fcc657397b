import Foundation
import LockboxPostgres
import LockboxTestSupport
import Testing

/// A pool lease and a transaction with a timeout: every wait bounded, the server told too,
/// and a connection that was asked to cancel never handed out again.
@Suite("pool leases and transactions with a timeout")
struct DeadlineTests {
    @Test("a transaction with a timeout has the server apply it too, for the transaction only")
    func serverSideTimeouts() async throws {
        try await TestDatabase.with(maxConnections: 1) { db in
            let settings: PGQuery =
                "SELECT current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout')"
            let before = try await db.pool.query(settings).first!.decode((String, String).self)
            // Long enough for a busy machine: the server ends the session when the test process
            // pauses between two statements for the idle timeout (pauses of 2.6 s were measured;
            // it was 3 s).
            let inside = try await db.pool.withTransaction(timeout: .milliseconds(15500), idleTimeout: .seconds(30)) {
                try await $0.query(settings).first!.decode((String, String).self)
            }
            #expect(inside == ("15500ms", "30s"))
            // Without an idle timeout, the session's own stays.
            let statementOnly = try await db.pool.withTransaction(timeout: .milliseconds(15500)) {
                try await $0.query(settings).first!.decode((String, String).self)
            }
            #expect(statementOnly == ("15500ms", before.1))
            #expect(try await db.pool.query(settings).first!.decode((String, String).self) == before)
        }
    }

    @Test("a statement cancelled at its timeout is refused naming the wait, and its connection is not kept")
    func cancelledConnectionIsDiscarded() async throws {
        try await TestDatabase.with(maxConnections: 1) { db in
            try await db.pool.query("SELECT 1")
            let error = try await #require(throws: PostgresError.self) {
                try await db.pool.query("SELECT pg_sleep(60)", timeout: .milliseconds(200))
            }
            #expect(error.timedOut == .answer(after: .milliseconds(200)), "\(error.debugDescription)")
            #expect(error.message.contains("did not answer within 200 ms"), "\(error.message)")
            // The cancel request could still reach the server late, and cancel the next caller's
            // statement: the connection is closed, and the next lease opens a new one.
            #expect(await db.pool.statistics.open == 0)
            try await db.pool.query("SELECT 1")
            #expect(await db.pool.statistics.opened == 2)
        }
    }

    @Test("a COMMIT that gets no answer, not even to a cancel, is of unknown outcome and names the wait")
    func silentCommit() async throws {
        // The server answers the session settings, BEGIN and the transaction's settings, then nothing.
        // BEGIN and the settings have the timeout too: long enough for the server's thread to
        // answer them on a busy machine (at 200 ms they had 0.7 s with the cancel's grace).
        let server = try StalledServer(answering: 3, hangUpAfter: .seconds(60))
        defer { server.stop() }
        let connection = try await PGConnection.connect(server.conninfo)
        let error = try await #require(throws: PostgresError.self) {
            try await connection.withTransaction(timeout: .seconds(2)) { _ in }
        }
        #expect(error.commitOutcomeUnknown, "\(error.debugDescription)")
        #expect(error.timedOut == .answer(after: .seconds(2)), "\(error.debugDescription)")
        #expect(error.message.contains("whether it was committed is unknown"), "\(error.message)")
        #expect(!connection.isUsable)
    }
}
