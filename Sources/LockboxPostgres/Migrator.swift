import Logging

/// One schema migration: a numbered SQL script.
public struct MigrationScript: Sendable, Hashable {
    public var version: Int
    public var name: String
    public var sql: String
    public init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }
}

/// Why migrations could not be applied or the schema is not usable.
public struct MigrationError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// An applied migration's file has changed since it was applied.
        case checksumMismatch
        /// The database has migrations this binary does not know (a newer schema).
        case unknownMigration
        /// Some migrations are not applied yet.
        case pending
        /// A migration's SQL failed.
        case failed
    }
    public var code: Code
    public var message: String
    public var description: String { message }
}

/// Applies numbered migrations in order, each in its own transaction, recorded
/// with a checksum in `public.lockbox_schema_migrations`. Concurrent migrators
/// are serialised with an advisory lock.
public struct Migrator: Sendable {
    /// The advisory lock key migrators take (arbitrary, fixed).
    public static let lockKey: Int64 = 0x10C_B0C5
    public let migrations: [MigrationScript]
    private let logger: Logger

    public init(migrations: [MigrationScript], logger: Logger = Logger(label: "lockbox.migrations")) {
        self.migrations = migrations.sorted { $0.version < $1.version }
        self.logger = logger
    }

    /// An applied migration as recorded in the database.
    public struct Applied: Sendable {
        public var version: Int
        public var name: String
        public var checksum: String
        public var appliedAt: Date
    }

    /// Applies every pending migration; returns the versions applied now.
    ///
    /// - Throws: ``MigrationError`` `.checksumMismatch` if an applied file changed,
    ///   `.unknownMigration` if the database is newer than this binary, `.failed`
    ///   (with the server's message) if a script fails; that script leaves nothing behind.
    @discardableResult
    public func migrate(on connection: PGConnection) async throws -> [Int] {
        _ = try await connection.query("SELECT pg_advisory_lock(\(Self.lockKey))")
        do {
            // Created only when missing: CREATE TABLE IF NOT EXISTS needs CREATE on the schema even
            // when the table is there, so a login that may not change the schema (lockbox_app) was
            // refused ("permission denied for schema public") with nothing to apply.
            if try await !Self.hasTable(on: connection) { try await connection.execute(script: Self.createTable) }
            let appliedNow = try await applyPending(on: connection)
            _ = try await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))")
            return appliedNow
        } catch {
            _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.lockKey))")
            throw error
        }
    }

    /// Checks that every known migration is applied unchanged and that the
    /// database has none this binary does not know.
    public func verify(on connection: PGConnection) async throws {
        let applied = try await self.applied(on: connection)
        try check(applied)
        let missing = migrations.filter { migration in !applied.contains { $0.version == migration.version } }
        if !missing.isEmpty {
            throw MigrationError(
                code: .pending,
                message: "the database schema is not up to date: migrations "
                    + missing.map { "\($0.version) (\($0.name))" }.joined(separator: ", ")
                    + " are not applied; run `lockbox db migrate`"
            )
        }
    }

    /// The migrations recorded in the database (empty if the table does not exist).
    public func applied(on connection: PGConnection) async throws -> [Applied] {
        guard try await Self.hasTable(on: connection) else { return [] }
        let rows = try await connection.query(
            "SELECT version, name, checksum, applied_at FROM public.lockbox_schema_migrations ORDER BY version")
        return try rows.map { row in
            let (version, name, checksum, appliedAt) = try row.decode((Int, String, String, Date).self)
            return Applied(version: version, name: name, checksum: checksum, appliedAt: appliedAt)
        }
    }

    private func applyPending(on connection: PGConnection) async throws -> [Int] {
        let applied = try await self.applied(on: connection)
        try check(applied)
        var appliedNow: [Int] = []
        for migration in migrations where !applied.contains(where: { $0.version == migration.version }) {
            logger.debug("applying migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            do {
                try await connection.execute(script: Self.begin)
                try await connection.execute(script: migration.sql)
                try await connection.query(
                    """
                    INSERT INTO public.lockbox_schema_migrations (version, name, checksum)
                    VALUES (\(migration.version), \(migration.name), \(Self.checksum(migration.sql)))
                    """)
                try await connection.execute(script: "COMMIT")
            } catch {
                try? await connection.execute(script: "ROLLBACK")
                throw MigrationError(
                    code: .failed,
                    message: "migration \(migration.version) (\(migration.name)) failed: \(error)")
            }
            appliedNow.append(migration.version)
        }
        return appliedNow
    }

    private func check(_ applied: [Applied]) throws {
        for record in applied {
            guard let known = migrations.first(where: { $0.version == record.version }) else {
                throw MigrationError(
                    code: .unknownMigration,
                    message: "the database has migration \(record.version) (\(record.name)) that this lockbox "
                        + "does not know: the schema is newer than this binary")
            }
            if Self.checksum(known.sql) != record.checksum {
                throw MigrationError(
                    code: .checksumMismatch,
                    message: "migration \(record.version) (\(record.name)) was changed after it was applied "
                        + "(checksum \(record.checksum.prefix(12)) in the database, \(Self.checksum(known.sql).prefix(12)) "
                        + "in this build); add a new migration instead of editing an applied one")
            }
        }
    }

    /// Opens a migration's transaction with the settings the scripts are written for. A database
    /// or role default of `standard_conforming_strings = off` made a backslash in a quoted literal an
    /// escape: the link rule (0014, 0017) and the UPN rule (0001) lost theirs and were kept weaker,
    /// with no error. (Names are schema-qualified, so the scripts need no search_path.)
    static let begin = "BEGIN; SET LOCAL lockbox.migrating = 'on'; SET LOCAL standard_conforming_strings = on"

    /// Whether `public.lockbox_schema_migrations` exists.
    private static func hasTable(on connection: PGConnection) async throws -> Bool {
        let exists = try await connection.query("SELECT to_regclass('public.lockbox_schema_migrations') IS NOT NULL")
        return try exists.first?.decode(Bool.self, at: 0) == true
    }

    static let createTable = """
        CREATE TABLE IF NOT EXISTS public.lockbox_schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )
        """

    /// FNV-1a 64-bit over the UTF-8 bytes, as 16 hex digits: stable across builds and platforms.
    public static func checksum(_ sql: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in sql.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

import struct Foundation.Date
