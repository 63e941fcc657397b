import ArgumentParser
import LockboxCore

struct RequestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "request",
        abstract: "Access requests: create, review, decide, revoke, list and show.",
        discussion: examples(
            "lockbox request create --operator alex --tenant contoso --workload Exchange --ticket SR-1001 "
                + "--reason \"Mailbox does not sync\" --duration 90m",
            "lockbox request review 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --manager morgan --approve",
            "lockbox request decide 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --decision Approve --as approver@contoso.com"),
        subcommands: [Create.self, Review.self, Decide.self, Revoke.self, List.self, Show.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create",
            abstract: "Ask for access to a tenant's workload; prints the new request (PendingInternal).",
            discussion: examples(
                "lockbox request create --operator alex --tenant contoso --workload Exchange --ticket SR-1001 "
                    + "--reason \"Mailbox does not sync\" --duration 90m --resource alice@contoso.com",
                "lockbox request create ... --format json | jq -r .requestId"))

        @OptionGroup var options: GlobalOptions
        @Option(
            name: .customLong("operator"), help: ArgumentHelp("The requesting support engineer.", valueName: "alias"))
        var requester: String
        @Option(help: ArgumentHelp("The customer tenant.", valueName: "name")) var tenant: String
        @Option(help: ArgumentHelp("The workload.", valueName: "Exchange|SharePoint|OneDrive")) var workload: Workload
        @Option(parsing: .unconditional, help: ArgumentHelp("The support ticket number.", valueName: "SR"))
        var ticket: String
        @Option(
            parsing: .unconditional,
            help: ArgumentHelp("Why access is needed (at most 2,000 characters).", valueName: "text"))
        var reason: String
        @Option(
            parsing: .unconditional,
            help: ArgumentHelp("How long access lasts once approved: 1m to 4h.", valueName: "4h|90m|1h30m"))
        var duration: String = "4h"
        @Option(
            help: ArgumentHelp(
                "A path in the workload (a mailbox, site or drive, e.g. alice@contoso.com, or deeper, e.g. "
                    + "finance/Documents) and everything under it; without it the whole workload.",
                valueName: "id"))
        var resource: String?
        @Option(
            help: ArgumentHelp("Client IP address to record in the audit log.", valueName: "addr"),
            transform: IPAddressArgument.parse)
        var ip: IPAddressArgument?

        func validate() throws {
            // A duration that does not parse, or is too long to count, is a usage error; one out of
            // range, the broker's refusal.
            guard (try? parseDuration(duration)) != nil else {
                throw ValidationError(
                    "--duration must be between 1m and 4h, written like 4h, 90m or 1h30m (got \"\(duration)\")")
            }
        }

        func run() async throws {
            let duration = try parseDuration(duration)
            let request = try await options.withBroker { broker, _ in
                try await broker.createRequest(
                    NewAccessRequest(
                        requester: requester, tenant: tenant, workload: workload, ticket: ticket,
                        reason: reason, duration: duration, resource: resource, clientIP: ip?.address))
            }
            options.printer.object(request.record)
        }
    }

    struct Review: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "review",
            abstract: "The internal review by a support manager who is not the requester.",
            discussion: """
                Approving sends the request to the customer (PendingCustomer, approvers notified) when the \
                tenant has Customer Lockbox on, or straight to Approved when it is off.

                \(examples(
                    "lockbox request review 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --manager morgan --approve",
                    "lockbox request review 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --manager morgan --reject "
                        + "--comment \"wrong ticket\""))
                """)

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Request id.", transform: RequestIDArgument.parse) var id: RequestIDArgument
        @Option(help: ArgumentHelp("The reviewing support manager.", valueName: "alias")) var manager: String
        @Flag(help: "Approve the request.") var approve = false
        @Flag(help: "Reject the request.") var reject = false
        @Option(parsing: .unconditional, help: ArgumentHelp("A comment for the record.", valueName: "text"))
        var comment: String?
        @Option(
            help: ArgumentHelp("Client IP address to record in the audit log.", valueName: "addr"),
            transform: IPAddressArgument.parse)
        var ip: IPAddressArgument?

        func validate() throws {
            guard approve != reject else { throw ValidationError("give exactly one of --approve or --reject") }
        }

        func run() async throws {
            let requestID = id.uuid
            let request = try await options.withBroker { broker, _ in
                try await broker.review(
                    requestID, manager: manager, approve: approve, comment: comment, clientIP: ip?.address)
            }
            options.printer.object(request.record)
        }
    }

    struct Decide: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "decide",
            abstract: "Set-AccessToCustomerDataRequest: a customer's Approve or Deny, or the requester's Cancel.",
            discussion: """
                Approve and Deny are for a global administrator or Customer Lockbox approver of the \
                request's tenant (--as UPN), within 12 hours of the notification. Cancel is for the \
                requester (--as ALIAS), while the request is pending or its grant active.

                \(examples(
                    "lockbox request decide 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --decision Approve "
                        + "--as approver@contoso.com",
                    "lockbox request decide 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --decision Cancel --as alex"))
                """)

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Request id.", transform: RequestIDArgument.parse) var id: RequestIDArgument
        @Option(help: ArgumentHelp("The decision.", valueName: "Approve|Deny|Cancel")) var decision: ApprovalDecision
        @Option(
            name: .customLong("as"),
            help: ArgumentHelp("Who decides: a UPN, or the requester's alias for Cancel.", valueName: "upn-or-alias"))
        var principal: String
        @Option(parsing: .unconditional, help: ArgumentHelp("A comment for the record.", valueName: "text"))
        var comment: String?
        @Option(
            help: ArgumentHelp("Client IP address to record in the audit log.", valueName: "addr"),
            transform: IPAddressArgument.parse)
        var ip: IPAddressArgument?

        func run() async throws {
            let requestID = id.uuid
            let request = try await options.withBroker { broker, _ in
                try await broker.decide(
                    requestID, decision: decision, by: principal, comment: comment, clientIP: ip?.address)
            }
            options.printer.object(request.record)
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "revoke",
            abstract: "End an active grant early (a customer approver or global administrator of the tenant).",
            discussion: examples(
                "lockbox request revoke 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --as approver@contoso.com "
                    + "--comment \"issue resolved\""))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Request id.", transform: RequestIDArgument.parse) var id: RequestIDArgument
        @Option(name: .customLong("as"), help: ArgumentHelp("The customer approver revoking it.", valueName: "upn"))
        var principal: String
        @Option(parsing: .unconditional, help: ArgumentHelp("A comment for the record.", valueName: "text"))
        var comment: String?
        @Option(
            help: ArgumentHelp("Client IP address to record in the audit log.", valueName: "addr"),
            transform: IPAddressArgument.parse)
        var ip: IPAddressArgument?

        func run() async throws {
            let requestID = id.uuid
            let request = try await options.withBroker { broker, _ in
                try await broker.revoke(requestID, by: principal, comment: comment, clientIP: ip?.address)
            }
            options.printer.object(request.record)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "List requests, newest first, with their status as of now.",
            discussion: examples(
                "lockbox request list --tenant contoso --status PendingCustomer",
                "lockbox request list --created-after 2026-03-01T00:00:00Z --format csv"))

        @OptionGroup var options: GlobalOptions
        @Option(help: ArgumentHelp("Only this tenant's requests.", valueName: "name")) var tenant: String?
        @Option(
            help: ArgumentHelp(
                "Only requests with this status.",
                valueName: RequestStatus.allCases.map(\.rawValue).joined(separator: "|")))
        var status: RequestStatus?
        @Option(
            help: ArgumentHelp("Only requests created after this time (ISO 8601).", valueName: "time"),
            transform: TimeArgument.parse)
        var createdAfter: TimeArgument?
        @Option(help: "At most this many requests (the newest); when more match, standard error says so.")
        var limit = 1000

        func validate() throws {
            guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
        }

        func run() async throws {
            let filter = Broker.RequestFilter(
                tenant: tenant, status: status, createdAfter: createdAfter?.date, limit: Printer.fetchLimit(limit))
            let requests = try await options.withBroker { broker, _ in try await broker.requests(filter) }
            options.printer.list(
                requests, limit: limit,
                notice: "more than \(limit) requests match; only the \(limit) newest are shown: raise --limit or "
                    + "narrow the list (--tenant, --status, --created-after) to see the rest")
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show",
            abstract: "Show a request and its timeline (every audit record that names it, oldest first).",
            discussion: examples("lockbox request show 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --format json"))

        @OptionGroup var options: GlobalOptions
        @Argument(help: "Request id.", transform: RequestIDArgument.parse) var id: RequestIDArgument

        func run() async throws {
            let requestID = id.uuid
            let (request, timeline) = try await options.withBroker { broker, _ in
                (try await broker.request(requestID), try await broker.timeline(requestID))
            }
            options.printer.object(
                request.record,
                sections: [
                    Section(
                        key: "timeline", records: timeline.map(\.record),
                        columns: ["id", "occurredAt", "user", "actor", "activity", "result"])
                ])
        }
    }
}
