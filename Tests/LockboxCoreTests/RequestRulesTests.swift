import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Synchronization
import Testing

@Suite("Rule 1: what a request names, and bad input")
struct RequestInputTests {
    @Test("a request names tenant, workload, ticket, reason, a 4 h default duration and an optional scope")
    func creation() async throws {
        try await World.with { world in
            let request = try await world.broker.createRequest(
                NewAccessRequest(
                    requester: "alex", tenant: "contoso", workload: .exchange, ticket: "SR-1",
                    reason: "Calendar items vanish"))
            #expect(request.status == .pendingInternal)
            #expect(request.durationMinutes == 240)
            #expect(request.tenant == "contoso" && request.workload == .exchange && request.ticket == "SR-1")
            #expect(request.resource == nil)
            #expect(request.createdAt == World.start)
            let scoped = try await world.newRequest(duration: .seconds(60), resource: "user@contoso.com")
            #expect(scoped.durationMinutes == 1)
            #expect(scoped.resource == "user@contoso.com")
            let created = try await world.auditCount(activity: "New-AccessToCustomerDataRequest")
            #expect(created == 2)
        }
    }

    @Test("a scope is a path whose first segment is lower-cased, so that it covers what it names; malformed ones are refused")
    func scopes() async throws {
        try await World.with { world in
            let request = try await world.approved(resource: "User@Contoso.com/Inbox")
            #expect(request.resource == "user@contoso.com/Inbox")
            let access = try await world.authorize(resource: "user@contoso.com/Inbox")
            #expect(access.requestID == request.requestId)
            for (scope, rule) in [
                ("user@contoso.com/", "empty segment"), ("/user@contoso.com", "empty segment"),
                ("a//b", "empty segment"), ("user@contoso.com/../bob@contoso.com", "segment .."),
                ("./x", "segment ."), ("finance/ Documents", "starts or ends with a space"),
                ("   ", "empty or only whitespace"),
            ] {
                try await world.expectRefusal(.invalidInput, field: "resource", containing: rule) {
                    _ = try await world.newRequest(resource: scope)
                }
            }
            // The database holds the path's structure itself.
            for scope in ["user@contoso.com/", "/x", "a//b", "a/../b", "./x", "a/.", "a/ b", "a /b"] {
                let error = try await #require(throws: PostgresError.self, "\(scope)") {
                    try await world.db.pool.query(
                        """
                        INSERT INTO lockbox.requests (request_id, tenant_id, workload, ticket, reason, resource,
                            requester, duration, status, created_at)
                        SELECT gen_random_uuid(), tenant_id, 'Exchange', 'SR-1', 'r', \(scope), 'alex',
                            interval '1 hour', 'PendingInternal', now()
                        FROM lockbox.tenants WHERE name = 'contoso'
                        """)
                }
                #expect(error.constraint == "requests_resource_path")
            }
        }
    }

    @Test("durations outside 1 minute ... 4 hours are refused naming the field", arguments: [
        Duration.seconds(0), .seconds(-60), .seconds(4 * 3600 + 60), .seconds(30), .seconds(90),
    ])
    func durationBounds(_ duration: Duration) async throws {
        try await World.with { world in
            try await world.expectRefusal(.invalidInput, field: "duration") {
                _ = try await world.newRequest(duration: duration)
            }
        }
    }

    @Test("bad tickets, reasons, names and ids are refused naming the field and the rule")
    func badInput() async throws {
        try await World.with { world in
            func attempt(_ change: (inout NewAccessRequest) -> Void) async throws {
                var new = NewAccessRequest(
                    requester: "alex", tenant: "contoso", workload: .exchange, ticket: "SR-1", reason: "ok")
                change(&new)
                _ = try await world.broker.createRequest(new)
            }
            try await world.expectRefusal(.invalidInput, field: "ticket", containing: "empty") {
                try await attempt { $0.ticket = "" }
            }
            try await world.expectRefusal(.invalidInput, field: "ticket", containing: "empty") {
                try await attempt { $0.ticket = "   \t " }
            }
            try await world.expectRefusal(.invalidInput, field: "ticket", containing: "control") {
                try await attempt { $0.ticket = "SR-1\u{7}" }
            }
            try await world.expectRefusal(.invalidInput, field: "reason", containing: "control") {
                try await attempt { $0.reason = "line one\nline two" }
            }
            try await world.expectRefusal(.invalidInput, field: "reason", containing: "2000") {
                try await attempt { $0.reason = String(repeating: "x", count: 2001) }
            }
            try await world.expectRefusal(.invalidInput, field: "workload") {
                try await attempt { $0.workload = Workload("Teams") }
            }
            try await world.expectRefusal(.notFound, field: "tenant") {
                try await attempt { $0.tenant = "northwind" }
            }
            try await world.expectRefusal(.notFound, field: "operator") {
                try await attempt { $0.requester = "nobody" }
            }
            try await world.expectRefusal(.invalidInput, field: "operator") {
                try await attempt { $0.requester = "Robert'); DROP TABLE lockbox.requests; --" }
            }
            try await world.expectRefusal(.invalidInput, field: "ip") {
                try await attempt { $0.clientIP = "not-an-ip" }
            }
            // 2,000 characters exactly is allowed.
            try await attempt { $0.reason = String(repeating: "y", count: 2000) }
            #expect(throws: LockboxError.self) { try parseRequestID("not-a-uuid") }
            let error = try #require(throws: LockboxError.self) { try parseRequestID("1234") }
            #expect(error.field == "request id" && error.code == .invalidInput)
            try await world.expectRefusal(.notFound, field: "request id") {
                _ = try await world.broker.request(UUID())
            }
        }
    }
}

@Suite("operation attempts without a client address")
struct NoClientIPTests {
    @Test("an attempt without a client IP is judged on its grant and recorded with no address")
    func noAddress() async throws {
        try await World.with { world in
            _ = try await world.approved()
            let attempt = OperationAttempt(
                operatorAlias: "alex", tenant: "contoso", workload: .exchange, operation: "Get-Mailbox",
                arguments: ["mailbox": "user@contoso.com"])
            let access = try await world.broker.authorize(attempt, operation: "Get-Mailbox", resource: "user@contoso.com")
            let record = try #require(try await world.broker.auditRecords(AuditFilter(limit: 1)).first)
            #expect(record.id == access.auditID && record.clientIp == nil && record.result == "Succeeded")
            var bad = attempt
            bad.clientIP = "999.1.1.1"
            let error = try await #require(throws: LockboxError.self) {
                _ = try await world.broker.authorize(bad, operation: "Get-Mailbox", resource: "user@contoso.com")
            }
            #expect(error.code == .accessDenied && error.message.contains("invalid client IP"))
        }
    }
}

@Suite("Rule 2: the two-person rule")
struct TwoPersonRuleTests {
    @Test("a manager cannot review their own request and a non-manager cannot review at all")
    func internalApprover() async throws {
        try await World.with { world in
            let own = try await world.newRequest(by: "morgan")
            try await world.expectRefusal(.twoPersonRule, field: "manager") {
                _ = try await world.broker.review(own.requestId, manager: "morgan", approve: true)
            }
            let other = try await world.newRequest(by: "alex")
            try await world.expectRefusal(.notManager, field: "manager") {
                _ = try await world.broker.review(other.requestId, manager: "blake", approve: true)
            }
            try await world.expectRefusal(.notFound, field: "manager") {
                _ = try await world.broker.review(other.requestId, manager: "ghost", approve: true)
            }
            let reviewed = try await world.broker.review(own.requestId, manager: "sam", approve: true)
            #expect(reviewed.internalApprover == "sam")
            #expect(reviewed.status == .pendingCustomer)
        }
    }

    @Test("the database itself refuses a requester as internal approver and a non-manager approver")
    func databaseEnforces() async throws {
        try await World.with { world in
            let request = try await world.newRequest(by: "morgan")
            try await world.refusedByDatabase(
                "UPDATE lockbox.requests SET internal_approver = 'morgan' WHERE request_id = \(request.requestId)",
                constraint: "requests_two_person_rule")
            try await world.refusedByDatabase(
                "UPDATE lockbox.requests SET internal_approver = 'blake' WHERE request_id = \(request.requestId)",
                constraint: "requests_approver_is_manager")
            try await world.refusedByDatabase(
                "UPDATE lockbox.requests SET status = 'Completed' WHERE request_id = \(request.requestId)",
                constraint: "requests_lifecycle")
        }
    }

    @Test("the database refuses what the lifecycle forbids, whoever writes the request (migration 0015)")
    func databaseHoldsLifecycleRules() async throws {
        try await World.with { world in
            // Created already approved: no manager and no customer would ever see it.
            try await world.refusedByDatabase(
                """
                INSERT INTO lockbox.requests (request_id, tenant_id, workload, ticket, reason, requester, duration,
                    status, created_at, reviewed_at, internal_approver, access_starts_at, access_ends_at)
                SELECT gen_random_uuid(), tenant_id, 'Exchange', 'SR-1', 'r', 'alex', interval '4 hours', 'Approved',
                    now(), now(), 'morgan', now(), now() + interval '4 hours'
                FROM lockbox.tenants WHERE name = 'contoso'
                """,
                constraint: "requests_created_pending")
            // contoso has Customer Lockbox on: the review cannot skip the customer.
            let fresh = try await world.newRequest()
            try await world.refusedByDatabase(
                """
                UPDATE lockbox.requests SET status = 'Approved', reviewed_at = created_at, internal_approver = 'morgan',
                    access_starts_at = created_at, access_ends_at = created_at + duration
                WHERE request_id = \(fresh.requestId)
                """,
                constraint: "requests_customer_step")

            // Nor by switching the setting off around the change in one transaction: rules that
            // read other tables are checked at commit, against what the transaction leaves.
            let toggled = try await #require(throws: PostgresError.self) {
                try await world.db.pool.withTransaction { connection in
                    try await connection.query("UPDATE lockbox.tenants SET customer_lockbox = false WHERE name = 'contoso'")
                    try await connection.query(
                        """
                        UPDATE lockbox.requests SET status = 'Approved', reviewed_at = created_at,
                            internal_approver = 'morgan', access_starts_at = created_at,
                            access_ends_at = created_at + duration
                        WHERE request_id = \(fresh.requestId)
                        """)
                    try await connection.query("UPDATE lockbox.tenants SET customer_lockbox = true WHERE name = 'contoso'")
                }
            }
            #expect(toggled.constraint == "requests_customer_step", "\(toggled.message)")

            let pending = try await world.pendingCustomer()
            // Nor by a role given for the length of the decision.
            let lent = try await #require(throws: PostgresError.self) {
                try await world.db.pool.withTransaction { connection in
                    try await connection.query(
                        """
                        INSERT INTO lockbox.tenant_roles (tenant_id, upn, role, granted_at, granted_by)
                        SELECT tenant_id, 'stranger@contoso.com', 'CustomerLockboxApprover', now(), 'x'
                        FROM lockbox.tenants WHERE name = 'contoso'
                        """)
                    try await connection.query(
                        """
                        UPDATE lockbox.requests SET status = 'Approved', decided_at = notified_at,
                            decided_by = 'stranger@contoso.com', decision = 'Approve', access_starts_at = notified_at,
                            access_ends_at = notified_at + duration
                        WHERE request_id = \(pending.requestId)
                        """)
                    try await connection.query("DELETE FROM lockbox.tenant_roles WHERE upn = 'stranger@contoso.com'")
                }
            }
            #expect(lent.constraint == "requests_customer_decision", "\(lent.message)")
            // At the deadline, too late; then in time, but by someone with no role in contoso.
            try await world.refusedByDatabase(
                """
                UPDATE lockbox.requests SET status = 'Approved', decided_at = customer_deadline,
                    decided_by = 'approver@contoso.com', decision = 'Approve', access_starts_at = customer_deadline,
                    access_ends_at = customer_deadline + duration
                WHERE request_id = \(pending.requestId)
                """,
                constraint: "requests_customer_decision")
            try await world.refusedByDatabase(
                """
                UPDATE lockbox.requests SET status = 'Approved', decided_at = notified_at,
                    decided_by = 'stranger@contoso.com', decision = 'Approve', access_starts_at = notified_at,
                    access_ends_at = notified_at + duration
                WHERE request_id = \(pending.requestId)
                """,
                constraint: "requests_customer_decision")
            try await world.refusedByDatabase(
                """
                UPDATE lockbox.requests SET status = 'Approved', decided_at = notified_at,
                    decided_by = 'approver@contoso.com', decision = 'Approve',
                    access_starts_at = notified_at + interval '3 days', access_ends_at = notified_at + interval '3 days' + duration
                WHERE request_id = \(pending.requestId)
                """,
                constraint: "requests_window_start")
            try await world.refusedByDatabase(
                """
                UPDATE lockbox.requests SET notified_at = notified_at + interval '1 day',
                    customer_deadline = customer_deadline + interval '1 day'
                WHERE request_id = \(pending.requestId)
                """,
                constraint: "requests_history_fixed")
            try await world.refusedByDatabase(
                "UPDATE lockbox.requests SET ticket = 'SR-999' WHERE request_id = \(pending.requestId)",
                constraint: "requests_history_fixed")

            let granted = try await world.approved()
            try await world.refusedByDatabase(
                """
                UPDATE lockbox.requests SET access_starts_at = access_starts_at + interval '3 days',
                    access_ends_at = access_ends_at + interval '3 days'
                WHERE request_id = \(granted.requestId)
                """,
                constraint: "requests_history_fixed")
            try await world.refusedByDatabase(
                """
                UPDATE lockbox.requests SET status = 'Completed', ended_at = access_starts_at,
                    ended_reason = 'access window ended'
                WHERE request_id = \(granted.requestId)
                """,
                constraint: "requests_end_matches")
            // The broker's own path still works under every rule.
            _ = try await world.broker.decide(pending.requestId, decision: .approve, by: "approver@contoso.com")
            _ = try await world.broker.revoke(granted.requestId, by: "approver@contoso.com")
        }
        // With Customer Lockbox off, the review approves, and cannot send the request to a customer.
        try await World.with(lockbox: false) { world in
            let fresh = try await world.newRequest()
            try await world.refusedByDatabase(
                """
                UPDATE lockbox.requests SET status = 'PendingCustomer', reviewed_at = created_at,
                    internal_approver = 'morgan', notified_at = created_at,
                    customer_deadline = created_at + interval '12 hours'
                WHERE request_id = \(fresh.requestId)
                """,
                constraint: "requests_customer_step")
            #expect(try await world.broker.review(fresh.requestId, manager: "morgan", approve: true).status == .approved)
        }
    }

    @Test("a rejected request is final")
    func rejection() async throws {
        try await World.with { world in
            let request = try await world.newRequest()
            let rejected = try await world.broker.review(request.requestId, manager: "morgan", approve: false,
                                                         comment: "not needed")
            #expect(rejected.status == .rejected)
            try await world.expectRefusal(.notPending) {
                _ = try await world.broker.review(request.requestId, manager: "sam", approve: true)
            }
            try await world.expectRefusal(.notPending) {
                _ = try await world.broker.decide(request.requestId, decision: .approve, by: "admin@contoso.com")
            }
            #expect(try await world.auditCount(activity: "Reject-AccessToCustomerDataRequest") == 1)
        }
    }
}

@Suite("Rule 3: customer notification")
struct NotificationTests {
    @Test("internal approval queues one link-free notification per global admin and approver")
    func queued() async throws {
        try await World.with { world in
            _ = try await world.broker.addRole(
                tenant: "contoso", upn: "admin@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            let request = try await world.broker.createRequest(
                NewAccessRequest(
                    requester: "alex", tenant: "contoso", workload: .sharePoint, ticket: "SR-77 http://t.example/77",
                    reason: "See https://evil.example/login?x=1, www.phish.example and mailto:x@y.example, "
                        + #"or contoso-support.com/reset, \\evil\share, javascript:alert(1), data:text/html,hi"#,
                    duration: .seconds(90 * 60), resource: "finance"))
            let pending = try await world.broker.review(request.requestId, manager: "morgan", approve: true)
            #expect(pending.status == .pendingCustomer)
            #expect(pending.notifiedAt == World.start)
            #expect(pending.customerDeadline == World.start.addingTimeInterval(12 * 3600))
            let notifications = try await world.broker.notifications(tenant: "contoso")
            #expect(Set(notifications.map(\.recipient)) == ["admin@contoso.com", "approver@contoso.com"])
            #expect(notifications.count == 2)
            for notification in notifications {
                let text = notification.subject + "\n" + notification.body
                #expect(!NotificationText.containsLink(text), "\(text)")
                #expect(!text.contains("://") && !text.lowercased().contains("www.") && !text.contains("mailto:"))
                #expect(text.contains("contoso"))
                #expect(text.contains(request.requestId.lowercased))
                #expect(text.contains("SR-77"))
                #expect(text.contains("SharePoint"))
                #expect(text.contains("1 h 30 min"))
                #expect(text.contains("https[:]//evil[.]example/login"))
                #expect(text.contains("contoso-support[.]com/reset"))
                #expect(text.contains(#"\[\]evil\share"#))
                #expect(text.contains("javascript[:]alert(1)") && text.contains("data[:]text/html,hi"))
                #expect(text.contains("finance"))
            }
            #expect(try await world.broker.notifications(tenant: "fabrikam").isEmpty)
        }
    }

    @Test("the database refuses a notification that carries a link; defanged text passes")
    func databaseRefusesLinks() async throws {
        try await World.with { world in
            let request = try await world.pendingCustomer()
            var inserted = 0
            func insert(_ body: String) async throws {
                inserted += 1  // one notification per recipient and request
                try await world.db.pool.query(
                    World.notificationInsert(to: "z\(inserted)@contoso.com", body: body, for: request.requestId))
            }
            let links = [
                "go to https://x.example", "www.x.example", "mailto:a@b.example", "mailto: a", "<a href='x'>",
                "HREF\t= x", "contoso-support.com/reset", "a.b.example", #"\\evil\share"#, #"\\\\srv"#,
                "javascript:alert(1)", "JavaScript:x", "data:text/html,hi", "tel:+123", "file:///etc/passwd",
                "x_https://1.2.3.4/", "1.ab:c", "WWW.X", "see it.co", "x:\u{A0}y", "evil.cob\u{301}", #"C:\temp"#,
                // Host names in other scripts and widths (migration 0017), punycode, and what
                // browsers read as `.` or drop from a host name.
                "Reset your password at контосо.com today", "помощь.рф", "КОНТОСО.РФ", "контосо。com",
                "contoso．com", "contoso｡com", "ｃｏｎｔｏｓｏ．ｃｏｍ", "ⓒⓞⓝⓣⓞⓢⓞ.ⓒⓞⓜ", "例え.テスト", "例え。com",
                "café.fr", "cafe\u{301}.com", "١٢٣.com", "xn--j1agcbarf.xn--p1ai", "contoso.ﬁ", "contoso.™",
                "contoso.㏄", "contoso.c\u{AD}om", "contoso\u{200B}.com", "contoso\u{FE0F}。com",
                "ww\u{200B}w.x", "mail\u{AD}to: a", "href\u{200B}=x", "\\\u{200D}\\srv",
            ]
            for body in links {
                let error = try await #require(throws: PostgresError.self, "\(body)") { try await insert(body) }
                #expect(error.constraint == "notifications_no_links")
                #expect(NotificationText.containsLink(body), "\(body)")
                let defanged = NotificationText.defang(body)
                #expect(!NotificationText.containsLink(defanged), "\(defanged)")
                try await insert(defanged)
            }
            // Text without a link passes as written, and defang leaves it alone.
            for body in [
                "Tenant: contoso", "at 10:30, e.g. now", "SR-77", "a.b", "v1.2.3", "x\u{A0}:y",
                "1.5 hours", "e.g. this", "v2.0", "It failed. Then it worked.", "Mr. Smith", "Café. Ensuite.",
                "Привет. Как дела?", "今日は晴れ。明日は雨。", "「はい。」と言った。", "倍率は１．５倍", "مدة ٣.٥ ساعات",
                "as reported.¹²", "Thanks.🙂🙂", "“Done.”", "3.50 €", "x\u{200B}. Next",
            ] {
                try await insert(body)
                #expect(NotificationText.defang(body) == body)
            }
        }
    }

    @Test("a host name in another script is defanged like an ASCII one (migration 0017)")
    func internationalHostNames() async throws {
        try await World.with { world in
            let request = try await world.broker.createRequest(
                NewAccessRequest(
                    requester: "alex", tenant: "contoso", workload: .exchange, ticket: "SR-1 помощь.рф",
                    reason: "Reset your password at контосо.com today; or contoso-support.com"))
            _ = try await world.broker.review(request.requestId, manager: "morgan", approve: true)
            let notifications = try await world.broker.notifications(tenant: "contoso")
            #expect(notifications.count == 2)
            for notification in notifications {
                let text = notification.subject + "\n" + notification.body
                #expect(text.contains("Reset your password at контосо[.]com today; or contoso-support[.]com"), "\(text)")
                #expect(text.contains("SR-1 помощь[.]рф"), "\(text)")
                #expect(!NotificationText.containsLink(text), "\(text)")
            }
        }
    }

    @Test("in each place of a host name, scalar by scalar, defang breaks exactly what the database refuses")
    func everyScalar() async throws {
        // The places: before the full stop, the full stop, the letters after it, the first letter after an
        // ideographic full stop, a character standing for two letters, an invisible one the rule reads past.
        let places: [(name: String, text: @Sendable (Unicode.Scalar) -> String)] = [
            ("label character", { " \($0).co" }), ("full stop", { "a\($0)co" }), ("letters", { "a.\($0)\($0)" }),
            ("letter after 。", { "a。\($0)b" }), ("several letters", { "a.\($0)" }), ("invisible", { "a.c\($0)o" }),
        ]
        // The Basic Multilingual Plane scalar by scalar, but every 16th inside its large blocks of one kind
        // (Han, Yi, Hangul syllables, private use); plane 1 every 16th, the others every 256th. The samples
        // below take the few places beyond plane 0 where a class changes between two of those.
        let uniform = [0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA000...0xA48F, 0xAC00...0xD7A3, 0xE000...0xF8FF]
        let values = (0x80...0xFFFF).filter { value in value % 16 == 0 || !uniform.contains { $0.contains(value) } }
            + Array(stride(from: 0x10000, to: 0x20000, by: 16))
            + Array(stride(from: 0x20000, through: 0x10FFFF, by: 256))
        let scalars = values.compactMap { Unicode.Scalar(UInt32($0)) }
        let texts = places.flatMap { place in scalars.map(place.text) }
        try await TestDatabase.with { db in
            async let byDatabase = db.pool.query(
                """
                SELECT string_agg(CASE WHEN lockbox.carries_link(t) THEN '1' ELSE '0' END, '' ORDER BY n)
                FROM unnest(\(PGArray(texts))::text[]) WITH ORDINALITY AS u (t, n)
                """)
            let byDefang = texts.map { NotificationText.defang($0) != $0 }
            let verdicts = try #require(try await byDatabase.first?.decode(String.self, at: 0))
            let refused = verdicts.map { $0 == "1" }
            #expect(refused.count == texts.count)
            for (number, place) in places.enumerated() {
                let range = (number * scalars.count)..<((number + 1) * scalars.count)
                let differences = range.filter { refused[$0] != byDefang[$0] }.map { scalars[$0 - range.lowerBound] }
                #expect(differences.isEmpty, "\(place.name): \(differences.prefix(20).map { String($0.value, radix: 16) })")
            }
            // What each place holds, in both: a sample.
            let samples: [(String, Bool)] = [
                (" к.co", true), (" ٣.co", true), (" ｃ.co", true), (" ”.co", false), (" \u{AD}.co", false),
                ("a．co", true), ("a﹒co", false), ("a.рф", true), ("a.١١", false), ("a.🙂🙂", false),
                ("a。рb", true), ("a。明b", false), ("a.ﬁ", true), ("a.é", false), ("a.c\u{200B}o", true),
                ("a.𝐜𝐨", true), ("a.𝟏𝟐", false), ("a.🇨🇴", false), ("a.🅪", true), ("a.c\u{1BCA0}o", true),
                ("a.c\u{1D173}o", true), ("a.c\u{E0041}o", true), ("a。\u{1AFF5}b", false), (" \u{F0000}.co", false),
            ]
            for (text, expected) in samples {
                let byDatabase = try await db.pool.query("SELECT lockbox.carries_link(\(text))").first?.decode(Bool.self, at: 0)
                #expect(byDatabase == expected, "\(text)")
                #expect((NotificationText.defang(text) != text) == expected, "\(text)")
            }
        }
    }

    @Test("migration 0017 withdraws queued notifications that the wider rule refuses; sent ones stay")
    func migrationWithdrawsInternationalHostNames() async throws {
        try await World.with { world in
            let migration = try #require(TestCluster.migrationScripts.first { $0.version == 17 })
            let waiting = try await world.pendingCustomer()
            try await world.db.pool.withConnection { connection in
                // A database from before 0017: 0014's ASCII rule, one notification queued and one sent
                // that it let through.
                try await connection.execute(
                    script: """
                        CREATE OR REPLACE FUNCTION lockbox.carries_link(text) RETURNS boolean
                        LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN
                            $1 ~* '[a-z][a-z0-9+.-]*://|www\\.|mailto:|href\\s*=|\\m[a-z][a-z0-9+.-]*:[^[:space:]]|[a-z0-9-]\\.[a-z][a-z]|\\\\\\\\[^[:space:]]';
                        INSERT INTO lockbox.notifications (tenant_id, request_id, recipient, subject, body, created_at)
                        SELECT tenant_id, request_id, 'old@contoso.com', 'subject',
                            'Reset your password at контосо.com today', now()
                        FROM lockbox.requests WHERE request_id = '\(waiting.requestId.lowercased)';
                        INSERT INTO lockbox.notifications (tenant_id, request_id, recipient, subject, body, created_at,
                            sent_at)
                        SELECT tenant_id, request_id, 'sent@contoso.com', 'subject', 'see помощь.рф', now(), now()
                        FROM lockbox.requests WHERE request_id = '\(waiting.requestId.lowercased)';
                        """)
                try await connection.execute(script: migration.sql)
            }
            let queued = try await world.broker.notifications().filter { $0.requestId == waiting.requestId }
            let old = try #require(queued.first { $0.recipient == "old@contoso.com" })
            #expect(old.sentAt == nil && old.withdrawnReason?.contains("migration 0017") == true, "\(old)")
            let sent = try #require(queued.first { $0.recipient == "sent@contoso.com" })
            #expect(sent.sentAt != nil && sent.withdrawnAt == nil && sent.body == "see помощь.рф", "\(sent)")
            #expect(queued.filter { !$0.recipient.hasPrefix("old@") && !$0.recipient.hasPrefix("sent@") }
                .allSatisfy { $0.sentAt == nil && $0.withdrawnAt == nil })
            // The sent row breaks the rule, so the constraint is not marked validated over it; the function
            // stays lockbox_app's to execute, and no one else's.
            let state = try await world.db.pool.query(
                """
                SELECT (SELECT convalidated FROM pg_constraint WHERE conname = 'notifications_no_links'),
                    has_function_privilege('lockbox_app', 'lockbox.carries_link(text)', 'EXECUTE'),
                    has_function_privilege('public', 'lockbox.carries_link(text)', 'EXECUTE')
                """)
            let (validated, app, everyone) = try #require(state.first).decode((Bool, Bool, Bool).self)
            #expect(!validated && app && !everyone)
            // The request can be decided (its queued notifications withdrawn), and the rule holds for new rows.
            _ = try await world.broker.decide(waiting.requestId, decision: .approve, by: "approver@contoso.com")
            try await world.refusedByDatabase(
                World.notificationInsert(to: "new@contoso.com", body: "see контосо.com", for: waiting.requestId),
                constraint: "notifications_no_links")
        }
    }

    @Test("migration 0009 keeps notifications queued under the old rule and checks every new one")
    func migrationKeepsOldNotifications() async throws {
        try await World.with { world in
            let migration = try #require(TestCluster.migrationScripts.first { $0.version == 9 })
            // Where every notification passes (here, none yet), the constraint is validated.
            let validated = try await world.db.pool.query(
                "SELECT convalidated FROM pg_constraint WHERE conname = 'notifications_no_links'")
            #expect(try validated.first?.decode(Bool.self, at: 0) == true)
            let request = try await world.pendingCustomer()
            try await world.db.pool.withConnection { connection in
                // A database from before 0009 with a notification its rule let through.
                try await connection.execute(
                    script: """
                        ALTER TABLE lockbox.notifications DROP CONSTRAINT notifications_no_links;
                        ALTER TABLE lockbox.notifications ADD CONSTRAINT notifications_no_links
                            CHECK (subject || ' ' || body !~* '[a-z][a-z0-9+.-]*://|www\\.|mailto:|href\\s*=');
                        INSERT INTO lockbox.notifications (tenant_id, request_id, recipient, subject, body, created_at)
                        SELECT tenant_id, request_id, 'old@contoso.com', 'subject', 'see contoso-support.com', now()
                        FROM lockbox.requests WHERE request_id = '\(request.requestId.lowercased)';
                        """)
                try await connection.execute(script: migration.sql)
                let kept = try await connection.query(
                    """
                    SELECT (SELECT count(*) FROM lockbox.notifications WHERE recipient = 'old@contoso.com'),
                        (SELECT convalidated FROM pg_constraint WHERE conname = 'notifications_no_links')
                    """)
                let (oldNotifications, validated) = try #require(kept.first).decode((Int, Bool).self)
                #expect(oldNotifications == 1)
                #expect(!validated)
                let error = try await #require(throws: PostgresError.self) {
                    try await connection.query(
                        World.notificationInsert(
                            to: "new@contoso.com", body: "see contoso-support.com", for: request.requestId))
                }
                #expect(error.constraint == "notifications_no_links")
            }
        }
    }

    @Test("delivery sends only what still awaits the customer; the rest is withdrawn, with the reason")
    func withdrawnNotifications() async throws {
        final class Recorder: NotificationDelivery {
            let sent = Mutex<[UUID]>([])
            func deliver(_ notification: LockboxNotification) async throws {
                sent.withLock { $0.append(notification.requestId) }
            }
        }
        try await World.with { world in
            let waiting = try await world.pendingCustomer()
            let cancelled = try await world.pendingCustomer()
            let decided = try await world.pendingCustomer()
            _ = try await world.broker.decide(cancelled.requestId, decision: .cancel, by: "alex")
            _ = try await world.broker.decide(decided.requestId, decision: .deny, by: "approver@contoso.com")
            let recorder = Recorder()
            #expect(try await world.broker.deliverNotifications(using: recorder) == 2)
            #expect(recorder.sent.withLock { $0 } == [waiting.requestId, waiting.requestId])
            let byRequest = Dictionary(grouping: try await world.broker.notifications(), by: \.requestId)
            #expect(byRequest[waiting.requestId]?.allSatisfy { $0.sentAt == World.start && $0.withdrawnAt == nil } == true)
            for (request, status) in [(cancelled, "Cancelled"), (decided, "Denied")] {
                let withdrawn = try #require(byRequest[request.requestId])
                #expect(withdrawn.count == 2)
                #expect(withdrawn.allSatisfy {
                    $0.sentAt == nil && $0.withdrawnAt == World.start && $0.withdrawnReason == "the request is \(status)"
                })
            }

            // Past the customer's deadline a pending request has expired (no sweep needed): withdrawn too.
            let late = try await world.pendingCustomer()
            world.clock.advance(by: .seconds(12 * 3600))
            #expect(try await world.broker.deliverNotifications(using: recorder) == 0)
            let expired = try await world.broker.notifications().filter { $0.requestId == late.requestId }
            #expect(expired.count == 2)
            #expect(expired.allSatisfy {
                $0.sentAt == nil && $0.withdrawnReason?.hasPrefix("the customer deadline passed at ") == true
            })
            #expect(recorder.sent.withLock { $0.count } == 2)
            // Neither sent nor withdrawn ones are looked at again, and the database keeps them apart.
            #expect(try await world.broker.deliverNotifications(using: recorder) == 0)
            try await world.refusedByDatabase(
                "UPDATE lockbox.notifications SET withdrawn_at = now(), withdrawn_reason = 'x' WHERE sent_at IS NOT NULL",
                constraint: "notifications_sent_or_withdrawn")
        }
    }

    @Test("leaving PendingCustomer withdraws the request's queued notifications in the same transaction")
    func withdrawnByTransition() async throws {
        try await World.with { world in
            let denied = try await world.pendingCustomer()
            let cancelled = try await world.pendingCustomer()
            let expired = try await world.pendingCustomer(by: "blake")
            world.clock.advance(by: .seconds(60))
            _ = try await world.broker.decide(denied.requestId, decision: .deny, by: "approver@contoso.com")
            _ = try await world.broker.decide(cancelled.requestId, decision: .cancel, by: "alex")
            world.clock.advance(by: .seconds(12 * 3600))
            _ = try await world.broker.sweep()
            // No delivery has run: the transitions themselves withdrew them, at their own times.
            let byRequest = Dictionary(grouping: try await world.broker.notifications(), by: \.requestId)
            let decidedAt = World.start.addingTimeInterval(60)
            for (request, status, at) in [
                (denied, "Denied", decidedAt), (cancelled, "Cancelled", decidedAt),
                (expired, "Expired", try #require(expired.customerDeadline)),
            ] {
                let notifications = try #require(byRequest[request.requestId])
                #expect(notifications.count == 2)
                #expect(notifications.allSatisfy {
                    $0.sentAt == nil && $0.withdrawnAt == at && $0.withdrawnReason == "the request is \(status)"
                }, "\(status): \(notifications)")
            }
        }
    }

    @Test("migration 0013 withdraws notifications queued for requests that were decided before it")
    func migrationWithdrawsQueued() async throws {
        try await World.with { world in
            let migration = try #require(TestCluster.migrationScripts.first { $0.version == 13 })
            try await world.db.pool.withConnection { connection in
                try await connection.execute(
                    script: """
                        DROP TRIGGER requests_withdraw_notifications ON lockbox.requests;
                        DROP FUNCTION lockbox.withdraw_notifications();
                        """)
            }
            let waiting = try await world.pendingCustomer()
            let denied = try await world.pendingCustomer()
            _ = try await world.broker.decide(denied.requestId, decision: .deny, by: "approver@contoso.com")
            #expect(try await world.broker.notifications().allSatisfy { $0.withdrawnAt == nil }, "before 0013")
            try await world.db.pool.withConnection { try await $0.execute(script: migration.sql) }
            let byRequest = Dictionary(grouping: try await world.broker.notifications(), by: \.requestId)
            #expect(byRequest[waiting.requestId]?.allSatisfy { $0.withdrawnAt == nil } == true)
            #expect(byRequest[denied.requestId]?.count == 2)
            #expect(byRequest[denied.requestId]?.allSatisfy {
                $0.withdrawnAt == World.start && $0.withdrawnReason == "the request is Denied"
            } == true)
        }
    }

    @Test("migration 0014: rows saved before 0009 and 0011 can be decided, delivered and swept again")
    func migrationKeepsOldRowsUpdatable() async throws {
        try await World.with { world in
            let migrations = TestCluster.migrationScripts
            let waiting = try await world.pendingCustomer()
            let scoped = try await world.approved(duration: .seconds(3600), resource: "alice@contoso.com")
            try await world.db.pool.withConnection { connection in
                // A database from before 0009 and 0011: a queued notification with a bare host
                // name and a scope with an empty segment, both allowed then; then 0009 and 0011
                // themselves, which leave their rules NOT VALID over those rows.
                try await connection.execute(
                    script: """
                        DROP TRIGGER requests_resource_path ON lockbox.requests;
                        DROP FUNCTION lockbox.check_request_scope();
                        ALTER TABLE lockbox.requests DISABLE TRIGGER requests_lifecycle;
                        UPDATE lockbox.requests SET resource = 'alice@contoso.com/'
                        WHERE request_id = '\(scoped.requestId.lowercased)';
                        ALTER TABLE lockbox.requests ENABLE TRIGGER requests_lifecycle;
                        ALTER TABLE lockbox.notifications DROP CONSTRAINT notifications_no_links;
                        DROP FUNCTION lockbox.carries_link(text);
                        INSERT INTO lockbox.notifications (tenant_id, request_id, recipient, subject, body, created_at)
                        SELECT tenant_id, request_id, 'old@contoso.com', 'subject', 'see contoso-support.com/reset', now()
                        FROM lockbox.requests WHERE request_id = '\(waiting.requestId.lowercased)';
                        ALTER TABLE lockbox.notifications ADD CONSTRAINT notifications_no_links
                            CHECK (subject || ' ' || body !~* '[a-z][a-z0-9+.-]*://|www\\.|mailto:|href\\s*=');
                        """)
                for version in [9, 11] {
                    try await connection.execute(script: try #require(migrations.first { $0.version == version }).sql)
                }
            }
            // What those rules did to the old rows: no decision, no sweep.
            world.clock.advance(by: .seconds(2 * 3600))
            let swept = try await #require(throws: LockboxError.self) { try await world.broker.sweep() }
            #expect(swept.description.contains("requests_resource_path"), "\(swept)")
            world.clock.set(World.start)
            let decided = try await #require(throws: LockboxError.self) {
                try await world.broker.decide(waiting.requestId, decision: .approve, by: "approver@contoso.com")
            }
            #expect(decided.description.contains("notifications_no_links"), "\(decided)")

            try await world.db.pool.withConnection {
                try await $0.execute(script: try #require(migrations.first { $0.version == 14 }).sql)
            }
            // The old linked notification is withdrawn, never sent; the others still wait.
            let queued = try await world.broker.notifications().filter { $0.requestId == waiting.requestId }
            let old = try #require(queued.first { $0.recipient == "old@contoso.com" })
            #expect(old.sentAt == nil && old.withdrawnReason?.contains("migration 0009") == true, "\(old)")
            #expect(queued.filter { $0.recipient != "old@contoso.com" }.allSatisfy { $0.withdrawnAt == nil })
            _ = try await world.broker.decide(waiting.requestId, decision: .approve, by: "approver@contoso.com")
            world.clock.advance(by: .seconds(2 * 3600))
            _ = try await world.broker.sweep()
            #expect(try await world.broker.request(scoped.requestId).status == .completed)
            // Both rules still hold for every new row.
            try await world.refusedByDatabase(
                """
                INSERT INTO lockbox.requests (request_id, tenant_id, workload, ticket, reason, resource,
                    requester, duration, status, created_at)
                SELECT gen_random_uuid(), tenant_id, 'Exchange', 'SR-1', 'r', 'a//b', 'alex',
                    interval '1 hour', 'PendingInternal', now()
                FROM lockbox.tenants WHERE name = 'contoso'
                """,
                constraint: "requests_resource_path")
            try await world.refusedByDatabase(
                World.notificationInsert(
                    to: "new@contoso.com", body: "see contoso-support.com", for: waiting.requestId),
                constraint: "notifications_no_links")
        }
    }

    @Test("removing someone's last role in the tenant withdraws their queued notifications (migration 0018)")
    func roleRemovalWithdraws() async throws {
        try await World.with { world in
            // admin@contoso.com also becomes an approver, so losing that role leaves them one.
            _ = try await world.broker.addRole(
                tenant: "contoso", upn: "admin@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            let request = try await world.pendingCustomer()
            world.clock.advance(by: .seconds(60))
            for (upn, role) in [
                ("approver@contoso.com", CustomerRole.customerLockboxApprover),
                ("admin@contoso.com", .customerLockboxApprover),
            ] {
                try await world.broker.removeRole(tenant: "contoso", upn: upn, role: role, by: "admin@contoso.com")
            }
            let queued = Dictionary(
                uniqueKeysWithValues: try await world.broker.notifications().filter { $0.requestId == request.requestId }
                    .map { ($0.recipient, $0) })
            #expect(queued.keys.sorted() == ["admin@contoso.com", "approver@contoso.com"])
            #expect(queued["approver@contoso.com"]?.withdrawnReason == "approver@contoso.com no longer holds a role in the tenant")
            #expect(queued["approver@contoso.com"]?.sentAt == nil)
            #expect(queued["admin@contoso.com"]?.withdrawnAt == nil, "still a global administrator")
            final class Recorder: NotificationDelivery, @unchecked Sendable {
                let lock = NSLock()
                var recipients: [String] = []
                func deliver(_ notification: LockboxNotification) async throws {
                    lock.withLock { recipients.append(notification.recipient) }
                }
            }
            let recorder = Recorder()
            #expect(try await world.broker.deliverNotifications(using: recorder) == 1)
            #expect(recorder.recipients == ["admin@contoso.com"])
        }
    }

    @Test("a delivery that waited for a connection past the customer deadline withdraws the notification, not sends it")
    func deliveryJudgedWhenItHoldsTheNotification() async throws {
        /// The world's clock, counting its reads.
        final class CountingClock: LockboxClock {
            let base: ManualClock
            let reads = Mutex(0)
            init(_ base: ManualClock) { self.base = base }
            func now() throws -> Date {
                reads.withLock { $0 += 1 }
                return try base.now()
            }
        }
        final class Recorder: NotificationDelivery, @unchecked Sendable {
            let sent = Mutex<[String]>([])
            func deliver(_ notification: LockboxNotification) async throws {
                sent.withLock { $0.append(notification.recipient) }
            }
        }
        try await World.with { world in
            let request = try await world.pendingCustomer()
            let deadline = try #require(request.customerDeadline)
            world.clock.set(deadline.addingTimeInterval(-1))
            // A deliverer whose one connection is in use: it reads the clock, then waits for it.
            let pool = PGPool(conninfo: world.db.conninfo, database: world.db.name, maxConnections: 1)
            let clock = CountingClock(world.clock)
            let deliverer = Broker(pool: pool, clock: clock)
            let release = Mutex(false)
            let (leased, leasedNow) = AsyncStream.makeStream(of: Void.self)
            let holder = Task {
                try await pool.withConnection { _ in
                    leasedNow.yield()
                    while !release.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
                }
            }
            // The holder has the connection before the delivery starts (on a busy machine the
            // delivery's task could otherwise run first, and take it).
            for await _ in leased { break }
            let recorder = Recorder()
            let delivery = Task { try await deliverer.deliverNotifications(using: recorder) }
            // Give it the time to read the clock before it waits, if it does (it did, without the fix;
            // with it the clock is read only once the notification is held: nothing to wait for).
            for _ in 0..<100 where clock.reads.withLock({ $0 }) == 0 {
                try await Task.sleep(for: .milliseconds(10))
            }
            // The deadline passes while it waits; then it gets the connection.
            world.clock.set(deadline)
            release.withLock { $0 = true }
            try await holder.value
            #expect(try await delivery.value == 0)
            #expect(recorder.sent.withLock { $0 } == [])
            let notifications = try await world.broker.notifications().filter { $0.requestId == request.requestId }
            #expect(!notifications.isEmpty)
            #expect(notifications.allSatisfy { $0.sentAt == nil && $0.withdrawnAt == deadline }, "\(notifications)")
            await pool.close()
        }
    }

    @Test("a role removal withdraws the notifications at the time it records, the broker's, not the database server's")
    func roleRemovalWithdrawsAtItsTime() async throws {
        try await World.with { world in
            let request = try await world.pendingCustomer()
            world.clock.advance(by: .seconds(90))
            try await world.broker.removeRole(
                tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            let removal = try #require(
                try await world.broker.auditRecords(AuditFilter(activity: "Remove-RoleGroupMember")).first)
            #expect(removal.occurredAt == World.start.addingTimeInterval(90))
            let withdrawn = try #require(
                try await world.broker.notifications().first {
                    $0.requestId == request.requestId && $0.recipient == "approver@contoso.com"
                })
            #expect(withdrawn.createdAt == World.start)
            #expect(withdrawn.withdrawnAt == removal.occurredAt, "\(withdrawn)")
        }
    }

    @Test("removing an approver and deciding one of their requests at the same moment both succeed")
    func roleRemovalBesideDecision() async throws {
        try await World.with { world in
            let request = try await world.pendingCustomer()
            // Hold the approver's role row, so that the removal stops just before deleting it,
            // with the tenant locked; meanwhile the decision withdraws the approver's queued
            // notification and writes its audit record, which locks the tenant FOR KEY SHARE.
            let pin = try await world.db.connect()
            try await pin.execute(
                script: "BEGIN; SELECT 1 FROM lockbox.tenant_roles WHERE upn = 'approver@contoso.com' FOR SHARE")
            let removal = Task {
                try await world.broker.removeRole(
                    tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover,
                    by: "admin@contoso.com")
            }
            try await world.waitForLockWaits(1)
            let decided = Mutex(false)
            let decision = Task {
                defer { decided.withLock { $0 = true } }
                return try await world.broker.decide(request.requestId, decision: .approve, by: "admin@contoso.com")
            }
            // Let the decision finish, or wait behind the removal, before the removal goes on.
            try await world.waitForLockWaits(2, orUntil: { decided.withLock { $0 } })
            try await pin.execute(script: "COMMIT")
            await pin.close()
            #expect(try await decision.value.status == .approved)
            _ = try await removal.value
            let roles = try await world.broker.roles(tenant: "contoso")
            #expect(!roles.contains { $0.upn == "approver@contoso.com" })
            let approvers = try await world.broker.notifications().filter { $0.recipient == "approver@contoso.com" }
            #expect(approvers.allSatisfy { $0.sentAt == nil && $0.withdrawnAt != nil }, "\(approvers)")
        }
    }

    @Test("migration 0018 withdraws notifications queued for people who had already lost their role")
    func migrationWithdrawsForRemoved() async throws {
        try await World.with { world in
            let migration = try #require(TestCluster.migrationScripts.first { $0.version == 18 })
            try await world.db.pool.withConnection { connection in
                try await connection.execute(
                    script: """
                        DROP TRIGGER tenant_roles_withdraw_notifications ON lockbox.tenant_roles;
                        DROP FUNCTION lockbox.withdraw_notifications_of_removed();
                        """)
            }
            _ = try await world.pendingCustomer()
            try await world.broker.removeRole(
                tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            #expect(try await world.broker.notifications().allSatisfy { $0.withdrawnAt == nil }, "before 0018")
            try await world.db.pool.withConnection { try await $0.execute(script: migration.sql) }
            let withdrawn = try await world.broker.notifications().compactMap { $0.withdrawnAt == nil ? nil : $0.recipient }
            #expect(withdrawn == ["approver@contoso.com"])
        }
    }

    @Test("delivery sends each notification once and marks it sent")
    func delivery() async throws {
        final class Recorder: NotificationDelivery, @unchecked Sendable {
            let lock = NSLock()
            var sent: [Int64] = []
            func deliver(_ notification: LockboxNotification) async throws {
                lock.withLock { sent.append(notification.notificationId) }
            }
        }
        struct Failing: NotificationDelivery {
            struct Down: Error {}
            func deliver(_ notification: LockboxNotification) async throws { throw Down() }
        }
        try await World.with { world in
            _ = try await world.pendingCustomer()
            await #expect(throws: (any Error).self) {
                try await world.broker.deliverNotifications(using: Failing())
            }
            #expect(try await world.broker.notifications().allSatisfy { $0.sentAt == nil })
            let recorder = Recorder()
            async let first = world.broker.deliverNotifications(using: recorder)
            async let second = world.broker.deliverNotifications(using: recorder)
            let total = try await first + second
            #expect(total == 2)
            #expect(recorder.sent.count == 2 && Set(recorder.sent).count == 2)
            #expect(try await world.broker.deliverNotifications(using: recorder) == 0)
            #expect(try await world.broker.notifications().allSatisfy { $0.sentAt == World.start })
        }
    }

    @Test("with Customer Lockbox off, internal approval grants access directly and notifies no one")
    func lockboxOff() async throws {
        try await World.with(lockbox: false) { world in
            let request = try await world.newRequest(duration: .seconds(3600))
            _ = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            let approved = try await world.broker.review(request.requestId, manager: "morgan", approve: true)
            #expect(approved.status == .approved)
            #expect(approved.accessStartsAt == World.start)
            #expect(approved.accessEndsAt == World.start.addingTimeInterval(3600))
            #expect(try await world.broker.notifications(tenant: "contoso").isEmpty)
            let access = try await world.authorize()
            #expect(access.requestID == request.requestId)
        }
    }
}
