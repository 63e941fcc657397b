import Foundation
import LockboxPostgres
import LockboxSQL
import Logging

/// A freshly migrated database of its own for one test.
public struct TestDatabase: Sendable {
    /// Conninfo of the server (a URL or `key=value` string), without the database.
    public let conninfo: String
    /// The database created for this test.
    public let name: String
    /// A pool on it.
    public let pool: PGPool

    /// A conninfo string that names this database, for processes (the CLI) and raw connections.
    public var connectionString: String { TestCluster.conninfo(conninfo, database: name) }

    /// Creates a database from the migrated template, runs `body`, then drops it.
    ///
    /// The server is `LOCKBOX_TEST_DATABASE_URL` when set; otherwise a private
    /// cluster started once per test process on a Unix socket in a temporary
    /// directory, removed when the process exits.
    ///
    /// At most ``maximumAtOnce`` run at a time; the others wait for a turn. Swift Testing starts
    /// every test at once, and each holds a pool (and the CLI tests' processes pools of their
    /// own): on a busy machine, where tests overlap longer, the server's 300 connections ran
    /// out and tests failed with "sorry, too many clients already".
    public static func with<T: Sendable>(
        maxConnections: Int = 8,
        _ body: (TestDatabase) async throws -> T
    ) async throws -> T {
        await turns.acquire()
        do {
            let value = try await withNewDatabase(maxConnections: maxConnections, body)
            await turns.release()
            return value
        } catch {
            await turns.release()
            throw error
        }
    }

    /// Creates a database from the migrated template, runs `body`, then drops it.
    private static func withNewDatabase<T: Sendable>(
        maxConnections: Int, _ body: (TestDatabase) async throws -> T
    ) async throws -> T {
        let (conninfo, name) = try await TestCluster.shared.createDatabase()
        let pool = PGPool(conninfo: conninfo, database: name, maxConnections: maxConnections)
        let database = TestDatabase(conninfo: conninfo, name: name, pool: pool)
        do {
            let value = try await body(database)
            await pool.close()
            try await TestCluster.shared.dropDatabase(name)
            return value
        } catch {
            await pool.close()
            try? await TestCluster.shared.dropDatabase(name)
            throw error
        }
    }

    /// How many test databases exist at once, at most (see ``with(maxConnections:_:)``).
    public static let maximumAtOnce = 12
    static let turns = Turns(maximumAtOnce)

    /// Opens a connection of its own to this database.
    public func connect() async throws -> PGConnection {
        try await PGConnection.connect(conninfo, database: name)
    }
}

/// The server the tests share: started (or found) once per test process.
public actor TestCluster {
    public static let shared = TestCluster()

    private var starting: Task<(conninfo: String, template: String), any Error>?
    private var counter = 0
    private let processTag = "\(getpid())_\(UInt32.random(in: 0...UInt32.max))"

    /// The embedded cluster, when the tests started one.
    public private(set) var embedded: EmbeddedPostgres?

    static func conninfo(_ base: String, database: String) -> String {
        if base.hasPrefix("postgres://") || base.hasPrefix("postgresql://") {
            var components = URLComponents(string: base)
            components?.path = "/" + database
            return components?.string ?? base
        }
        return base + " dbname=\(conninfoQuote(database))"
    }

    /// Server conninfo and the name of a migrated template database.
    public func prepare() async throws -> (conninfo: String, template: String) {
        if let starting { return try await starting.value }
        let task = Task { try await self.start() }
        starting = task
        return try await task.value
    }

    private func start() async throws -> (conninfo: String, template: String) {
        let conninfo: String
        if let url = ProcessInfo.processInfo.environment["LOCKBOX_TEST_DATABASE_URL"], !url.isEmpty {
            conninfo = url
        } else {
            let cluster = EmbeddedPostgres(
                directory: NSTemporaryDirectory() + "lockbox-test-\(processTag)", durable: false)
            try await cluster.start()
            try await cluster.removeWhenProcessExits(getpid())
            embedded = cluster
            conninfo = cluster.conninfo(database: "postgres")
        }
        let template = "lockbox_template_\(processTag)"
        let admin = try await PGConnection.connect(conninfo)
        try await admin.execute(script: "CREATE DATABASE \(quoteIdentifier(template))")
        await admin.close()
        let connection = try await PGConnection.connect(conninfo, database: template)
        try await Migrator(migrations: TestCluster.migrationScripts).migrate(on: connection)
        await connection.close()
        return (conninfo, template)
    }

    /// The project's migrations as the migrator takes them.
    public static var migrationScripts: [MigrationScript] {
        LockboxSQL.migrations.map { MigrationScript(version: $0.version, name: $0.name, sql: $0.sql) }
    }

    func createDatabase() async throws -> (conninfo: String, name: String) {
        let (conninfo, template) = try await prepare()
        counter += 1
        let name = "lockbox_test_\(processTag)_\(counter)"
        let admin = try await PGConnection.connect(conninfo)
        defer { Task { await admin.close() } }
        try await admin.execute(script: "CREATE DATABASE \(quoteIdentifier(name)) TEMPLATE \(quoteIdentifier(template))")
        return (conninfo, name)
    }

    func dropDatabase(_ name: String) async throws {
        guard let starting else { return }
        let server = try await starting.value
        let admin = try await PGConnection.connect(server.conninfo)
        try await admin.execute(script: "DROP DATABASE IF EXISTS \(quoteIdentifier(name)) WITH (FORCE)")
        await admin.close()
    }
}

/// A counting semaphore for tasks: `acquire` waits (without blocking a thread) for a free turn.
actor Turns {
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(_ count: Int) { free = count }

    func acquire() async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty {
            free += 1
        } else {
            waiting.removeFirst().resume()
        }
    }
}
