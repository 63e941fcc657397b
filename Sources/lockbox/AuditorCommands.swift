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
            let grants = try await options.withBroker { broker, _ in
                try await broker.grantAuditor(login: login, tenant: tenant)
            }
            options.printer.list(grants)
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
            let grants = try await options.withBroker { broker, _ in
                try await broker.revokeAuditor(login: login, tenant: tenant)
            }
            options.printer.list(grants)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List which logins audit which tenants.",
            discussion: examples("lockbox auditor list", "lockbox auditor list --tenant contoso --format json"))

        @OptionGroup var options: GlobalOptions
        @Option(help: ArgumentHelp("Only this tenant.", valueName: "name")) var tenant: String?

        func run() async throws {
            let grants = try await options.withBroker { broker, _ in
                try await broker.auditorGrants(tenant: tenant)
            }
            options.printer.list(grants)
        }
    }
}
