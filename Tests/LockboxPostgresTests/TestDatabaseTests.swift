import Foundation
import LockboxTestSupport
import Synchronization
import Testing

@Suite("test databases")
struct TestDatabaseTests {
    // Every test starts at once; unbounded, their pools exhausted the test server's 300
    // connections on a busy machine ("sorry, too many clients already").
    @Test("at most TestDatabase.maximumAtOnce test databases exist at a time; the others wait their turn")
    func bounded() async throws {
        let counts = Counts()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<(TestDatabase.maximumAtOnce * 3) {
                group.addTask {
                    try await TestDatabase.with(maxConnections: 1) { db in
                        counts.state.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
                        _ = try await db.pool.query("SELECT pg_sleep(0.2)")
                        // Until two were side by side (60 s at most): their turns come as the other
                        // suites' tests end theirs, and on a busy machine these could all come
                        // after the one before was over.
                        let end = ContinuousClock.now + .seconds(60)
                        while counts.state.withLock({ $0.most }) < 2 && ContinuousClock.now < end {
                            try await Task.sleep(for: .milliseconds(10))
                        }
                        counts.state.withLock { $0.now -= 1 }
                    }
                }
            }
            try await group.waitForAll()
        }
        let most = counts.state.withLock { $0.most }
        #expect(most <= TestDatabase.maximumAtOnce, "\(most) test databases at once")
        #expect(most > 1, "they still run side by side")
    }
}

private final class Counts: Sendable {
    let state = Mutex((now: 0, most: 0))
}
