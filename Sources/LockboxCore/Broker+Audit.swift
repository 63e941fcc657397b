import Foundation
import LockboxPostgres
import Logging

/// Filters for ``Broker/auditRecords(_:)``; nil means any.
public struct AuditFilter: Sendable {
    public var tenant: String?
    public var from: Date?
    public var to: Date?
    /// The activity, in any letter case (`set-accesstocustomerdatarequest` finds `Set-AccessToCustomerDataRequest`).
    public var activity: String?
    /// The User column, in any letter case.
    public var user: String?
    public var requestId: UUID?
    public var newestFirst: Bool
    /// At most this many records (the newest, or the oldest with `newestFirst` false); nil: every
    /// matching record. A caller that sets one and must say whether records were left out asks
    /// for one more than it shows.
    public var limit: Int?

    public init(
        tenant: String? = nil, from: Date? = nil, to: Date? = nil, activity: String? = nil, user: String? = nil,
        requestId: UUID? = nil, newestFirst: Bool = true, limit: Int? = nil
    ) {
        self.tenant = tenant
        self.from = from
        self.to = to
        self.activity = activity
        self.user = user
        self.requestId = requestId
        self.newestFirst = newestFirst
        self.limit = limit
    }
}

/// Sends queued notifications somewhere (mail, a queue, a log).
public protocol NotificationDelivery: Sendable {
    /// Delivers one notification; throwing leaves it queued for a later attempt.
    func deliver(_ notification: LockboxNotification) async throws
}

/// The default delivery: writes each notification to the log.
public struct LogNotificationDelivery: NotificationDelivery {
    let logger: Logger
    public init(logger: Logger = Logger(label: "lockbox.notifications")) { self.logger = logger }
    public func deliver(_ notification: LockboxNotification) async throws {
        logger.info(
            "notification",
            metadata: [
                "to": "\(notification.recipient)", "subject": "\(notification.subject)",
                "request": "\(notification.requestId.lowercased)",
            ])
    }
}

extension Broker {
    // MARK: Audit search

    /// Audit records matching the filter (`from` inclusive, `to` exclusive).
    public func auditRecords(_ filter: AuditFilter = AuditFilter()) async throws -> [AuditRecord] {
        // Every record has an activity and a user: an empty one would match nothing, silently.
        if filter.activity?.isEmpty == true { throw LockboxError.invalid("activity", "must not be empty") }
        if filter.user?.isEmpty == true { throw LockboxError.invalid("user", "must not be empty") }
        var query: PGQuery = """
            SELECT a.id, a.occurred_at, t.name, a.record_type, a.user_id, a.actor, host(a.client_ip), a.activity,
                a.item, a.request_id, a.workload, a.result, a.parameters::text
            FROM lockbox.audit_records a LEFT JOIN lockbox.tenants t ON t.tenant_id = a.tenant_id
            WHERE true
            """
        if let tenant = filter.tenant {
            _ = try await self.tenant(named: tenant)
            query += " AND t.name = \(tenant)"
        }
        if let from = filter.from { query += " AND a.occurred_at >= \(from)" }
        if let to = filter.to { query += " AND a.occurred_at < \(to)" }
        if let activity = filter.activity { query += " AND lower(a.activity) = lower(\(activity))" }
        if let user = filter.user { query += " AND lower(a.user_id) = lower(\(user))" }
        if let id = filter.requestId { query += " AND a.request_id = \(id)" }
        query += filter.newestFirst ? " ORDER BY a.id DESC" : " ORDER BY a.id"
        if let limit = filter.limit { query += " LIMIT \(max(limit, 0))" }
        return try await read(query).map { row in
            let (id, at, tenant, type, user, actor, ip, activity, item, request, workload, result, parameters) =
                try row.decode(
                    (Int64, Date, String?, String, String, String, String?, String, String, UUID?, String?, String,
                     String).self)
            return AuditRecord(
                id: id, occurredAt: at, tenant: tenant, recordType: type, user: user, actor: actor, clientIp: ip,
                activity: activity, item: item, requestId: request, workload: workload, result: result,
                parameters: parameters)
        }
    }

    // MARK: Notifications

    /// Queued and sent notifications, newest first.
    public func notifications(tenant: String? = nil) async throws -> [LockboxNotification] {
        var query: PGQuery = """
            SELECT n.notification_id, t.name, n.request_id, n.recipient, n.subject, n.body, n.created_at, n.sent_at,
                n.withdrawn_at, n.withdrawn_reason
            FROM lockbox.notifications n JOIN lockbox.tenants t ON t.tenant_id = n.tenant_id
            """
        if let tenant {
            _ = try await self.tenant(named: tenant)
            query += " WHERE t.name = \(tenant)"
        }
        return try await read(query + " ORDER BY n.notification_id DESC").map(Self.notification)
    }

    static func notification(_ row: PGRow) throws -> LockboxNotification {
        let (id, tenant, request, recipient, subject, body, created, sent, withdrawn, withdrawnReason) = try row.decode(
            (Int64, String, UUID, String, String, String, Date, Date?, Date?, String?).self)
        return LockboxNotification(
            notificationId: id, tenant: tenant, requestId: request, recipient: recipient, subject: subject,
            body: body, createdAt: created, sentAt: sent, withdrawnAt: withdrawn, withdrawnReason: withdrawnReason)
    }

    /// Delivers every queued notification once; returns how many were sent.
    ///
    /// Each is locked, handed to `delivery` and marked sent in one transaction,
    /// so two deliverers never send the same one and a failed delivery stays queued.
    /// One whose request is past its customer deadline is marked withdrawn, with the
    /// reason, and not sent. (A request that leaves PendingCustomer withdraws its
    /// queued notifications itself, in the same transaction: migration 0013.)
    ///
    /// A failure part way says what was done before it (``deliveryFailure(_:attempt:sent:)``).
    @discardableResult
    public func deliverNotifications(using delivery: any NotificationDelivery) async throws -> Int {
        var sent = 0
        while true {
            var attempt = DeliveryAttempt()
            let outcome: Bool?
            do {
                outcome = try await deliverNext(using: delivery, attempt: &attempt)
            } catch {
                throw Self.deliveryFailure(error, attempt: attempt, sent: sent)
            }
            guard let delivered = outcome else { return sent }
            if delivered { sent += 1 }
        }
    }

    /// The notification a delivery step was handing over, and whether `delivery` took it.
    struct DeliveryAttempt {
        var notification: LockboxNotification?
        var handedOver = false
    }

    /// Delivers (or withdraws) the first queued notification; nil when none is queued, false
    /// when it was withdrawn. `attempt` says how far it got.
    private func deliverNext(
        using delivery: any NotificationDelivery, attempt: inout DeliveryAttempt
    ) async throws -> Bool? {
        // Not ``transaction(_:)``: a database error is told by ``deliveryFailure(_:attempt:sent:)``;
        // and the delivery, inside the transaction (the notification stays locked meanwhile),
        // takes as long as it takes: no idle-in-transaction timeout, which would end the session
        // and leave a delivered notification queued, to be delivered again.
        return try await pool.withTransaction(timeout: statementTimeout) { connection -> Bool? in
            let rows = try await connection.query(
                """
                SELECT n.notification_id, t.name, n.request_id, n.recipient, n.subject, n.body, n.created_at,
                    n.sent_at, n.withdrawn_at, n.withdrawn_reason, r.customer_deadline
                FROM lockbox.notifications n JOIN lockbox.tenants t ON t.tenant_id = n.tenant_id
                    JOIN lockbox.requests r ON r.request_id = n.request_id
                WHERE n.sent_at IS NULL AND n.withdrawn_at IS NULL
                ORDER BY n.notification_id LIMIT 1 FOR UPDATE OF n SKIP LOCKED
                """)
            guard let row = rows.first else { return nil }
            let notification = try Self.notification(row)
            // Read once the notification is ours: a step that waited for a connection is judged
            // (deadline passed or not) and dated when it delivers, not when it started waiting.
            let now = try now()
            if let deadline = try row.decode(Date?.self, column: "customer_deadline"), deadline <= now {
                try await connection.query(
                    """
                    UPDATE lockbox.notifications SET withdrawn_at = \(now),
                        withdrawn_reason = \("the customer deadline passed at \(Self.timestamp(deadline))")
                    WHERE notification_id = \(notification.notificationId)
                    """)
                return false
            }
            attempt.notification = notification
            try await delivery.deliver(notification)
            attempt.handedOver = true
            try await connection.query(
                "UPDATE lockbox.notifications SET sent_at = \(now) WHERE notification_id = \(notification.notificationId)")
            return true
        }
    }

    /// The error a delivery run ends with: the failure, saying what it did not undo. Told
    /// "nothing was done", a person was not told that notifications before it had gone out,
    /// nor that the one being marked sent had been delivered and would be delivered again.
    static func deliveryFailure(_ error: any Error, attempt: DeliveryAttempt, sent: Int) -> any Error {
        var failure: LockboxError
        switch error {
        case let error as PostgresError:
            guard let notification = attempt.notification, attempt.handedOver else {
                failure = translate(error)
                break
            }
            failure = LockboxError(
                .databaseUnavailable,
                "notification \(notification.notificationId) to \(notification.recipient) was delivered, but "
                    + "recording it as sent failed, so it may be delivered again: \(error.message)",
                detail: error.debugDescription)
        case let error as LockboxError:
            failure = error
        default:
            // The delivery itself failed: the notification stays queued.
            guard let notification = attempt.notification else { return error }
            failure = LockboxError(
                .operationFailed,
                "delivering notification \(notification.notificationId) to \(notification.recipient) failed, so it "
                    + "stays queued and will be delivered by the next run: \(error)",
                detail: String(reflecting: error))
        }
        if sent > 0 {
            failure.message +=
                " (\(sent) notification\(sent == 1 ? "" : "s") before it \(sent == 1 ? "was" : "were") delivered "
                + "and marked sent)"
        }
        return failure
    }

    /// Locks the notifications still queued for request `id`, in notification order (as the sweep
    /// and migration 0021's trigger take them), before a decision or a cancel, which withdraws them
    /// (migration 0013), reads its clock. One being delivered meanwhile is waited for, so the change
    /// is dated after it was sent, and the next delivery passes over them. Locked only by the
    /// withdrawal, a notification that a deliverer took after the change had read its clock was
    /// marked sent after the change: a customer asked, by the records, for a decision already made.
    func lockQueuedNotifications(ofRequest id: UUID, on connection: PGConnection) async throws {
        try await connection.query(
            """
            SELECT 1 FROM lockbox.notifications
            WHERE request_id = \(id) AND sent_at IS NULL AND withdrawn_at IS NULL
            ORDER BY notification_id
            FOR UPDATE
            """)
    }

    /// The same for the notifications still queued for `recipient` in tenant `tenantId`, before the
    /// removal of a role of theirs, which withdraws them if it was their last (migration 0018),
    /// reads its clock: the person whose role was removed was otherwise, by the records, sent the
    /// request's details after the removal.
    func lockQueuedNotifications(of recipient: String, in tenantId: UUID, on connection: PGConnection) async throws {
        try await connection.query(
            """
            SELECT 1 FROM lockbox.notifications
            WHERE tenant_id = \(tenantId) AND recipient = \(recipient) AND sent_at IS NULL AND withdrawn_at IS NULL
            ORDER BY notification_id
            FOR UPDATE
            """)
    }

    /// Queues one notification per global administrator and lockbox approver of the request's tenant.
    func queueNotifications(for requestID: UUID, deadline: Date, now: Date, on connection: PGConnection) async throws {
        let rows = try await connection.query(
            """
            SELECT t.tenant_id, t.name, r.ticket, r.workload, (extract(epoch FROM r.duration) / 60)::bigint,
                r.reason, r.resource
            FROM lockbox.requests r JOIN lockbox.tenants t ON t.tenant_id = r.tenant_id
            WHERE r.request_id = \(requestID)
            """)
        let (tenantId, tenant, ticket, workload, minutes, reason, resource) = try rows.first!.decode(
            (UUID, String, String, String, Int, String, String?).self)
        let message = NotificationText.render(
            tenant: tenant, requestID: requestID, ticket: ticket, workload: workload, durationMinutes: minutes,
            reason: reason, resource: resource, deadline: deadline)
        try await connection.query(
            """
            INSERT INTO lockbox.notifications (tenant_id, request_id, recipient, subject, body, created_at)
            SELECT \(tenantId), \(requestID), upn, \(message.subject), \(message.body), \(now)
            FROM (SELECT DISTINCT upn FROM lockbox.tenant_roles WHERE tenant_id = \(tenantId)) recipients
            ORDER BY upn
            """)
    }
}

/// The text of a pending-request notification: plain text, no links of any kind.
public enum NotificationText {
    /// Renders subject and body. Every field that came from a person is defanged
    /// (``defang(_:)``), so that nothing in the message can become a link.
    public static func render(
        tenant: String, requestID: UUID, ticket: String, workload: String, durationMinutes: Int, reason: String,
        resource: String?, deadline: Date
    ) -> (subject: String, body: String) {
        let subject = "Customer Lockbox request \(requestID.lowercased) for \(defang(tenant)) awaits your decision"
        let hours = durationMinutes / 60
        let minutes = durationMinutes % 60
        let duration = hours > 0 ? (minutes > 0 ? "\(hours) h \(minutes) min" : "\(hours) h") : "\(minutes) min"
        let body = """
            A Microsoft support engineer asks for access to your organization's content.

            Tenant: \(defang(tenant))
            Request ID: \(requestID.lowercased)
            Support ticket: \(defang(ticket))
            Workload: \(defang(workload))
            Scope: \(resource.map(defang) ?? "the entire workload")
            Duration: \(duration)
            Reason: \(defang(reason))

            Approve or deny this request before \(Broker.timestamp(deadline)) (12 hours after this notice); \
            without a decision it expires and no access is granted.
            Sign in to your admin center the way you usually do to decide. This message contains no links, \
            and Customer Lockbox messages never will.
            """
        return (subject, body)
    }

    /// Breaks anything a mail client could turn into a link, so that the text
    /// passes the database's `notifications_no_links` (migrations 0009 and 0017), by
    /// bracketing the character that makes it one:
    /// - a colon after a word with a letter in it, unless a space follows
    ///   (`javascript[:]alert(1)`, `https[:]//x`), and after `mailto` always;
    /// - a full stop (`.`, or IDNA's others: `。`, `．`, `｡`) between a host-name
    ///   character of any script and two letters, or one that stands for several
    ///   (`contoso-support[.]com`, `контосо[.]com`, `помощь[.]рф`, `contoso[。]com`,
    ///   `contoso[.]ﬁ`), and a `.` after `www`; after `。`, `．` or `｡`, a Han, kana
    ///   or Hangul character starts the next sentence (`晴れ。明日` is left alone);
    /// - the second of two backslashes (`\[\]evil\share`);
    /// - the `=` of `href=`.
    /// It works on Unicode scalars, as the database's regular expressions do, and
    /// reads the text twice, as written and without its invisible characters
    /// (`contoso.c\u{AD}om` becomes `contoso[.]c\u{AD}om`). Where it reads a rule
    /// differently from the database, it reads it wider, so that nothing the database
    /// refuses gets through (`10:30` is left alone; `SR:7` becomes `SR[:]7`).
    public static func defang(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        var opening = scalars.indices.map { opensLink(scalars, at: $0) }
        let visible = scalars.indices.filter { !HostNameCharacters.isIgnorable(scalars[$0]) }
        if visible.count < scalars.count {
            let visibleScalars = visible.map { scalars[$0] }
            for (position, index) in visible.enumerated() where opensLink(visibleScalars, at: position) {
                opening[index] = true
            }
        }
        var result = String.UnicodeScalarView()
        for (index, scalar) in scalars.enumerated() {
            if opening[index] {
                result.append(contentsOf: "[\(scalar)]".unicodeScalars)
            } else {
                result.append(scalar)
            }
        }
        return String(result)
    }

    /// True when `text` contains something that looks like a link: the rule of the
    /// database's `notifications_no_links` (`\m` there is a word start, and
    /// `[[:space:]]` the ASCII spaces), as written or without its invisible characters.
    public static func containsLink(_ text: String) -> Bool {
        let scalars = Array(text.unicodeScalars)
        let visible = scalars.filter { !HostNameCharacters.isIgnorable($0) }
        return [scalars, visible].contains { view in
            String(String.UnicodeScalarView(view)).contains(
                /(?i)[a-z][a-z0-9+.\-]*:\/\/|www\.|mailto:|href\s*=|\b[a-z][a-z0-9+.\-]*:[^ \t\n\r\x0B\x0C]|\\\\[^ \t\n\r\x0B\x0C]/
                    .matchingSemantics(.unicodeScalar))
                || view.indices.contains { HostNameCharacters.hostNameStop(view, at: $0) }
        }
    }

    private static func opensLink(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        switch scalars[index] {
        case ":": colonOpensLink(scalars, at: index)
        case "\\": index > 0 && scalars[index - 1] == "\\"
        case "=": hrefBefore(scalars, at: index)
        case ".": ends(scalars, before: index, with: "www") || HostNameCharacters.hostNameStop(scalars, at: index)
        default: HostNameCharacters.hostNameStop(scalars, at: index)
        }
    }

    /// A character of a URI scheme (ASCII letters, digits, `+`, `-`, `.`).
    private static func isSchemeCharacter(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCII && (HostNameCharacters.isLabel(scalar) || scalar == "+" || scalar == ".")
    }

    /// The database's `[[:space:]]` at the least: a colon before any other character may open a link.
    private static func isSpace(_ scalar: Unicode.Scalar) -> Bool {
        [" ", "\t", "\n", "\r", "\u{0B}", "\u{0C}"].contains(scalar)
    }

    /// Whether the scalars just before `index` spell `word`, ignoring case.
    private static func ends(_ scalars: [Unicode.Scalar], before index: Int, with word: String) -> Bool {
        let letters = Array(word.unicodeScalars)
        guard index >= letters.count else { return false }
        return zip(scalars[(index - letters.count)..<index], letters).allSatisfy {
            $0.properties.lowercaseMapping == String($1)
        }
    }

    private static func colonOpensLink(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        // The scheme: the run of scheme characters before the colon.
        var start = index
        while start > 0, isSchemeCharacter(scalars[start - 1]) {
            start -= 1
        }
        guard scalars[start..<index].contains(where: HostNameCharacters.isASCIILetter) else { return false }
        if ends(scalars, before: index, with: "mailto") { return true }
        return index + 1 < scalars.count && !isSpace(scalars[index + 1])
    }

    private static func hrefBefore(_ scalars: [Unicode.Scalar], at index: Int) -> Bool {
        var end = index
        while end > 0, scalars[end - 1].properties.isWhitespace { end -= 1 }
        return ends(scalars, before: end, with: "href")
    }
}
