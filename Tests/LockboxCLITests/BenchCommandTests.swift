import Foundation
import LockboxPostgres
import LockboxTestSupport
import Synchronization
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
                    #expect(phase["auditProblems"] as? [String] == [], "\(mode): \(phase)")
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
            // Named in the message: each option that is out of range.
            ["bench", "--dataset-tenants=0"], ["bench", "--dataset-tenants", "10000"],
            ["bench", "--dataset-operators=-3"], ["bench", "--dataset-requests=-1"],
            ["bench", "--dataset-audit=-5"], ["bench", "--rounds", "0"], ["bench", "--duration", "abc"],
            // More grants than requests (they are among them), or than operators (one each).
            ["bench", "--dataset-requests", "100", "--dataset-grants", "500"],
            ["bench", "--dataset-operators", "10", "--dataset-grants", "11"],
            // Too long to count in seconds: a usage error, not an arithmetic trap.
            ["bench", "--duration", "9999999999999999h"], ["bench", "--duration", "99999999999999999999s"],
        ] {
            // A server that is not there: an option that passed validation by mistake fails
            // at once instead of running a whole benchmark.
            let result = try await CLI.run(arguments + ["--database-url", "host=/nonexistent/lockbox-bench"])
            #expect(result.status == 64, "\(result)")
            if arguments[1] == "--duration" {
                #expect(result.stderr.contains("--duration: must be between 1s and 1h"), "\(result)")
            }
            // The option at fault is named first (the last one given, when two disagree).
            let option = arguments.dropFirst().last { $0.hasPrefix("--") }!.split(separator: "=")[0]
            if option != "--format", !(arguments.count == 5 && option == "--dataset-grants"
                && arguments.contains("--dataset-requests"))
            {
                #expect(result.stderr.contains("Error: \(option):"), "\(result)")
            } else if option == "--dataset-grants" {
                #expect(result.stderr.contains("Error: --dataset-requests:"), "\(result)")
            }
        }
    }

    @Test("operations that fail make the run fail, naming the phase and the error")
    func failingOperations() async throws {
        try await TestDatabase.with { db in
            // Ends every connection the raw phase runs its statement on, while it runs: its
            // operations then fail (nothing is recorded for them, so the audit count still holds).
            let killer = Task {
                try await Self.onThread { stop in
                    let connection = try PGConnection.connectBlocking(db.connectionString)
                    var killed = 0
                    while !stop.isSet {
                        let rows = try connection.queryBlocking(
                            """
                            SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                            WHERE datname LIKE 'lockbox_bench_%' AND query LIKE 'WITH g AS%'
                            """)
                        killed += try rows.first?.decode(Int.self, at: 0) ?? 0
                        Thread.sleep(forTimeInterval: 0.05)
                    }
                    return killed
                }
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

    @Test("the audit check fails a run whose records were written twice or do not say what their callers were told")
    func auditCheckCatchesWrongRecords() async throws {
        try await TestDatabase.with { db in
            // Once the first phase runs, the audit table gets two faults: every 5th record is
            // written a second time (a record no caller was given), and every 7th allowed one
            // is stored as Failed (raw reads its result back, so only the gateway's callers
            // are told something else).
            let result = try await Self.sabotagedRun(
                on: db,
                [
                    """
                    CREATE FUNCTION public.double_some() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        IF pg_trigger_depth() = 1 AND NEW.id % 5 = 0 THEN
                            INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id,
                                actor, client_ip, activity, item, request_id, workload, result, parameters)
                            VALUES (NEW.occurred_at, NEW.tenant_id, NEW.record_type, NEW.user_id, NEW.actor,
                                NEW.client_ip, NEW.activity, NEW.item, NEW.request_id, NEW.workload,
                                NEW.result, NEW.parameters);
                        END IF;
                        RETURN NULL;
                    END $$
                    """,
                    """
                    CREATE FUNCTION public.fail_some() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        IF NEW.result = 'Succeeded' AND NEW.id % 7 = 0 THEN NEW.result := 'Failed'; END IF;
                        RETURN NEW;
                    END $$
                    """,
                    """
                    CREATE TRIGGER double_some AFTER INSERT ON lockbox.audit_records
                        FOR EACH ROW EXECUTE FUNCTION public.double_some()
                    """,
                    """
                    CREATE TRIGGER fail_some BEFORE INSERT ON lockbox.audit_records
                        FOR EACH ROW EXECUTE FUNCTION public.fail_some()
                    """,
                ])
            let report = try result.jsonObject()
            let level = try #require((report["levels"] as? [[String: Any]])?.first, "\(result)")
            let raw = try #require(level["raw"] as? [String: Any])
            let gateway = try #require(level["gateway"] as? [String: Any])
            let rawProblems = try #require(raw["auditProblems"] as? [String])
            let gatewayProblems = try #require(gateway["auditProblems"] as? [String])
            // Raw's later operations and all of the gateway's ran with the faults.
            #expect(rawProblems.contains { $0.hasSuffix("records were given to no caller") }, "\(rawProblems)")
            #expect(!rawProblems.contains { $0.contains("result their caller was told") }, "\(rawProblems)")
            #expect(gatewayProblems.contains { $0.hasSuffix("records were given to no caller") }, "\(gatewayProblems)")
            #expect(
                gatewayProblems.contains { $0.hasSuffix("records do not have the result their caller was told") },
                "\(gatewayProblems)")
            #expect(!gatewayProblems.contains { $0.contains("missing") || $0.contains("more than one") })
        }
    }

    // A record written for the wrong operator is one operation's record lost and another's
    // doubled: counts, ids and results all matched, and the check said ok.
    @Test("the audit check fails a run whose records name another operator than the caller given them")
    func auditCheckCatchesRecordsOfAnotherOperator() async throws {
        try await TestDatabase.with { db in
            // Once the first phase runs, every 5th record is stored as another operator's.
            let result = try await Self.sabotagedRun(
                on: db,
                [
                    """
                    CREATE FUNCTION public.misattribute_some() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                        IF NEW.id % 5 = 0 THEN
                            NEW.actor := CASE WHEN NEW.actor = 'op00001' THEN 'op00002' ELSE 'op00001' END;
                        END IF;
                        RETURN NEW;
                    END $$
                    """,
                    """
                    CREATE TRIGGER misattribute_some BEFORE INSERT ON lockbox.audit_records
                        FOR EACH ROW EXECUTE FUNCTION public.misattribute_some()
                    """,
                ])
            let report = try result.jsonObject()
            let level = try #require((report["levels"] as? [[String: Any]])?.first, "\(result)")
            for mode in ["raw", "gateway"] {
                let phase = try #require(level[mode] as? [String: Any])
                #expect(phase["auditRowsAdded"] as? Int == phase["operations"] as? Int, "\(mode): \(phase)")
                let problems = try #require(phase["auditProblems"] as? [String])
                #expect(
                    problems.contains { $0.hasSuffix("records name another operator than the caller given them") },
                    "\(mode): \(problems)")
            }
        }
    }

    @Test("a run whose grants stop holding fails, since its refused are not the ~5 % it measures")
    func grantsEndingMidRunFail() async throws {
        try await TestDatabase.with { db in
            // Ends the active grants once the first phase runs, as a run that outlasts their
            // window would see: every operation from then on is refused.
            let saboteur = Task { () -> String? in
                try await Self.onceBenchRuns(on: db) { name in
                    try Self.run(
                        [
                            "BEGIN", "ALTER TABLE lockbox.requests DISABLE TRIGGER USER",
                            """
                            UPDATE lockbox.requests SET created_at = created_at - interval '1 day',
                                reviewed_at = reviewed_at - interval '1 day', notified_at = notified_at - interval '1 day',
                                customer_deadline = customer_deadline - interval '1 day',
                                decided_at = decided_at - interval '1 day',
                                access_starts_at = access_starts_at - interval '1 day',
                                access_ends_at = access_ends_at - interval '1 day'
                            WHERE status = 'Approved'
                            """,
                            "ALTER TABLE lockbox.requests ENABLE TRIGGER USER", "COMMIT",
                        ], on: db, database: name)
                    return name
                }
            }
            let result = try await CLI.run(
                ["bench", "--database-url", db.connectionString, "--operators", "1", "--duration", "2s",
                 "--rounds", "1", "--format", "json"] + Self.tiny)
            saboteur.cancel()
            try #require(try await saboteur.value != nil, "the benchmark's database was never seen: \(result)")
            #expect(result.status == 1, "\(result)")
            #expect(result.stderrLines.last?.hasPrefix("error: bench: operations failed") == true, "\(result)")
            let failures = try #require(try result.jsonObject()["failures"] as? [String], "\(result)")
            #expect(
                failures.contains {
                    $0.hasPrefix("gateway at 1 operators:") && $0.contains("not refused or allowed as the benchmark meant")
                }, "\(failures)")
        }
    }

    @Test("the dataset holds what the report says: the active grants among the requests")
    func datasetSizes() async throws {
        try await TestDatabase.with { db in
            // Counts the benchmark's database once its first phase runs (the load is done).
            let counter = Task { () -> [Int]? in
                try await Self.onceBenchRuns(on: db) { name in
                    let bench = try PGConnection.connectBlocking(db.conninfo, database: name)
                    // While the first phase runs (the raw turn, 2 s), which records only Get-Resource.
                    let rows = try bench.queryBlocking(
                        """
                        SELECT (SELECT count(*) FROM lockbox.tenants WHERE name LIKE 'bench-%'),
                            (SELECT count(*) FROM lockbox.operators WHERE NOT is_manager),
                            (SELECT count(*) FROM lockbox.requests),
                            (SELECT count(*) FROM lockbox.requests
                             WHERE status = 'Approved' AND access_ends_at > now()),
                            (SELECT count(*) FROM lockbox.audit_records WHERE activity <> 'Get-Resource')
                        """)
                    let row = try #require(rows.first)
                    return try (0..<5).map { try row.decode(Int.self, at: $0) }
                }
            }
            let result = try await CLI.run(
                ["bench", "--database-url", db.connectionString, "--operators", "1", "--duration", "2s",
                 "--rounds", "1", "--format", "json", "--dataset-tenants", "7", "--dataset-operators", "30",
                 "--dataset-requests", "250", "--dataset-grants", "20", "--dataset-audit", "1500"])
            counter.cancel()
            #expect(result.status == 0, "\(result)")
            let counts = try #require(try await counter.value, "the benchmark's database was never seen: \(result)")
            #expect(counts == [7, 30, 250, 20, 1500], "tenants, operators, requests, active grants, audit rows")
            let dataset = try #require(try result.jsonObject()["dataset"] as? [String: Int])
            #expect(dataset == ["tenants": 7, "operators": 30, "requests": 250, "activeGrants": 20, "auditRows": 1500])
        }
    }

    @Test("an interrupted run drops its database", arguments: [SIGINT, SIGTERM])
    func interrupted(signal: Int32) async throws {
        try await TestDatabase.with { db in
            // Interrupts the benchmark once its first phase runs; returns its database's name.
            let interrupter = Task { () -> String? in
                try await Self.onceBenchRuns(on: db) { name in
                    let pid = try #require(Int32(name.dropFirst("lockbox_bench_".count)), "\(name)")
                    kill(pid, signal)
                    return name
                }
            }
            let result = try await CLI.run(
                ["bench", "--database-url", db.connectionString, "--operators", "1", "--duration", "30s",
                 "--rounds", "1"] + Self.tiny)
            interrupter.cancel()
            let name = try #require(try await interrupter.value, "the benchmark's database was never seen: \(result)")
            #expect(result.status == 128 + signal, "\(result)")
            #expect(result.stderr.contains("interrupted: dropping the benchmark's database \(name)"), "\(result)")
            let connection = try await db.connect()
            let left = try await connection.query("SELECT count(*) FROM pg_database WHERE datname = \(name)")
            await connection.close()
            #expect(try left.first?.decode(Int.self, at: 0) == 0, "\(name) is left behind")
        }
    }

    /// Runs a 2-second benchmark at 4 operators whose audit table gets the faults of `statements`
    /// once its first phase runs; requires it to fail its audit check, and returns what it printed.
    static func sabotagedRun(on db: TestDatabase, _ statements: [String]) async throws -> CLIResult {
        let saboteur = Task { () -> String? in
            try await Self.onceBenchRuns(on: db) { name in
                try Self.run(statements, on: db, database: name)
                return name
            }
        }
        let result = try await CLI.run(
            ["bench", "--database-url", db.connectionString, "--operators", "4", "--duration", "2s",
             "--rounds", "1", "--format", "json"] + Self.tiny)
        saboteur.cancel()
        try #require(try await saboteur.value != nil, "the benchmark's database was never seen: \(result)")
        #expect(result.status == 1, "\(result)")
        #expect(result.stderrLines.last?.hasPrefix("error: bench: audit check FAILED") == true, "\(result)")
        return result
    }

    /// Waits (polling, until cancelled) for a benchmark on `db`'s server to run its first
    /// phase (its load is done), then runs `body` with the benchmark's database name.
    ///
    /// On a thread of its own (``onThread(_:)``): `body` must act within the phase, 2 s, and
    /// the test process can go that long without running a task on a busy machine.
    static func onceBenchRuns<T: Sendable>(
        on db: TestDatabase, _ body: @escaping @Sendable (String) throws -> T
    ) async throws -> T? {
        try await onThread { stop in
            let connection = try PGConnection.connectBlocking(db.connectionString)
            while !stop.isSet {
                let running = try connection.queryBlocking(
                    """
                    SELECT datname FROM pg_stat_activity
                    WHERE datname LIKE 'lockbox_bench_%' AND query LIKE 'WITH g AS%' LIMIT 1
                    """)
                if let name = try running.first?.decode(String.self, at: 0) { return try body(name) }
                Thread.sleep(forTimeInterval: 0.02)
            }
            return nil
        }
    }

    /// Runs `statements` one after another on a new connection to `database` on `db`'s server
    /// (blocking: for ``onThread(_:)``).
    static func run(_ statements: [String], on db: TestDatabase, database: String) throws {
        let connection = try PGConnection.connectBlocking(db.conninfo, database: database)
        for statement in statements { try connection.queryBlocking(PGQuery(stringLiteral: statement)) }
    }

    /// Set when the task waiting for ``onThread(_:)`` is cancelled.
    final class Stop: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .releasing) }
        var isSet: Bool { value.load(ordering: .acquiring) }
    }

    /// Runs `body` on a thread of its own and returns what it returns; cancelling the calling
    /// task sets the `Stop` that `body` is given. What watches a benchmark must act while a
    /// phase of a second or two runs, and in full runs on a busy machine a task of the test
    /// process sleeping 50 ms at a time was resumed up to 2.6 s late (a watcher running as
    /// tasks could then act only once the phase was over), while a thread beside it never
    /// overslept by more than 0.7 s.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable (Stop) throws -> T) async throws -> T {
        let stop = Stop()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                Thread { continuation.resume(with: Result { try body(stop) }) }.start()
            }
        } onCancel: {
            stop.set()
        }
    }
}
