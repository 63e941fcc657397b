import LockboxPostgres
import LockboxTestSupport
import Testing

@Suite("migrations")
struct MigratorTests {
    let scripts = [
        MigrationScript(version: 1, name: "one", sql: "CREATE TABLE m1 (v int); INSERT INTO m1 VALUES (1)"),
        MigrationScript(version: 2, name: "two", sql: "CREATE TABLE m2 (v int)"),
    ]

    @Test("the project's migrations are embedded in order and apply to the template")
    func embedded() async throws {
        #expect(TestCluster.migrationScripts.map(\.version) == TestCluster.migrationScripts.map(\.version).sorted())
        #expect(TestCluster.migrationScripts.first?.version == 1)
        try await TestDatabase.with { db in
            let connection = try await db.connect()
            try await Migrator(migrations: TestCluster.migrationScripts).verify(on: connection)
            await connection.close()
        }
    }

    @Test("applying twice is a no-op")
    func idempotent() async throws {
        try await TestDatabase.with { db in
            let connection = try await db.connect()
            try await connection.execute(script: "DROP TABLE public.lockbox_schema_migrations")
            let migrator = Migrator(migrations: scripts)
            #expect(try await migrator.migrate(on: connection) == [1, 2])
            #expect(try await migrator.migrate(on: connection) == [])
            let rows = try await connection.query("SELECT count(*) FROM m1")
            #expect(try rows.first?.decode(Int.self, at: 0) == 1)
            await connection.close()
        }
    }

    @Test("a modified applied migration is refused and a newer schema is detected")
    func checksumMismatch() async throws {
        try await TestDatabase.with { db in
            let connection = try await db.connect()
            try await connection.execute(script: "DROP TABLE public.lockbox_schema_migrations")
            try await Migrator(migrations: scripts).migrate(on: connection)
            var changed = scripts
            changed[0].sql += " -- edited"
            let error = try await #require(throws: MigrationError.self) {
                try await Migrator(migrations: changed).migrate(on: connection)
            }
            #expect(error.code == .checksumMismatch)
            #expect(error.message.contains("migration 1 (one)"))
            let older = try await #require(throws: MigrationError.self) {
                try await Migrator(migrations: [scripts[0]]).verify(on: connection)
            }
            #expect(older.code == .unknownMigration)
            let pending = try await #require(throws: MigrationError.self) {
                try await Migrator(migrations: scripts + [MigrationScript(version: 3, name: "three", sql: "SELECT 1")])
                    .verify(on: connection)
            }
            #expect(pending.code == .pending)
            await connection.close()
        }
    }

    @Test("a failing migration leaves nothing behind")
    func failingMigration() async throws {
        try await TestDatabase.with { db in
            let connection = try await db.connect()
            try await connection.execute(script: "DROP TABLE public.lockbox_schema_migrations")
            let broken = [MigrationScript(version: 1, name: "broken", sql: "CREATE TABLE half (v int); SELECT 1/0")]
            let error = try await #require(throws: MigrationError.self) {
                try await Migrator(migrations: broken).migrate(on: connection)
            }
            #expect(error.code == .failed)
            let rows = try await connection.query("SELECT to_regclass('public.half') IS NULL")
            #expect(try rows.first?.decode(Bool.self, at: 0) == true)
            await connection.close()
        }
    }

    @Test("a database whose default is standard_conforming_strings off is migrated to the same rules as any other")
    func settingsOfTheDatabase() async throws {
        try await TestDatabase.with { db in
            // A database (or role) default the migrations cannot rely on: with it off, a backslash in a
            // quoted literal is an escape, so 0014/0017's link rule and 0001's UPN rule lost theirs
            // (`\.` became `.`, `\u00AD` became `u00AD`) and the database kept weaker rules.
            let other = db.name + "_scs"
            let admin = try await PGConnection.connect(db.conninfo)
            try await admin.execute(script: "CREATE DATABASE \(other) TEMPLATE template0")
            try await admin.execute(script: "ALTER DATABASE \(other) SET standard_conforming_strings = off")
            do {
                let connection = try await PGConnection.connect(db.conninfo, database: other)
                try await Migrator(migrations: TestCluster.migrationScripts).migrate(on: connection)
                let rules: PGQuery = """
                    SELECT pg_get_functiondef('lockbox.carries_link(text)'::regprocedure),
                        (SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'tenant_roles_upn_format')
                    """
                // Read as the fresh one is (the deparsed text doubles backslashes under the default).
                try await connection.execute(script: "SET standard_conforming_strings = on")
                let migrated = try #require(try await connection.query(rules).first).decode((String, String).self)
                await connection.close()
                let fresh = try #require(try await db.pool.query(rules).first).decode((String, String).self)
                #expect(migrated.0 == fresh.0)
                #expect(migrated.1 == fresh.1)
            } catch {
                try? await admin.execute(script: "DROP DATABASE IF EXISTS \(other) WITH (FORCE)")
                await admin.close()
                throw error
            }
            try await admin.execute(script: "DROP DATABASE IF EXISTS \(other) WITH (FORCE)")
            await admin.close()
        }
    }

    @Test("two migrators racing apply each file once", arguments: 0..<3)
    func racing(_ round: Int) async throws {
        try await TestDatabase.with { db in
            let setup = try await db.connect()
            try await setup.execute(script: "DROP TABLE public.lockbox_schema_migrations")
            await setup.close()
            let counted = [
                MigrationScript(version: 1, name: "counted", sql: "CREATE TABLE runs (v int); INSERT INTO runs VALUES (1)")
            ]
            let applied = try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<2 {
                    group.addTask {
                        let connection = try await db.connect()
                        let result = try await Migrator(migrations: counted).migrate(on: connection)
                        await connection.close()
                        return result
                    }
                }
                return try await group.reduce([], +)
            }
            #expect(applied == [1])
            let rows = try await db.pool.query("SELECT count(*) FROM runs")
            #expect(try rows.first?.decode(Int.self, at: 0) == 1)
        }
    }
}
