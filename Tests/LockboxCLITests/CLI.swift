import Foundation
import LockboxPostgres
import LockboxTestSupport
import Subprocess
import Testing

/// What one run of the `lockbox` binary did.
struct CLIResult: Sendable, CustomStringConvertible {
    var arguments: [String]
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String {
        "lockbox \(arguments.joined(separator: " ")) → exit \(status)\n--- stdout\n\(stdout)--- stderr\n\(stderr)"
    }

    /// Standard output parsed as JSON.
    func json() throws -> Any {
        try JSONSerialization.jsonObject(with: Data(stdout.utf8), options: [.fragmentsAllowed])
    }

    func jsonObject(sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        try #require(try json() as? [String: Any], "\(self)", sourceLocation: sourceLocation)
    }

    func jsonArray(sourceLocation: SourceLocation = #_sourceLocation) throws -> [[String: Any]] {
        try #require(try json() as? [[String: Any]], "\(self)", sourceLocation: sourceLocation)
    }

    /// Standard error's lines, without the trailing empty one.
    var stderrLines: [String] { stderr.split(separator: "\n", omittingEmptySubsequences: true).map(String.init) }
}

/// Runs the built `lockbox` executable.
enum CLI {
    /// The executable: `LOCKBOX_CLI` when set, else the `lockbox` built beside this test
    /// bundle (found by searching up from the test process's directory), else the newest
    /// `*/debug/lockbox` under the package's `.build*` scratch directories.
    static let binary: String = locate()

    static func locate() -> String {
        let fileManager = FileManager.default
        if let explicit = ProcessInfo.processInfo.environment["LOCKBOX_CLI"], !explicit.isEmpty { return explicit }
        var starts: [URL] = []
        if let executable = Bundle.main.executableURL { starts.append(executable.deletingLastPathComponent()) }
        starts.append(Bundle.main.bundleURL)
        if let own = try? fileManager.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            starts.append(URL(fileURLWithPath: own).deletingLastPathComponent())
        }
        if let first = CommandLine.arguments.first {
            starts.append(URL(fileURLWithPath: first).deletingLastPathComponent())
        }
        for start in starts {
            var directory = start.standardizedFileURL
            for _ in 0..<5 {
                let candidate = directory.appendingPathComponent("lockbox").path
                var isDirectory: ObjCBool = false
                if fileManager.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
                    fileManager.isExecutableFile(atPath: candidate)
                {
                    return candidate
                }
                directory = directory.deletingLastPathComponent()
            }
        }
        // The package root, from this file's path: search its scratch directories.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        var newest: (path: String, date: Date)?
        for scratch in (try? fileManager.contentsOfDirectory(atPath: root.path)) ?? [] where scratch.hasPrefix(".build")
        {
            let base = root.appendingPathComponent(scratch)
            for triple in (try? fileManager.contentsOfDirectory(atPath: base.path)) ?? [] {
                let candidate = base.appendingPathComponent(triple).appendingPathComponent("debug/lockbox").path
                guard fileManager.isExecutableFile(atPath: candidate),
                    let date = (try? fileManager.attributesOfItem(atPath: candidate))?[.modificationDate] as? Date
                else { continue }
                if newest == nil || date > newest!.date { newest = (candidate, date) }
            }
        }
        return newest?.path ?? "lockbox"
    }

    /// Runs `lockbox` with `arguments`; `environment` entries override (or, when nil, remove) variables.
    /// With `clock` (libfaketime's offset, e.g. `+13h`), it runs under `faketime`, whose system
    /// clock is that far from the real one: the CLI has no option that chooses the time.
    static func run(
        _ arguments: [String], environment: [String: String?] = [:], clock: String? = nil
    ) async throws -> CLIResult {
        var overrides: [Environment.Key: String?] = [:]
        for (key, value) in environment { overrides[Environment.Key(rawValue: key)!] = value }
        // Logs stay quiet unless a test asks otherwise.
        if environment["LOCKBOX_LOG_LEVEL"] == nil {
            overrides[Environment.Key(rawValue: "LOCKBOX_LOG_LEVEL")!] = "error"
        }
        var executable = Executable.path(.init(binary))
        var arguments = arguments
        if let clock {
            // Wall-clock time only: monotonic clocks (timeouts) keep running as they are.
            overrides[Environment.Key(rawValue: "FAKETIME_DONT_FAKE_MONOTONIC")!] = "1"
            executable = .name("faketime")
            arguments = ["-f", clock, binary] + arguments
        }
        let result = try await Subprocess.run(
            executable,
            arguments: .init(arguments),
            environment: .inherit.updating(overrides),
            output: .string(limit: 16 << 20),
            error: .string(limit: 1 << 20)
        )
        let status: Int32
        switch result.terminationStatus {
        case .exited(let code): status = Int32(code)
        case .signaled(let signal): status = 128 + Int32(signal)
        }
        return CLIResult(
            arguments: arguments, status: status, stdout: result.standardOutput, stderr: result.standardError)
    }
}

/// A test database and the CLI pointed at it with `--database-url`.
struct CLIWorld: Sendable {
    let db: TestDatabase

    /// Runs `lockbox ARGS --database-url DB`.
    func lockbox(_ arguments: String...) async throws -> CLIResult {
        try await lockbox(arguments)
    }

    func lockbox(_ arguments: [String], clock: String? = nil) async throws -> CLIResult {
        try await CLI.run(arguments + ["--database-url", db.connectionString], clock: clock)
    }

    /// Runs the command and requires exit status 0.
    @discardableResult
    func ok(_ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) async throws -> CLIResult {
        let result = try await lockbox(arguments)
        #expect(result.status == 0, "\(result)", sourceLocation: sourceLocation)
        #expect(result.stderr.isEmpty, "\(result)", sourceLocation: sourceLocation)
        return result
    }

    /// Runs the command with `--format json` and requires success and a JSON object.
    func object(_ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String: Any]
    {
        let result = try await lockbox(arguments + ["--format", "json"])
        #expect(result.status == 0, "\(result)", sourceLocation: sourceLocation)
        return try result.jsonObject(sourceLocation: sourceLocation)
    }

    /// Runs the command with `--format json` and requires success and a JSON array.
    func array(
        _ arguments: String..., sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> [[String: Any]] {
        try await array(arguments, sourceLocation: sourceLocation)
    }

    func array(
        _ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> [[String: Any]] {
        let result = try await lockbox(arguments + ["--format", "json"])
        #expect(result.status == 0, "\(result)", sourceLocation: sourceLocation)
        return try result.jsonArray(sourceLocation: sourceLocation)
    }

    /// Runs the command and requires exit status 1 with one line on stderr containing `message`
    /// and nothing on stdout.
    @discardableResult
    func refused(
        _ arguments: [String], _ message: String, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> CLIResult {
        let result = try await lockbox(arguments)
        #expect(result.status == 1, "\(result)", sourceLocation: sourceLocation)
        #expect(result.stderrLines.count == 1, "one line on stderr: \(result)", sourceLocation: sourceLocation)
        #expect(result.stderr.contains(message), "expected “\(message)”: \(result)", sourceLocation: sourceLocation)
        #expect(result.stdout.isEmpty, "\(result)", sourceLocation: sourceLocation)
        #expect(
            !result.stderr.contains("SELECT") && !result.stderr.contains("SQLSTATE"), "\(result)",
            sourceLocation: sourceLocation)
        return result
    }

    /// A tenant `contoso` (Customer Lockbox on, admin `admin@contoso.com`, approver
    /// `approver@contoso.com`), a tenant `fabrikam` (lockbox on, approver `approver@fabrikam.com`),
    /// operators `alex` and `blake`, support managers `morgan` and `sam`.
    func seed() async throws {
        try await ok("tenant", "create", "contoso", "--admin", "admin@contoso.com")
        try await ok("tenant", "create", "fabrikam", "--admin", "admin@fabrikam.com")
        try await ok("tenant", "set", "contoso", "--customer-lockbox", "on", "--as", "admin@contoso.com")
        try await ok("tenant", "set", "fabrikam", "--customer-lockbox", "on", "--as", "admin@fabrikam.com")
        try await ok(
            "role", "add", "contoso", "approver@contoso.com", "--role", "CustomerLockboxApprover", "--as",
            "admin@contoso.com")
        try await ok(
            "role", "add", "fabrikam", "approver@fabrikam.com", "--role", "CustomerLockboxApprover", "--as",
            "admin@fabrikam.com")
        for alias in ["alex", "blake"] { try await ok("operator", "add", alias) }
        for alias in ["morgan", "sam"] { try await ok("operator", "add", alias, "--manager") }
    }

    /// Creates a request with the CLI and returns its id.
    func newRequest(
        by requester: String = "alex", tenant: String = "contoso", workload: String = "Exchange",
        duration: String = "2h", resource: String? = nil, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> String {
        var arguments = [
            "request", "create", "--operator", requester, "--tenant", tenant, "--workload", workload, "--ticket",
            "SR-100200", "--reason", "Mailbox does not sync after migration", "--duration", duration,
        ]
        if let resource { arguments += ["--resource", resource] }
        let result = try await lockbox(arguments + ["--format", "json"])
        #expect(result.status == 0, "\(result)", sourceLocation: sourceLocation)
        return try #require(try result.jsonObject()["requestId"] as? String, sourceLocation: sourceLocation)
    }

    /// Counts of every table and digests of requests, tenants and roles: equal before and
    /// after a refusal proves it changed nothing.
    func snapshot() async throws -> [String] {
        let rows = try await db.pool.query(
            """
            SELECT (SELECT count(*) FROM lockbox.tenants)::text, (SELECT count(*) FROM lockbox.tenant_roles)::text,
                (SELECT count(*) FROM lockbox.operators)::text, (SELECT count(*) FROM lockbox.requests)::text,
                (SELECT count(*) FROM lockbox.audit_records)::text, (SELECT count(*) FROM lockbox.notifications)::text,
                coalesce((SELECT md5(string_agg(r::text, ',' ORDER BY request_id)) FROM lockbox.requests r), ''),
                coalesce((SELECT md5(string_agg(t::text, ',' ORDER BY tenant_id)) FROM lockbox.tenants t), ''),
                coalesce((SELECT md5(string_agg(x::text, ',' ORDER BY upn, role)) FROM lockbox.tenant_roles x), ''),
                coalesce((SELECT md5(string_agg(o::text, ',' ORDER BY alias)) FROM lockbox.operators o), '')
            """)
        let row = try #require(rows.first)
        return row.values.map { $0 ?? "" }
    }

    static func with(_ body: (CLIWorld) async throws -> Void) async throws {
        try await TestDatabase.with { db in try await body(CLIWorld(db: db)) }
    }
}

/// A conninfo for another database on the test server.
func conninfo(_ db: TestDatabase, database: String) -> String {
    if db.conninfo.hasPrefix("postgres://") || db.conninfo.hasPrefix("postgresql://") {
        var components = URLComponents(string: db.conninfo)
        components?.path = "/" + database
        return components?.string ?? db.conninfo
    }
    return db.conninfo + " dbname=\(conninfoQuote(database))"
}

/// Parses ISO 8601 times as the CLI prints them.
func date(_ value: Any?) -> Date? {
    guard let text = value as? String else { return nil }
    return (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
        ?? (try? Date.ISO8601FormatStyle().parse(text))
}
