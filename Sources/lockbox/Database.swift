import ArgumentParser
import Dispatch
import Foundation
import LockboxConnectors
import LockboxCore
import LockboxPostgres
import LockboxSQL

/// A refusal by the command line itself (not the broker): one line on stderr, exit 1.
struct CLIError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// The project's migrations, as the migrator takes them.
enum Schema {
    static var migrator: Migrator {
        Migrator(
            migrations: LockboxSQL.migrations.map { MigrationScript(version: $0.version, name: $0.name, sql: $0.sql) })
    }
}

/// Where the database is, by the rules of the command line:
/// `--database-url`, else `LOCKBOX_DATABASE_URL`, else libpq's environment when
/// any `PG*` variable is set (and not empty), else the embedded cluster in `$LOCKBOX_HOME`.
enum DatabaseLocation: Sendable {
    /// A URL or conninfo string, and where it came from.
    case url(String, source: String)
    /// libpq's environment; the `PG*` variables that are set.
    case environment(variables: [String])
    /// The private cluster of `$LOCKBOX_HOME`.
    case embedded(EmbeddedHome)

    static func resolve(
        _ options: DatabaseOptions, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> DatabaseLocation {
        if let url = options.databaseURL { return .url(url, source: "--database-url") }
        if let url = environment["LOCKBOX_DATABASE_URL"], !url.isEmpty {
            return .url(url, source: "LOCKBOX_DATABASE_URL")
        }
        // An empty variable is unset to libpq too (`PGDATABASE=` names no database).
        let libpq = environment.filter { $0.key.hasPrefix("PG") && !$0.value.isEmpty }.keys.sorted()
        if !libpq.isEmpty { return .environment(variables: libpq) }
        return .embedded(try EmbeddedHome.resolve(environment: environment))
    }

    /// Names the database for people, without passwords.
    var summary: String {
        switch self {
        case .url(let url, let source): "\(Self.redact(url)) (from \(source))"
        case .environment(let variables): "libpq environment (\(variables.joined(separator: ", ")))"
        case .embedded(let home): "embedded cluster \(home.cluster.directory) (LOCKBOX_HOME \(home.home))"
        }
    }

    var kind: String {
        switch self {
        case .url: "url"
        case .environment: "environment"
        case .embedded: "embedded"
        }
    }

    /// Hides the password of a URL (`postgres://u:***@h/db`) or conninfo string (`password=***`).
    static func redact(_ conninfo: String) -> String {
        if conninfo.hasPrefix("postgres://") || conninfo.hasPrefix("postgresql://"),
            var components = URLComponents(string: conninfo)
        {
            if components.password != nil { components.password = "***" }
            if let items = components.queryItems {
                components.queryItems = items.map {
                    $0.name == "password" ? URLQueryItem(name: "password", value: "***") : $0
                }
            }
            if let redacted = components.string { return redacted }
        }
        if conninfo.hasPrefix("postgres://") || conninfo.hasPrefix("postgresql://") {
            // A URL that URLComponents cannot read (`postgres://u:pw@[::1`): the password is what
            // libpq would take, from the user's ':' to the '@', and any password= parameter.
            return conninfo.replacing(/^(postgres(?:ql)?:\/\/[^:@\/?#]*:)[^@\/?#]*@/) { "\($0.1)***@" }
                .replacing(/([?&]password=)[^&#]*/) { "\($0.1)***" }
        }
        return conninfo.replacing(/password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/) { _ in "password=***" }
    }

    /// `error`, with `conninfo` in its message shown as ``redact(_:)`` shows it: libpq's
    /// complaint about a malformed URL quotes it whole, password included
    /// (`… in IPv6 host address in URI: "postgres://u:secret@[::1"`).
    static func redacting(_ conninfo: String, in error: any Error) -> any Error {
        guard var error = error as? PostgresError, error.message.contains(conninfo) else { return error }
        error.message = error.message.replacingOccurrences(of: conninfo, with: redact(conninfo))
        return error
    }
}

/// The embedded cluster of a `$LOCKBOX_HOME`.
///
/// Normally the cluster lives in `$LOCKBOX_HOME/postgres`. As root the server
/// runs as the `postgres` user, which cannot enter `/root`, so the cluster goes
/// to `/var/tmp/lockbox-<hash of LOCKBOX_HOME>`; the same happens when the home's
/// path is too long for a Unix socket or holds a comma. The chosen place is written to
/// `$LOCKBOX_HOME/cluster-location` and shown by `lockbox db status`.
struct EmbeddedHome: Sendable {
    let home: String
    let cluster: EmbeddedPostgres
    /// The database the CLI uses inside the cluster.
    static let databaseName = "lockbox"

    var locationFile: String { home + "/cluster-location" }
    var conninfo: String { cluster.conninfo(database: Self.databaseName) }
    var exists: Bool { FileManager.default.fileExists(atPath: cluster.dataDirectory + "/PG_VERSION") }

    static func resolve(environment: [String: String]) throws -> EmbeddedHome {
        var home =
            environment["LOCKBOX_HOME"].flatMap { $0.isEmpty ? nil : $0 }
            ?? FileManager.default.homeDirectoryForCurrentUser.path + "/.lockbox"
        if !home.hasPrefix("/") { home = FileManager.default.currentDirectoryPath + "/" + home }
        home = URL(fileURLWithPath: home).standardizedFileURL.path
        let locationFile = home + "/cluster-location"
        if let recorded = try? String(contentsOfFile: locationFile, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines), !recorded.isEmpty
        {
            return EmbeddedHome(home: home, cluster: EmbeddedPostgres(directory: recorded, durable: true))
        }
        var directory = home + "/postgres"
        if geteuid() == 0 || EmbeddedPostgres.socketDirectoryProblem(directory) != nil {
            directory = "/var/tmp/lockbox-" + Migrator.checksum(home).prefix(12)
        }
        return EmbeddedHome(home: home, cluster: EmbeddedPostgres(directory: directory, durable: true))
    }

    /// Creates, migrates and starts the cluster as needed, and returns the conninfo of its database.
    ///
    /// A cluster (or its database) created now is migrated now; an existing one is
    /// left as it is for `lockbox db migrate`. Concurrent invocations wait for each other.
    func open() async throws -> String {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: home, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw CLIError("LOCKBOX_HOME \(home) is not a directory: set LOCKBOX_HOME to a directory, or remove it")
        }
        do {
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        } catch {
            let reason = ((error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError)?.localizedDescription
            throw CLIError("cannot create LOCKBOX_HOME \(home): \(reason ?? error.localizedDescription)")
        }
        return try await withLock {
            do {
                try await cluster.start()
            } catch let failure as EmbeddedPostgres.Failure {
                throw CLIError(
                    "the embedded PostgreSQL in \(cluster.directory) could not be started: \(failure.message) "
                        + "(server log: \(cluster.logFile))")
            }
            try cluster.directory.write(toFile: locationFile, atomically: true, encoding: .utf8)
            let admin = try await PGConnection.connect(cluster.conninfo(database: "postgres"))
            do {
                let found = try await admin.query(
                    "SELECT count(*) FROM pg_database WHERE datname = \(Self.databaseName)")
                if try found.first?.decode(Int.self, at: 0) == 0 {
                    try await admin.execute(script: "CREATE DATABASE \(Self.databaseName)")
                    let connection = try await PGConnection.connect(conninfo)
                    do {
                        try await Schema.migrator.migrate(on: connection)
                        await connection.close()
                    } catch {
                        await connection.close()
                        throw error
                    }
                }
                await admin.close()
            } catch {
                await admin.close()
                throw error
            }
            return conninfo
        }
    }

    /// Stops the cluster holding the home's lock, as ``open()`` starts it: a command started
    /// meanwhile waits, then starts it again, instead of finding a server still shutting down
    /// (`the database system is shutting down`).
    func stop() async throws {
        guard FileManager.default.fileExists(atPath: home) else { return try await cluster.stop() }
        try await withLock { try await cluster.stop() }
    }

    /// Holds an exclusive lock on `$LOCKBOX_HOME/.lock` while `body` runs.
    private func withLock<T>(_ body: () async throws -> T) async throws -> T {
        let descriptor = Foundation.open(home + "/.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw CLIError("cannot open \(home)/.lock: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        // flock blocks: wait on a queue of its own, never on the cooperative pool (nor on
        // Dispatch's global queue, which is, on Linux, the pool Swift's tasks run on).
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue(label: "lockbox.home.lock").async {
                _ = flock(descriptor, LOCK_EX)
                continuation.resume()
            }
        }
        return try await body()
    }
}

/// An open database: a pool on it, the connectors and a broker on the system clock,
/// checked against the database server's (``ServerCheckedClock``).
struct Session: Sendable {
    let location: DatabaseLocation
    let pool: PGPool
    let registry: ConnectorRegistry
    let clock: ServerCheckedClock
    /// How long each statement waits for the database's answer (the broker's ``Broker/statementTimeout``).
    let timeout: Duration

    /// Opens the database the options name.
    ///
    /// - Parameter verify: refuse (with the migrator's message) unless the schema is
    ///   exactly the one this binary knows.
    /// - Parameter timeout: how long the checks of the schema and the clock, and then the
    ///   broker's statements, wait for the database's answer.
    static func open(
        _ options: DatabaseOptions, verify: Bool = true, timeout: Duration = Broker.defaultStatementTimeout
    ) async throws -> Session {
        let location = try DatabaseLocation.resolve(options)
        let conninfo: String?
        switch location {
        case .url(let url, _): conninfo = url
        case .environment: conninfo = nil
        case .embedded(let home): conninfo = try await home.open()
        }
        let pool = PGPool(conninfo: conninfo, maxConnections: 4)
        do {
            if verify { try await pool.withConnection(timeout: timeout) { try await Schema.migrator.verify(on: $0) } }
            let clock = try await ServerCheckedClock.measured(against: pool, timeout: timeout)
            return Session(
                location: location, pool: pool, registry: standardConnectors(), clock: clock, timeout: timeout)
        } catch {
            await pool.close()
            throw conninfo.map { DatabaseLocation.redacting($0, in: error) } ?? error
        }
    }

    /// A broker on `clock`; by default the system clock, checked against the server's.
    func broker(clock: (any LockboxClock)? = nil) -> Broker {
        Broker(
            pool: pool, clock: clock ?? self.clock, workloads: registry.workloads, scopePaths: registry.scopePaths,
            groupCommit: false, statementTimeout: timeout)
    }

    func close() async { await pool.close() }
}

extension DatabaseOptions {
    /// Runs `body` on an open, verified database and closes it afterwards.
    func withSession<T: Sendable>(
        verify: Bool = true, timeout: Duration = Broker.defaultStatementTimeout, _ body: (Session) async throws -> T
    ) async throws -> T {
        let session = try await Session.open(self, verify: verify, timeout: timeout)
        do {
            let value = try await body(session)
            await session.close()
            return value
        } catch {
            await session.close()
            throw error
        }
    }

    func validate() throws {
        if let databaseURL, databaseURL.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ValidationError("--database-url must not be empty")
        }
    }
}
