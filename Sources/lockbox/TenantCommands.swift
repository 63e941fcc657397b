import ArgumentParser
import LockboxCore

// MARK: tenant

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Create, list and show customer tenants; turn Customer Lockbox on or off.",
        discussion: examples(
            "lockbox tenant create contoso --admin admin@contoso.com",
            "lockbox tenant set contoso --customer-lockbox on --as admin@contoso.com"),
        subcommands: [Create.self, List.self, Show.self, SetSetting.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Create a tenant (Customer Lockbox off) with its first global administrator.",
            discussion: examples("lockbox tenant create contoso --admin admin@contoso.com"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name: letters, digits and hyphens.") var name: String
        @Option(help: ArgumentHelp("The first global administrator.", valueName: "upn")) var admin: String

        func run() async throws {
            let tenant = try await options.withBroker { broker, _ in
                try await broker.createTenant(name: name, admin: admin)
            }
            options.printer.object(tenant.record)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List tenants.", discussion: examples("lockbox tenant list --format csv"))

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let tenants = try await options.withBroker { broker, _ in try await broker.tenants() }
            options.printer.list(tenants)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show", abstract: "Show a tenant and its role assignments.",
            discussion: examples("lockbox tenant show contoso --format json"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.") var name: String

        func run() async throws {
            let (tenant, roles) = try await options.withBroker { broker, _ in
                (try await broker.tenant(named: name), try await broker.roles(tenant: name))
            }
            options.printer.object(
                tenant.record,
                sections: [Section(key: "roles", records: roles.map(\.record), columns: RoleAssignment.tableColumns)])
        }
    }

    struct SetSetting: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Turn Customer Lockbox on or off (global administrators of the tenant only).",
            discussion: examples("lockbox tenant set contoso --customer-lockbox on --as admin@contoso.com"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.") var name: String
        @Option(help: ArgumentHelp("The Customer Lockbox setting.", valueName: "on|off"))
        var customerLockbox: Switch
        @Option(
            name: .customLong("as"), help: ArgumentHelp("The global administrator making the change.", valueName: "upn")
        )
        var principal: String
        @Option(
            help: ArgumentHelp("Client IP address to record in the audit log.", valueName: "addr"),
            transform: IPAddressArgument.parse)
        var ip: IPAddressArgument?

        func run() async throws {
            let tenant = try await options.withBroker { broker, _ in
                try await broker.setCustomerLockbox(
                    tenant: name, enabled: customerLockbox == .on, by: principal, clientIP: ip?.address)
            }
            options.printer.object(tenant.record)
        }
    }
}

// MARK: role

struct RoleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "role",
        abstract: "Assign, remove and list customer roles (global administrators of the tenant only).",
        discussion: examples(
            "lockbox role add contoso approver@contoso.com --role CustomerLockboxApprover --as admin@contoso.com",
            "lockbox role list contoso"),
        subcommands: [Add.self, Remove.self, List.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add", abstract: "Assign a role to a customer user.",
            discussion: examples(
                "lockbox role add contoso approver@contoso.com --role CustomerLockboxApprover --as admin@contoso.com"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.") var tenant: String
        @Argument(help: "The user to receive the role.") var upn: String
        @Option(help: ArgumentHelp("The role.", valueName: "GlobalAdministrator|CustomerLockboxApprover"))
        var role: CustomerRole
        @Option(name: .customLong("as"), help: ArgumentHelp("The global administrator assigning it.", valueName: "upn"))
        var principal: String
        @Option(
            help: ArgumentHelp("Client IP address to record in the audit log.", valueName: "addr"),
            transform: IPAddressArgument.parse)
        var ip: IPAddressArgument?

        func run() async throws {
            let assignment = try await options.withBroker { broker, _ in
                try await broker.addRole(tenant: tenant, upn: upn, role: role, by: principal, clientIP: ip?.address)
            }
            options.printer.object(assignment.record)
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "remove",
            abstract:
                "Remove a role from a customer user (the last global administrator stays); prints the roles left.",
            discussion: examples(
                "lockbox role remove contoso approver@contoso.com --role CustomerLockboxApprover --as admin@contoso.com"
            ))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.") var tenant: String
        @Argument(help: "The user losing the role.") var upn: String
        @Option(help: ArgumentHelp("The role.", valueName: "GlobalAdministrator|CustomerLockboxApprover"))
        var role: CustomerRole
        @Option(name: .customLong("as"), help: ArgumentHelp("The global administrator removing it.", valueName: "upn"))
        var principal: String
        @Option(
            help: ArgumentHelp("Client IP address to record in the audit log.", valueName: "addr"),
            transform: IPAddressArgument.parse)
        var ip: IPAddressArgument?

        func run() async throws {
            let roles = try await options.withBroker { broker, _ in
                try await broker.removeRole(tenant: tenant, upn: upn, role: role, by: principal, clientIP: ip?.address)
            }
            options.printer.list(roles)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List the role assignments of a tenant.",
            discussion: examples("lockbox role list contoso"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Tenant name.") var tenant: String

        func run() async throws {
            let roles = try await options.withBroker { broker, _ in try await broker.roles(tenant: tenant) }
            options.printer.list(roles)
        }
    }
}

// MARK: operator

struct OperatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operator",
        abstract: "Register and list provider support engineers.",
        discussion: examples("lockbox operator add alex", "lockbox operator add morgan --manager"),
        subcommands: [Add.self, List.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add", abstract: "Register a support engineer (optionally a support manager).",
            discussion: examples("lockbox operator add morgan --manager"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Alias: lower-case letters, digits, '.', '_' or '-'.") var alias: String
        @Flag(help: "A support manager, who can give the internal approval of others' requests.")
        var manager = false

        func run() async throws {
            let added = try await options.withBroker { broker, _ in
                try await broker.addOperator(alias: alias, isManager: manager)
            }
            options.printer.object(added.record)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List support engineers.", discussion: examples("lockbox operator list"))

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let operators = try await options.withBroker { broker, _ in try await broker.operators() }
            options.printer.list(operators)
        }
    }
}
