import Foundation
import Synchronization
import LockboxPostgres
import LockboxTestSupport
import Testing

@Suite("the pool and transactions when something fails")
struct PoolFailureTests {
    struct Boom: Error {}

    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .releasing) }
        var isSet: Bool { value.load(ordering: .acquiring) }
    }

    @Test("a connection left inside a transaction is not handed to the next caller in it")
    func leftInTransaction() async throws {
        try await TestDatabase.with(maxConnections: 1) { db in
            try await db.pool.query("CREATE TABLE lt (v int)")
            await #expect(throws: Boom.self) {
                try await db.pool.withConnection { connection in
                    try await connection.execute(script: "BEGIN")
                    try await connection.query("INSERT INTO lt VALUES (1)")
                    throw Boom()
                }
            }
            // The next caller's own transaction must not carry the first one's insert along.
            try await db.pool.withTransaction { connection in
                try await connection.query("INSERT INTO lt VALUES (2)")
            }
            let rows = try await db.pool.query("SELECT v FROM lt ORDER BY v")
            #expect(try rows.decode(Int.self) == [2])
        }
    }

    @Test("a transaction whose statement failed is not reported as committed")
    func abortedTransactionIsNotCommitted() async throws {
        try await TestDatabase.with { db in
            try await db.pool.query("CREATE TABLE ab (v int CONSTRAINT ab_positive CHECK (v > 0))")
            let error = await #expect(throws: PostgresError.self) {
                try await db.pool.withTransaction { connection in
                    try await connection.query("INSERT INTO ab VALUES (1)")
                    _ = try? await connection.query("INSERT INTO ab VALUES (-1)")
                }
            }
            #expect(error?.message.contains("rolled back") == true, "\(String(describing: error))")
            let rows = try await db.pool.query("SELECT count(*) FROM ab")
            #expect(try rows.first?.decode(Int.self, at: 0) == 0)
        }
    }

    @Test("a task cancelled while it waits for a connection stops waiting, and the pool's count stays right")
    func cancelledWaiter() async throws {
        try await TestDatabase.with(maxConnections: 1) { db in
            let (held, release) = AsyncStream.makeStream(of: Void.self)
            let (leased, leasedNow) = AsyncStream.makeStream(of: Void.self)
            let holder = Task {
                try await db.pool.withConnection { _ in
                    leasedNow.yield()
                    for await _ in held { break }
                }
            }
            for await _ in leased { break }
            let waiter = Task { try await db.pool.query("SELECT 1") }
            let finished = Flag()
            let watcher = Task {
                _ = try? await waiter.value
                finished.set()
            }
            // Give the waiter time to queue for the connection (it must stop either way), then cancel it.
            try await Task.sleep(for: .milliseconds(100))
            waiter.cancel()
            // Bounded poll for the waiter to give up, while the only connection is still leased: it
            // ends as soon as it has; a waiter that keeps waiting is found so after 60 s (5 s was
            // within reach of a busy machine, where the test process can pause for seconds).
            let end = ContinuousClock.now + .seconds(60)
            while !finished.isSet && ContinuousClock.now < end {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(finished.isSet, "a cancelled waiter kept waiting for a connection")
            release.yield()
            try await holder.value
            await watcher.value
            await #expect(throws: CancellationError.self) { try await waiter.value }
            // The slot is free again: a lease works, and nothing leaked.
            try await db.pool.query("SELECT 1")
            let statistics = await db.pool.statistics
            #expect(statistics.open == 1)
        }
    }
}
