import ArgumentParser
import LockboxConnectors
import LockboxCore

// MARK: invoke

struct Invoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "invoke",
        abstract: "Run a pre-approved operation under an active grant; every attempt is audited.",
        discussion: """
            The broker checks the operator's grant (tenant, workload, scope, window) and writes the audit \
            record before the service returns anything. A refusal prints the reason on standard error and \
            exits 1; it is audited too. `lockbox operations` lists the operations and their arguments.

            \(examples(
                "lockbox invoke --operator alex --tenant contoso --workload Exchange --operation Get-MailboxMessage "
                    + "--arg mailbox=alice@contoso.com --arg folder=Inbox --arg messageId=msg-1001",
                "lockbox invoke --operator alex --tenant contoso --workload Exchange --operation Get-MailboxMessage "
                    + "--resource alice@contoso.com/Inbox/msg-1001 --format json"))
            """)

    @OptionGroup var options: GlobalOptions
    @Option(name: .customLong("operator"), help: ArgumentHelp("The support engineer.", valueName: "alias"))
    var operatorAlias: String
    @Option(help: ArgumentHelp("The customer tenant.", valueName: "name")) var tenant: String
    @Option(help: ArgumentHelp("The workload.", valueName: "Exchange|SharePoint|OneDrive")) var workload: Workload
    @Option(help: ArgumentHelp("The operation, e.g. Get-MailboxMessage.", valueName: "name")) var operation: String
    @Option(help: ArgumentHelp("The resource addressed (same as --arg resource=ID).", valueName: "id"))
    var resource: String?
    @Option(
        name: .customLong("arg"), parsing: .unconditionalSingleValue,
        help: ArgumentHelp("An operation argument; repeat for several.", valueName: "key=value"))
    var arguments: [String] = []
    @Option(
        help: ArgumentHelp("Client IP address to record in the audit log.", valueName: "addr"),
        transform: IPAddressArgument.parse)
    var ip: IPAddressArgument?

    func validate() throws {
        let parsed = try parseKeyValues(arguments, option: "--arg")
        if resource != nil, parsed["resource"] != nil {
            throw ValidationError("give the resource either with --resource or with --arg resource=…, not both")
        }
    }

    func run() async throws {
        var parsed = try parseKeyValues(arguments, option: "--arg")
        if let resource { parsed["resource"] = resource }
        let attempt = OperationAttempt(
            operatorAlias: operatorAlias, tenant: tenant, workload: workload, operation: operation,
            arguments: parsed, clientIP: ip?.address)
        let result = try await options.withBroker { broker, session in
            try await broker.invoke(attempt, registry: session.registry)
        }
        let access = result.access
        options.printer.object(
            Record([
                ("operator", .string(access.operatorAlias)), ("tenant", .string(access.tenant)),
                ("workload", .string(access.workload.rawValue)), ("operation", .string(access.operation)),
                ("resource", .string(access.resource)), ("requestId", Value(access.requestID)),
                ("auditId", .int(Int(access.auditID))), ("accessEndsAt", .date(access.accessEndsAt)),
                ("result", Value(result.value)),
            ]))
    }
}

// MARK: operations

struct Operations: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "operations",
        abstract: "List each connector's pre-approved operations and the arguments they take.",
        discussion: examples("lockbox operations --workload Exchange"))

    @OptionGroup var output: FormatOptions
    @Option(help: ArgumentHelp("Only this workload's operations.", valueName: "Exchange|SharePoint|OneDrive"))
    var workload: Workload?

    func run() async throws {
        let connectors = standardConnectors().all.filter { workload == nil || $0.workload == workload }
        let entries = connectors.flatMap { connector in
            connector.catalogue.map { CatalogueEntry(workload: connector.workload, operation: $0) }
        }
        output.printer.list(entries)
    }
}
