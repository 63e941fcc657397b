import ArgumentParser
import LockboxCore
import LockboxPostgres

/// Which tenants a database login may read through the auditor report views
/// (`lockbox.auditor_tenants`, from the auditor-roles migration).
struct AuditorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auditor",
        abstract: "Grant, revoke and list auditors' access to tenants' reports (by database login).",
        discussion: """
            An auditor is a PostgreSQL login with the auditor role; the report views show it only the \
            tenants granted here.

            \(examples(
                "lockbox auditor grant carol_audit --tenant contoso",
                "lockbox auditor revoke carol_audit --tenant contoso",
                "lockbox auditor list --tenant contoso"))
            """,
        subcommands: [Grant.self, Revoke.self, List.self]
    )

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "grant", abstract: "Let a database login read a tenant's reports.",
            discussion: examples("lockbox auditor grant carol_audit --tenant contoso"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The auditor's PostgreSQL login.") var login: String
        @Option(help: ArgumentHelp("The tenant.", valueName: "name")) var tenant: String

        func run() async throws {
            let login = try AuditorCommand.checkLogin(login)
            let records = try await options.database.withBroker { broker, session in
                let tenant = try await broker.tenant(named: tenant)
                try await AuditorCommand.requireTable(session.pool)
                let inserted = try await session.pool.query(
                    """
                    INSERT INTO lockbox.auditor_tenants (login, tenant_id) VALUES (\(login), \(tenant.tenantId))
                    ON CONFLICT DO NOTHING
                    """)
                guard inserted.affectedRows == 1 else {
                    throw CLIError("\(login) already audits tenant \(tenant.name)")
                }
                return try await AuditorCommand.list(session.pool, tenant: tenant.name)
            }
            options.printer.list(records, columns: ["login", "tenant"])
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke", abstract: "Stop a database login from reading a tenant's reports.",
            discussion: examples("lockbox auditor revoke carol_audit --tenant contoso"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "The auditor's PostgreSQL login.") var login: String
        @Option(help: ArgumentHelp("The tenant.", valueName: "name")) var tenant: String

        func run() async throws {
            let login = try AuditorCommand.checkLogin(login)
            let records = try await options.database.withBroker { broker, session in
                let tenant = try await broker.tenant(named: tenant)
                try await AuditorCommand.requireTable(session.pool)
                let deleted = try await session.pool.query(
                    "DELETE FROM lockbox.auditor_tenants WHERE login = \(login) AND tenant_id = \(tenant.tenantId)")
                guard deleted.affectedRows == 1 else {
                    throw CLIError("\(login) does not audit tenant \(tenant.name)")
                }
                return try await AuditorCommand.list(session.pool, tenant: tenant.name)
            }
            options.printer.list(records, columns: ["login", "tenant"])
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List which logins audit which tenants.",
            discussion: examples("lockbox auditor list", "lockbox auditor list --tenant contoso --format json"))

        @OptionGroup var options: GlobalOptions
        @Option(help: ArgumentHelp("Only this tenant.", valueName: "name")) var tenant: String?

        func run() async throws {
            let records = try await options.database.withBroker { broker, session in
                if let tenant { _ = try await broker.tenant(named: tenant) }
                try await AuditorCommand.requireTable(session.pool)
                return try await AuditorCommand.list(session.pool, tenant: tenant)
            }
            options.printer.list(records, columns: ["login", "tenant"])
        }
    }

    /// A PostgreSQL login name: 1 to 63 bytes, no control characters.
    static func checkLogin(_ login: String) throws -> String {
        guard (1...63).contains(login.utf8.count),
            !login.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw CLIError("login: must be a PostgreSQL login name of 1 to 63 bytes without control characters")
        }
        return login
    }

    static func requireTable(_ pool: PGPool) async throws {
        let rows = try await pool.query("SELECT to_regclass('lockbox.auditor_tenants') IS NOT NULL")
        guard try rows.first?.decode(Bool.self, at: 0) == true else {
            throw CLIError(
                "this database has no auditor mapping table lockbox.auditor_tenants "
                    + "(migration auditor_roles is not applied)")
        }
    }

    static func list(_ pool: PGPool, tenant: String?) async throws -> [Record] {
        var query: PGQuery = """
            SELECT a.login, t.name FROM lockbox.auditor_tenants a JOIN lockbox.tenants t ON t.tenant_id = a.tenant_id
            """
        if let tenant { query += " WHERE t.name = \(tenant)" }
        query += " ORDER BY a.login, t.name"
        return try await pool.query(query).map { row in
            let (login, tenant) = try row.decode((String, String).self)
            return Record([("login", .string(login)), ("tenant", .string(tenant))])
        }
    }
}
