import Foundation
import LockboxTestSupport
import Testing

/// Serialized: each test looks for the `lockbox_bench_*` database of the run it started.
@Suite("lockbox bench", .serialized)
struct BenchCommandTests {
    /// The options of a short run on a tiny dataset.
    static let tiny = [
        "--dataset-tenants", "3", "--dataset-operators", "12", "--dataset-requests", "60",
        "--dataset-grants", "12", "--dataset-audit", "200",
    ]

    @Test("a one-second run on a tiny dataset measures both modes and checks the audit count")
    func tinyRun() async throws {
        try await TestDatabase.with { db in
            let result = try await CLI.run(
                [
                    "bench", "--database-url", db.connectionString, "--operators", "1", "4", "--duration", "1s",
                    "--dataset-tenants", "3", "--dataset-operators", "12", "--dataset-requests", "60",
                    "--dataset-grants", "12", "--dataset-audit", "200", "--format", "json",
                ])
            #expect(result.status == 0, "\(result)")
            // Not a terminal: no progress bar (carriage returns) in what a script captures.
            #expect(!result.stderr.contains("\r") && !result.stderr.contains("[#"), "\(result)")
            let report = try result.jsonObject()
            #expect(report["failures"] as? [String] == [], "\(result)")
            #expect((report["auditCheck"] as? String)?.hasPrefix("ok") == true, "\(result)")
            let levels = try #require(report["levels"] as? [[String: Any]])
            #expect(levels.compactMap { $0["operators"] as? Int } == [1, 4])
            for level in levels {
                for mode in ["raw", "gateway"] {
                    let phase = try #require(level[mode] as? [String: Any])
                    let operations = try #require(phase["operations"] as? Int)
                    #expect(operations > 0, "\(mode): \(phase)")
                    #expect(phase["auditRowsAdded"] as? Int == operations)
                    #expect(phase["errors"] as? Int == 0, "\(mode): \(phase)")
                    // Each simulated operator's every 20th attempt in a turn is refused, so at
                    // least one is once some operator made 20 attempts in one of the 2 turns:
                    // certain beyond 19 × operators × 2 attempts (a loaded machine may stay below).
                    let operators = try #require(level["operators"] as? Int)
                    #expect(
                        (phase["refused"] as? Int ?? 0) > 0 || operations <= 19 * operators * 2,
                        "\(mode): ~5 % are refused")
                    #expect((phase["p99Micros"] as? Int ?? 0) >= (phase["p50Micros"] as? Int ?? 0))
                }
                #expect((level["ratio"] as? Double ?? 0) > 0)
            }
            // The benchmark's own database is gone afterwards.
            let connection = try await db.connect()
            let left = try await connection.query("SELECT count(*) FROM pg_database WHERE datname LIKE 'lockbox_bench_%'")
            await connection.close()
            #expect(try left.first?.decode(Int.self, at: 0) == 0)
        }
    }

    @Test("bad options are usage errors")
    func usage() async throws {
        for arguments in [
            ["bench", "--operators", "0"], ["bench", "--duration", "0s"], ["bench", "--format", "csv"],
            ["bench", "--dataset-grants", "0"],
            // Too long to count in seconds: a usage error, not an arithmetic trap.
            ["bench", "--duration", "9999999999999999h"], ["bench", "--duration", "99999999999999999999s"],
        ] {
            let result = try await CLI.run(arguments)
            #expect(result.status == 64, "\(result)")
            if arguments[1] == "--duration" {
                #expect(result.stderr.contains("--duration: must be between 1s and 1h"), "\(result)")
            }
        }
    }

    @Test("operations that fail make the run fail, naming the phase and the error")
    func failingOperations() async throws {
        try await TestDatabase.with { db in
            // Ends every connection the raw phase runs its statement on, while it runs: its
            // operations then fail (nothing is recorded for them, so the audit count still holds).
            let killer = Task {
                let connection = try await db.connect()
                defer { Task { await connection.close() } }
                var killed = 0
                while !Task.isCancelled {
                    let rows = try await connection.query(
                        """
                        SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                        WHERE datname LIKE 'lockbox_bench_%' AND query LIKE 'WITH g AS%'
                        """)
                    killed += try rows.first?.decode(Int.self, at: 0) ?? 0
                    try? await Task.sleep(for: .milliseconds(50))
                }
                return killed
            }
            let result = try await CLI.run(
                ["bench", "--database-url", db.connectionString, "--operators", "1", "--duration", "3s",
                 "--rounds", "1", "--format", "json"] + Self.tiny)
            killer.cancel()
            let killed = try await killer.value
            try #require(killed > 0, "the raw phase's connection was never seen: \(result)")
            #expect(result.status == 1, "\(result)")
            #expect(result.stderrLines.last?.hasPrefix("error: bench: operations failed") == true, "\(result)")
            #expect(result.stderr.contains("raw at 1 operators:"), "\(result)")
            let report = try result.jsonObject()
            let failures = try #require(report["failures"] as? [String])
            #expect(failures.count == 1 && failures[0].hasPrefix("raw at 1 operators:"), "\(result)")
        }
    }
}
