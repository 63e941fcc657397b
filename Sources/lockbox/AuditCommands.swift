import ArgumentParser
import LockboxCore
import Synchronization

// MARK: audit

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Search the append-only audit log.",
        discussion: examples("lockbox audit search --tenant contoso --activity Set-AccessToCustomerDataRequest"),
        subcommands: [Search.self]
    )

    struct Search: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "search",
            abstract: "Audit records matching every filter given, newest first.",
            discussion: examples(
                "lockbox audit search --tenant contoso --from 2026-03-01 --to 2026-03-02",
                "lockbox audit search --user \"Microsoft Operator\" --format csv",
                "lockbox audit search --request 3f2504e0-4f89-41d3-9a0c-0305e82c3301 --format json"))

        @OptionGroup var options: GlobalOptions
        @Option(help: ArgumentHelp("Only this tenant's records.", valueName: "name")) var tenant: String?
        @Option(
            help: ArgumentHelp("From this time, inclusive (ISO 8601).", valueName: "time"),
            transform: TimeArgument.parse)
        var from: TimeArgument?
        @Option(
            help: ArgumentHelp("Up to this time, exclusive (ISO 8601).", valueName: "time"),
            transform: TimeArgument.parse)
        var to: TimeArgument?
        @Option(
            help: ArgumentHelp(
                "Only this activity (case-insensitive), e.g. Set-AccessToCustomerDataRequest.", valueName: "name"))
        var activity: String?
        @Option(
            help: ArgumentHelp(
                "Only this User column (case-insensitive), e.g. \"Microsoft Operator\".", valueName: "user"))
        var user: String?
        @Option(help: ArgumentHelp("Only records of this request.", valueName: "id"), transform: RequestIDArgument.parse)
        var request: RequestIDArgument?
        @Option(
            help: ArgumentHelp(
                "At most this many records (the newest, or the oldest with --oldest-first); when more match, "
                    + "standard error says so."))
        var limit = 10_000
        @Flag(help: "Oldest first instead of newest first.") var oldestFirst = false

        func validate() throws {
            guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
            if let from, let to, from.date >= to.date { throw ValidationError("--from must be before --to") }
        }

        func run() async throws {
            let filter = AuditFilter(
                tenant: tenant, from: from?.date, to: to?.date, activity: activity, user: user, requestId: request?.uuid,
                newestFirst: !oldestFirst, limit: Printer.fetchLimit(limit))
            let records = try await options.withBroker { broker, _ in try await broker.auditRecords(filter) }
            options.printer.list(
                records, limit: limit,
                notice: "more than \(limit) records match; only the \(limit) \(oldestFirst ? "oldest" : "newest") are "
                    + "shown: raise --limit or narrow the search (--from, --to) to see the rest")
        }
    }
}

// MARK: notifications

struct NotificationsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "notifications",
        abstract: "The notification outbox: messages to customer approvers about pending requests.",
        discussion: examples("lockbox notifications list --tenant contoso", "lockbox notifications deliver"),
        subcommands: [List.self, Deliver.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "Queued, sent and withdrawn notifications, newest first (JSON and CSV include the body).",
            discussion: examples("lockbox notifications list --tenant contoso --format json"))

        @OptionGroup var options: GlobalOptions
        @Option(help: ArgumentHelp("Only this tenant's notifications.", valueName: "name")) var tenant: String?

        func run() async throws {
            let notifications = try await options.withBroker { broker, _ in
                try await broker.notifications(tenant: tenant)
            }
            options.printer.list(notifications)
        }
    }

    struct Deliver: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "deliver",
            abstract: "Deliver every queued notification once (to the log) and mark it sent; prints what was sent.",
            discussion: examples("lockbox notifications deliver --format json"))

        @OptionGroup var options: GlobalOptions

        func run() async throws {
            let delivery = CollectingDelivery()
            let sent = try await options.withBroker { broker, _ in
                try await broker.deliverNotifications(using: delivery)
                guard !delivery.delivered.isEmpty else { return [LockboxNotification]() }
                // Read back in delivery order, as marked sent (with their sentAt).
                let current = Dictionary(
                    uniqueKeysWithValues: try await broker.notifications().map { ($0.notificationId, $0) })
                return delivery.delivered.compactMap { current[$0.notificationId] }
            }
            options.printer.list(sent)
        }
    }
}

/// Delivers to the log and remembers what it delivered, as it was before being marked sent.
final class CollectingDelivery: NotificationDelivery {
    private let log = LogNotificationDelivery()
    private let collected = Mutex<[LockboxNotification]>([])

    var delivered: [LockboxNotification] { collected.withLock { $0 } }

    func deliver(_ notification: LockboxNotification) async throws {
        try await log.deliver(notification)
        collected.withLock { $0.append(notification) }
    }
}

// MARK: sweep

struct Sweep: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Record requests past their 12-hour deadline as Expired and ended grants as Completed.",
        discussion: """
            Access already stops at the deadline without a sweep; the sweep records the transitions in the \
            requests table and the audit log, once each. Run it from cron.

            \(examples("lockbox sweep", "lockbox sweep --format json"))
            """)

    @OptionGroup var options: GlobalOptions

    func run() async throws {
        let result = try await options.withBroker { broker, _ in try await broker.sweep() }
        options.printer.object(
            Record([
                ("expired", .array(result.expired.map { Value($0) })),
                ("completed", .array(result.completed.map { Value($0) })),
            ]))
    }
}
