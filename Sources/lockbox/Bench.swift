import ArgumentParser
import Foundation
import Synchronization
import LockboxCore
import LockboxPostgres

/// `lockbox bench`: audited operations through the gateway against raw PostgreSQL, in one run.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure audited operations through the gateway against raw PostgreSQL, in the same run.",
        discussion: """
            Loads a dataset (by default 100 tenants, 1,000 operators, 100,000 requests of which 1,000 \
            hold active grants and the rest are history, 1,000,000 audit rows) into a fresh database, then for each concurrency \
            level runs (1) raw: the check-and-insert as one prepared statement per transaction straight \
            through libpq, and (2) gateway: real reads through the three connectors, ~5 % refused, each \
            authorized and audited by the broker with group commit. It prints operations/s, latency \
            percentiles, CPU seconds, peak memory and the ratio gateway ÷ raw, and fails unless the audit log \
            grew by exactly the number of operations performed.

            With a database named (--database-url, LOCKBOX_DATABASE_URL or PG* variables) the benchmark \
            creates a database of its own on that server and drops it afterwards; otherwise it runs on a \
            throwaway embedded cluster. Interrupted (Ctrl-C, SIGTERM, SIGHUP), it drops that database or cluster \
            before it exits.

            Example:
              lockbox bench --operators 1 16 --duration 10s --format json
            """)

    @OptionGroup var database: DatabaseOptions

    @Option(parsing: .upToNextOption, help: "Concurrency levels: simulated operators at once.")
    var operators: [Int] = [1, 4, 16, 64]

    @Option(help: ArgumentHelp("How long each phase runs, e.g. 20s or 1m.", valueName: "duration"))
    var duration: String = "20s"

    @Option(help: "Turns raw and gateway take, alternating, within each phase (so drift hits both alike).")
    var rounds = 2

    /// What `bench` prints: its report has no CSV form.
    enum Format: String, CaseIterable, ExpressibleByArgument {
        case table, json
    }

    @Option(help: ArgumentHelp("Output format.", valueName: "table|json"))
    var format: Format = .table

    @Option(help: "Dataset: tenants (1 to 9999).") var datasetTenants = 100
    @Option(help: "Dataset: operators (1 to 99999).") var datasetOperators = 1000
    @Option(help: "Dataset: requests in all, the active grants among them.") var datasetRequests = 100_000
    @Option(help: "Dataset: requests holding an active grant (at least 1; at most one per operator).")
    var datasetGrants = 1000
    @Option(help: "Dataset: pre-filled audit rows.") var datasetAudit = 1_000_000

    func validate() throws {
        guard !operators.isEmpty, operators.allSatisfy({ (1...512).contains($0) }) else {
            throw ValidationError("--operators: each level must be between 1 and 512")
        }
        guard let parsed = try? parseDuration(duration), parsed >= .seconds(1), parsed <= .seconds(3600) else {
            throw ValidationError("--duration: must be between 1s and 1h, like 20s or 1m")
        }
        guard (1...20).contains(rounds) else { throw ValidationError("--rounds: must be between 1 and 20") }
        // Tenants and operators are named with 4 and 5 digits (bench-0001, op00001).
        guard (1...9999).contains(datasetTenants) else {
            throw ValidationError("--dataset-tenants: must be between 1 and 9999")
        }
        guard (1...99_999).contains(datasetOperators) else {
            throw ValidationError("--dataset-operators: must be between 1 and 99999")
        }
        guard datasetGrants >= 1 else {
            throw ValidationError("--dataset-grants: must be at least 1 (the gateway phases run under the grants)")
        }
        guard datasetGrants <= datasetOperators else {
            throw ValidationError(
                "--dataset-grants: at most one per operator, so at most --dataset-operators (\(datasetOperators))")
        }
        guard datasetRequests >= datasetGrants else {
            throw ValidationError(
                "--dataset-requests: the \(datasetGrants) active grants (--dataset-grants) are among the requests, "
                    + "so there must be at least as many")
        }
        guard datasetAudit >= 0 else { throw ValidationError("--dataset-audit: must be 0 or more") }
    }

    func run() async throws {
        let dataset = BenchDataset(
            tenants: datasetTenants, operators: datasetOperators, requests: datasetRequests,
            activeGrants: datasetGrants, auditRows: datasetAudit)
        let interruption = BenchInterruption()
        interruption.install()
        let target = try await BenchTarget.create(DatabaseLocation.resolve(database))
        interruption.guarding(target)
        let report: BenchReport
        do {
            let runner = BenchRunner(
                conninfo: target.conninfo, database: target.database, dataset: dataset, levels: operators,
                duration: try parseDuration(duration), rounds: rounds, progress: ProgressBar.draw)
            report = try await runner.run()
            ProgressBar.finish()
            interruption.guarding(nil)
            await target.destroy()
        } catch {
            ProgressBar.finish()
            interruption.guarding(nil)
            await target.destroy()
            throw error
        }
        switch format {
        case .json:
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        case .table:
            print(Self.table(report))
        }
        guard report.auditCheck.hasPrefix("ok") else { throw CLIError("bench: audit check \(report.auditCheck)") }
        guard report.failures.isEmpty else {
            throw CLIError("bench: operations failed, so the measurement is not valid: "
                + report.failures.joined(separator: "; "))
        }
    }

    static func table(_ report: BenchReport) -> String {
        var lines = [
            "dataset: \(report.dataset.tenants) tenants, \(report.dataset.operators) operators, "
                + "\(report.dataset.requests) requests (\(report.dataset.activeGrants) with active grants), "
                + "\(report.dataset.auditRows) audit rows; \(Int(report.durationSeconds)) s per phase in \(report.rounds) alternating turns",
            "",
        ]
        let header = ["operators", "mode", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "refused", "errors",
                      "cpu s", "peak MB", "gateway/raw"]
        var rows: [[String]] = []
        func ms(_ micros: UInt64) -> String { String(format: "%.2f", Double(micros) / 1000) }
        for level in report.levels {
            for phase in [level.raw, level.gateway] {
                rows.append([
                    "\(level.operators)", phase.mode, String(format: "%.0f", phase.operationsPerSecond),
                    ms(phase.p50Micros), ms(phase.p95Micros), ms(phase.p99Micros), ms(phase.maxMicros),
                    "\(phase.refused)", "\(phase.errors)", String(format: "%.1f", phase.cpuSeconds),
                    String(format: "%.0f", phase.peakMemoryMB),
                    phase.mode == "gateway" ? String(format: "%.2f×", level.ratio) : "",
                ])
            }
        }
        let widths = header.indices.map { column in
            ([header[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }
                .joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        lines.append(line(header))
        lines += rows.map(line)
        lines.append("")
        lines.append("audit check: \(report.auditCheck)")
        lines += report.failures.map { "failed: \($0)" }
        return lines.joined(separator: "\n")
    }
}

/// The database a benchmark runs in: its own database on a named server, or a throwaway cluster.
struct BenchTarget: Sendable {
    let conninfo: String?
    let database: String
    let adminConninfo: String?
    let cluster: EmbeddedPostgres?

    static func create(_ location: DatabaseLocation) async throws -> BenchTarget {
        let name = "lockbox_bench_\(getpid())"
        var adminConninfo: String?
        var cluster: EmbeddedPostgres?
        switch location {
        case .url(let url, _): adminConninfo = url
        case .environment: adminConninfo = nil
        case .embedded:
            let directory = NSTemporaryDirectory() + "lockbox-bench-\(getpid())"
            let embedded = EmbeddedPostgres(directory: directory, durable: true)
            ProgressBar.draw("starting a throwaway PostgreSQL", 0)
            try await embedded.start()
            try await embedded.removeWhenProcessExits(getpid())
            cluster = embedded
            adminConninfo = embedded.conninfo(database: "postgres")
        }
        let admin = try await PGConnection.connect(adminConninfo)
        do {
            try await admin.execute(script: "CREATE DATABASE \(name)")
            await admin.close()
        } catch {
            await admin.close()
            throw CLIError("bench needs to create a database of its own on the server: \(error)")
        }
        let target = BenchTarget(conninfo: adminConninfo, database: name, adminConninfo: adminConninfo, cluster: cluster)
        do {
            let connection = try await PGConnection.connect(adminConninfo, database: name)
            defer { Task { await connection.close() } }
            try await Schema.migrator.migrate(on: connection)
        } catch {
            await target.destroy()
            throw error
        }
        return target
    }

    func destroy() async {
        if let cluster {
            try? await cluster.destroy()
            return
        }
        if let admin = try? await PGConnection.connect(adminConninfo) {
            try? await admin.execute(script: "DROP DATABASE IF EXISTS \(database) WITH (FORCE)")
            await admin.close()
        }
    }
}

/// Drops the benchmark's database (or throwaway cluster) when the run is interrupted
/// (Ctrl-C, SIGTERM, SIGHUP), then exits with 128 + the signal's number, as the signal would
/// have. A second signal while the database is being dropped exits at once.
final class BenchInterruption: Sendable {
    private let target = Mutex<BenchTarget?>(nil)
    /// Kept for the life of the process; written only by `install()`, which `run()` calls once
    /// before any other task of the command starts.
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []

    func install() {
        for number in [SIGINT, SIGTERM, SIGHUP] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in
                let pending = target.withLock { target in
                    defer { target = nil }
                    return target
                }
                guard let pending else { Foundation.exit(128 + number) }
                ProgressBar.finish()
                FileHandle.standardError.write(
                    Data("interrupted: dropping the benchmark's database \(pending.database)\n".utf8))
                Task {
                    await pending.destroy()
                    Foundation.exit(128 + number)
                }
            }
            source.resume()
            Self.sources.append(source)
        }
    }

    /// The target to drop on a signal from now on (nil: none, it is being dropped already).
    func guarding(_ target: BenchTarget?) { self.target.withLock { $0 = target } }
}

/// A one-line progress bar on standard error, drawn only when standard error is a
/// terminal (redirected to a file or a pipe, it would fill it with carriage returns).
enum ProgressBar {
    static let onTerminal = isatty(STDERR_FILENO) == 1

    @Sendable static func draw(_ label: String, _ fraction: Double) {
        guard onTerminal else { return }
        let width = 30
        let filled = Int((min(max(fraction, 0), 1) * Double(width)).rounded())
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let text = "\r[\(bar)] \(String(format: "%3.0f", fraction * 100))% \(label)"
        FileHandle.standardError.write(Data((text.padding(toLength: 90, withPad: " ", startingAt: 0)).utf8))
    }

    /// Ends the bar's line (nothing when no bar was drawn).
    static func finish() {
        guard onTerminal else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}
