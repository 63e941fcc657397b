import ArgumentParser
import Foundation
import LockboxPostgres

struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "The database: apply migrations, show where it is and what is applied, stop the embedded cluster.",
        discussion: examples("lockbox db status", "lockbox db migrate --database-url postgres://lockbox@db/lockbox"),
        subcommands: [Migrate.self, Status.self, Stop.self]
    )

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate",
            abstract: "Apply pending migrations (each in its own transaction); prints what was applied.",
            discussion: """
                Refuses a database whose applied migrations changed or that has migrations this binary \
                does not know (a newer schema).

                \(examples(
                    "lockbox db migrate",
                    "lockbox db migrate --database-url \"host=/var/run/postgresql dbname=lockbox\""))
                """)

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let (appliedNow, applied) = try await options.withSession(verify: false) { session in
                // As long as it takes: a migration may rewrite a large table.
                try await session.pool.withConnection { connection in
                    let migrator = Schema.migrator
                    let now = try await migrator.migrate(on: connection)
                    return (now, try await migrator.applied(on: connection))
                }
            }
            options.printer.object(
                Record([("appliedNow", .array(appliedNow.map { .int($0) }))]),
                sections: [
                    Section(
                        key: "migrations", records: migrationRecords(applied: applied),
                        columns: ["version", "name", "status", "appliedAt"])
                ])
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status",
            abstract: "Where the database is, whether it runs, and which migrations are applied.",
            discussion: """
                Does not start a stopped embedded cluster.

                \(examples("lockbox db status", "lockbox db status --format json"))
                """)

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let location = try DatabaseLocation.resolve(options.database)
            var record = Record([("location", .string(location.kind)), ("database", .string(location.summary))])
            var applied: [Migrator.Applied]?
            switch location {
            case .url(let url, _):
                applied = try await Self.applied(conninfo: url, timeout: options.timeout)
            case .environment:
                applied = try await Self.applied(conninfo: nil, timeout: options.timeout)
            case .embedded(let home):
                let running = try await home.cluster.isRunning()
                record.append("home", .string(home.home))
                record.append("clusterDirectory", .string(home.cluster.directory))
                record.append("locationFile", .string(home.locationFile))
                record.append("created", .bool(home.exists))
                record.append("running", .bool(running))
                record.append("serverLog", .string(home.cluster.logFile))
                if running { applied = try await Self.appliedIfExists(home, timeout: options.timeout) }
            }
            if let applied {
                record.append("schema", .string(Self.schemaState(applied)))
            } else {
                record.append("schema", .string("unknown (the embedded cluster is not running)"))
            }
            options.printer.object(
                record,
                sections: [
                    Section(
                        key: "migrations",
                        records: migrationRecords(applied: applied),
                        columns: ["version", "name", "status", "appliedAt"])
                ])
        }

        static func applied(conninfo: String?, timeout: Duration) async throws -> [Migrator.Applied] {
            let connection: PGConnection
            do {
                connection = try await PGConnection.connect(conninfo)
            } catch {
                throw conninfo.map { DatabaseLocation.redacting($0, in: error) } ?? error
            }
            connection.defaultTimeout = timeout
            do {
                let applied = try await Schema.migrator.applied(on: connection)
                await connection.close()
                return applied
            } catch {
                await connection.close()
                throw error
            }
        }

        static func appliedIfExists(_ home: EmbeddedHome, timeout: Duration) async throws -> [Migrator.Applied] {
            let admin = try await PGConnection.connect(home.cluster.conninfo(database: "postgres"))
            let found = try await admin.query(
                "SELECT count(*) FROM pg_database WHERE datname = \(EmbeddedHome.databaseName)", timeout: timeout)
            await admin.close()
            guard try found.first?.decode(Int.self, at: 0) == 1 else { return [] }
            return try await applied(conninfo: home.conninfo, timeout: timeout)
        }

        static func schemaState(_ applied: [Migrator.Applied]) -> String {
            let known = Set(Schema.migrator.migrations.map(\.version))
            let unknown = applied.filter { !known.contains($0.version) }
            if !unknown.isEmpty {
                return "newer than this binary (unknown migrations "
                    + unknown.map { String($0.version) }.joined(separator: ", ") + ")"
            }
            let pending = known.subtracting(applied.map(\.version))
            if pending.isEmpty { return "up to date" }
            return "\(pending.count) migration(s) pending: run `lockbox db migrate`"
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stop",
            abstract: "Stop the embedded cluster of $LOCKBOX_HOME (the next command starts it again).",
            discussion: examples("lockbox db stop", "LOCKBOX_HOME=/srv/lockbox lockbox db stop"))

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            guard case .embedded(let home) = try DatabaseLocation.resolve(options.database) else {
                throw CLIError(
                    "db stop only stops the embedded cluster, and this command uses "
                        + (try DatabaseLocation.resolve(options.database)).summary)
            }
            let wasRunning = try await home.cluster.isRunning()
            try await home.stop()
            options.printer.object(
                Record([
                    ("clusterDirectory", .string(home.cluster.directory)), ("wasRunning", .bool(wasRunning)),
                    ("running", .bool(false)),
                ]))
        }
    }
}

/// Applied migrations, then the ones this binary knows that are not applied: `pending`, or
/// `unknown` when the database cannot be asked which are (`applied` nil: a stopped embedded
/// cluster, which was migrated when it was created, so never `pending`).
private func migrationRecords(applied: [Migrator.Applied]?) -> [Record] {
    let known = Schema.migrator.migrations
    let notApplied = applied == nil ? "unknown" : "pending"
    let applied = applied ?? []
    var records = applied.map { migration in
        Record([
            ("version", .int(migration.version)), ("name", .string(migration.name)),
            (
                "status",
                .string(known.contains { $0.version == migration.version } ? "applied" : "unknown to this binary")
            ),
            ("appliedAt", .date(migration.appliedAt)),
        ])
    }
    for migration in known where !applied.contains(where: { $0.version == migration.version }) {
        records.append(
            Record([
                ("version", .int(migration.version)), ("name", .string(migration.name)),
                ("status", .string(notApplied)),
                ("appliedAt", .null),
            ]))
    }
    return records
}
