import Foundation
import LockboxPostgres

/// A private cluster whose commits wait for a synchronous standby that never comes, once
/// ``stall(_:)`` has been called: a commit then hangs after it is written locally, as a
/// slow commit of any kind would, and ends committed if the client gives up on it (the
/// server warns that the transaction committed locally).
public enum StalledCommits {
    /// Runs `body` with a new throwaway cluster and a superuser connection to it; the
    /// cluster is removed afterwards.
    public static func withCluster(_ body: (EmbeddedPostgres, PGConnection) async throws -> Void) async throws {
        let cluster = EmbeddedPostgres(
            directory: NSTemporaryDirectory() + "lbx-sync-\(UInt32.random(in: 0...UInt32.max))", durable: false)
        try await cluster.start()
        do {
            let admin = try await PGConnection.connect(cluster.conninfo())
            try await body(cluster, admin)
            await admin.close()
        } catch {
            try? await cluster.destroy()
            throw error
        }
        try await cluster.destroy()
    }

    /// Makes every commit from now on wait for the standby (new connections included),
    /// returning once the server applies the setting.
    public static func stall(_ cluster: EmbeddedPostgres, admin: PGConnection) async throws {
        try await admin.execute(script: "ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        try await admin.query("SELECT pg_reload_conf()")
        for _ in 0..<500 {
            let probe = try await PGConnection.connect(cluster.conninfo())
            let applied = try await probe.query("SHOW synchronous_standby_names").first!.decode(String.self, at: 0)
            await probe.close()
            if applied == "nobody" { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw PostgresError(kind: .client, message: "synchronous_standby_names was never applied")
    }

    /// Waits (polling, up to 60 s: the commit comes from a task of the test process, which a busy
    /// machine can hold up for seconds) until a session waits for the standby; returns its process id.
    public static func waitingCommit(admin: PGConnection) async throws -> Int32 {
        let end = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < end {
            let rows = try await admin.query("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep' LIMIT 1")
            if let pid = try rows.first?.decode(Int32.self, at: 0) { return pid }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw PostgresError(kind: .client, message: "no commit ever waited for the standby")
    }
}
