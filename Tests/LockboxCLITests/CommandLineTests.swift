import Foundation
import LockboxPostgres
import LockboxTestSupport
import Testing

/// Every command path of the CLI, for the help and usage tests.
let commandPaths: [[String]] = [
    [],
    ["tenant"], ["tenant", "create"], ["tenant", "list"], ["tenant", "show"], ["tenant", "set"],
    ["role"], ["role", "add"], ["role", "remove"], ["role", "list"],
    ["operator"], ["operator", "add"], ["operator", "list"],
    ["request"], ["request", "create"], ["request", "review"], ["request", "decide"], ["request", "revoke"],
    ["request", "list"], ["request", "show"],
    ["invoke"], ["operations"],
    ["audit"], ["audit", "search"],
    ["notifications"], ["notifications", "list"], ["notifications", "deliver"],
    ["auditor"], ["auditor", "grant"], ["auditor", "revoke"], ["auditor", "list"],
    ["sweep"], ["db"], ["db", "migrate"], ["db", "status"], ["db", "stop"], ["demo"], ["bench"],
]

@Suite("lockbox usage")
struct UsageTests {
    @Test("--help on every command exits 0 and shows an example")
    func helpEverywhere() async throws {
        try await withThrowingTaskGroup(of: CLIResult.self) { group in
            for path in commandPaths { group.addTask { try await CLI.run(path + ["--help"]) } }
            for try await result in group {
                #expect(result.status == 0, "\(result)")
                #expect(result.stdout.contains("USAGE:"), "\(result)")
                #expect(result.stdout.contains("Example"), "every command's help shows an example: \(result)")
            }
        }
    }

    @Test(
        "usage errors exit 64 with a message on stderr",
        arguments: [
            ["tenant", "frobnicate"],
            ["tenant", "create", "contoso"],
            ["tenant", "list", "--format", "xml"],
            ["tenant", "list", "--bogus"],
            ["tenant", "list", "--database-url", ""],
            ["tenant", "list", "--database-timeout", "0s"],
            ["tenant", "list", "--database-timeout", "500ms"],
            ["tenant", "set", "contoso", "--customer-lockbox", "maybe", "--as", "admin@contoso.com"],
            ["role", "add", "contoso", "x@contoso.com", "--role", "Owner", "--as", "admin@contoso.com"],
            ["operator", "add"],
            ["request", "create", "--tenant", "contoso"],
            ["request", "review", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "--manager", "morgan"],
            [
                "request", "review", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "--manager", "morgan", "--approve",
                "--reject",
            ],
            ["request", "decide", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "--decision", "Maybe", "--as", "a@b.com"],
            ["request", "decide", "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "--decision", "Approve"],
            ["request", "list", "--status", "Sleeping"],
            ["request", "list", "--created-after", "yesterday"],
            ["request", "list", "--limit", "0"],
            ["audit", "search", "--from", "2026-02-01", "--to", "2026-01-01"],
            ["audit", "search", "--from", "last week"],
            [
                "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation", "X",
                "--arg", "novalue",
            ],
            [
                "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation", "X",
                "--arg", "a=1", "--arg", "a=2",
            ],
            ["operations", "--format", "yaml"],
        ])
    func usageErrors(_ arguments: [String]) async throws {
        let result = try await CLI.run(arguments)
        #expect(result.status == 64, "\(result)")
        #expect(!result.stderr.isEmpty, "\(result)")
        #expect(result.stdout.isEmpty, "\(result)")
    }

    @Test("an unreachable database is one line on stderr and exit 1")
    func databaseUnavailable() async throws {
        let result = try await CLI.run(
            ["tenant", "list", "--database-url", "host=/nonexistent-lockbox-socket-dir port=5432 dbname=lockbox"])
        #expect(result.status == 1, "\(result)")
        #expect(result.stderrLines.count == 1, "\(result)")
        #expect(result.stderr.contains("the lockbox database is unavailable"), "\(result)")
        #expect(result.stdout.isEmpty, "\(result)")
    }

    @Test("operations lists each connector's catalogue")
    func operations() async throws {
        let result = try await CLI.run(["operations", "--format", "json"])
        #expect(result.status == 0, "\(result)")
        let operations = try result.jsonArray()
        #expect(Set(operations.compactMap { $0["workload"] as? String }) == ["Exchange", "SharePoint", "OneDrive"])
        for operation in operations {
            #expect((operation["name"] as? String)?.contains("-") == true, "\(operation)")
            #expect(["read", "change"].contains(operation["kind"] as? String), "\(operation)")
            #expect(operation["requiredArguments"] is [String], "\(operation)")
            #expect(operation["optionalArguments"] is [String], "\(operation)")
            #expect(operation["summary"] is String, "\(operation)")
        }
        let versions = try #require(operations.first { $0["name"] as? String == "Get-DriveFileVersion" })
        #expect(versions["optionalArguments"] as? [String] == ["version"], "\(versions)")
        let exchange = try await CLI.run(["operations", "--workload", "Exchange"])
        #expect(
            exchange.status == 0 && exchange.stdout.contains("Exchange") && !exchange.stdout.contains("OneDrive"),
            "\(exchange)")
        let csv = try await CLI.run(["operations", "--format", "csv"])
        #expect(
            csv.stdout.hasPrefix("workload,name,kind,addresses,summary,requiredArguments,optionalArguments\n"), "\(csv)")
        for workload in ["Teams", "exchange"] {
            let unknown = try await CLI.run(["operations", "--workload", workload])
            #expect(
                unknown.status == 64 && unknown.stderr.contains("one of 'Exchange', 'OneDrive' or 'SharePoint'"),
                "\(unknown)")
        }
    }
}

@Suite("lockbox admin commands")
struct AdminCommandTests {
    @Test("tenant create/list/show/set, JSON field by field, table and CSV")
    func tenants() async throws {
        try await CLIWorld.with { world in
            let created = try await world.object("tenant", "create", "contoso", "--admin", "Admin@Contoso.com")
            #expect(created["name"] as? String == "contoso")
            #expect(created["customerLockbox"] as? Bool == false)
            #expect(created["serviceAccount"] as? String == "contosoBOXServiceAccount@contoso.prod.outlook.com")
            #expect(UUID(uuidString: created["tenantId"] as? String ?? "") != nil)
            let createdAt = try #require(date(created["createdAt"]))
            #expect(abs(createdAt.timeIntervalSinceNow) < 120, "system clock")
            #expect((created["createdAt"] as? String)?.hasSuffix("Z") == true)

            try await world.refused(
                ["tenant", "create", "contoso", "--admin", "admin@contoso.com"], "tenant contoso already exists")

            let set = try await world.object(
                "tenant", "set", "contoso", "--customer-lockbox", "on", "--as", "admin@contoso.com", "--ip", "10.0.0.8")
            #expect(set["customerLockbox"] as? Bool == true)

            let shown = try await world.object("tenant", "show", "contoso")
            #expect(shown["tenantId"] as? String == created["tenantId"] as? String)
            let roles = try #require(shown["roles"] as? [[String: Any]])
            #expect(roles.count == 1)
            #expect(roles.first?["upn"] as? String == "admin@contoso.com", "UPNs are stored lower-cased")
            #expect(roles.first?["role"] as? String == "GlobalAdministrator")

            let table = try await world.ok("tenant", "list")
            let lines = table.stdout.split(separator: "\n")
            #expect(lines.count == 2, "\(table)")
            #expect(lines.first?.hasPrefix("name") == true && lines.last?.hasPrefix("contoso") == true, "\(table)")

            let csv = try await world.ok("tenant", "list", "--format", "csv")
            let csvLines = csv.stdout.split(separator: "\n").map(String.init)
            #expect(csvLines.first == "tenantId,name,customerLockbox,serviceAccount,createdAt")
            #expect(csvLines.count == 2 && csvLines[1].contains(",contoso,true,"), "\(csv)")

            let audit = try await world.array(
                "audit", "search", "--tenant", "contoso", "--activity", "Set-CustomerLockboxSetting")
            #expect(audit.count == 1)
            #expect(audit.first?["clientIp"] as? String == "10.0.0.8")
            let parameters = try #require(audit.first?["parameters"] as? [String: Any])
            #expect(parameters["OldValue"] as? String == "Off" && parameters["NewValue"] as? String == "On")
        }
    }

    @Test("audit search --limit: when more records match than it shows, standard error says so")
    func auditSearchLimit() async throws {
        try await CLIWorld.with { world in
            try await world.ok("tenant", "create", "contoso", "--admin", "admin@contoso.com")
            try await world.ok("tenant", "set", "contoso", "--customer-lockbox", "on", "--as", "admin@contoso.com")
            try await world.ok("tenant", "set", "contoso", "--customer-lockbox", "off", "--as", "admin@contoso.com")

            // Exactly as many as match: all of them, and nothing on standard error.
            let all = try await world.ok("audit", "search", "--tenant", "contoso", "--limit", "3", "--format", "csv")
            #expect(all.stdout.split(separator: "\n").count == 1 + 3, "\(all)")

            for (order, kept) in [([String](), "newest"), (["--oldest-first"], "oldest")] {
                let cut = try await world.lockbox(
                    ["audit", "search", "--tenant", "contoso", "--limit", "2", "--format", "json"] + order)
                #expect(cut.status == 0, "\(cut)")
                let records = try cut.jsonArray()
                #expect(records.count == 2, "\(cut)")
                let activities = records.compactMap { $0["activity"] as? String }
                #expect(
                    activities == (kept == "newest"
                        ? ["Set-CustomerLockboxSetting", "Set-CustomerLockboxSetting"]
                        : ["New-Tenant", "Set-CustomerLockboxSetting"]), "\(cut)")
                #expect(
                    cut.stderrLines == [
                        "warning: more than 2 records match; only the 2 \(kept) are shown: raise --limit or narrow "
                            + "the search (--from, --to) to see the rest"
                    ], "\(cut)")
            }
        }
    }

    @Test("audit search --activity matches in any letter case, as --user does: never an empty result by spelling")
    func auditSearchActivityCase() async throws {
        try await CLIWorld.with { world in
            try await world.ok("tenant", "create", "contoso", "--admin", "admin@contoso.com")
            try await world.ok("tenant", "set", "contoso", "--customer-lockbox", "on", "--as", "admin@contoso.com")
            for spelling in ["Set-CustomerLockboxSetting", "set-customerlockboxsetting", "SET-CUSTOMERLOCKBOXSETTING"] {
                let records = try await world.array("audit", "search", "--tenant", "contoso", "--activity", spelling)
                #expect(records.count == 1, "--activity \(spelling)")
                #expect(records.first?["activity"] as? String == "Set-CustomerLockboxSetting", "--activity \(spelling)")
            }
            #expect(try await world.array("audit", "search", "--activity", "Set-CustomerLockbox").isEmpty)
        }
    }

    @Test("request list says on standard error when more requests match than --limit shows")
    func requestListLimit() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            var ids: [String] = []
            for _ in 0..<3 { ids.append(try await world.newRequest()) }

            let all = try await world.lockbox(["request", "list", "--limit", "3", "--format", "json"])
            #expect(try all.jsonArray().count == 3, "\(all)")
            #expect(all.stderrLines.isEmpty, "\(all)")

            let cut = try await world.lockbox(["request", "list", "--limit", "2", "--format", "json"])
            #expect(cut.status == 0, "\(cut)")
            let shown = try cut.jsonArray().compactMap { $0["requestId"] as? String }
            #expect(Set(shown) == Set(ids.suffix(2)), "the newest two: \(cut)")
            #expect(
                cut.stderrLines == [
                    "warning: more than 2 requests match; only the 2 newest are shown: raise --limit or narrow the "
                        + "list (--tenant, --status, --created-after) to see the rest"
                ], "\(cut)")
        }
    }

    @Test("role add/list/remove and operator add/list")
    func rolesAndOperators() async throws {
        try await CLIWorld.with { world in
            try await world.ok("tenant", "create", "contoso", "--admin", "admin@contoso.com")
            let added = try await world.object(
                "role", "add", "contoso", "approver@contoso.com", "--role", "CustomerLockboxApprover", "--as",
                "admin@contoso.com")
            #expect(added["tenant"] as? String == "contoso")
            #expect(added["upn"] as? String == "approver@contoso.com")
            #expect(added["role"] as? String == "CustomerLockboxApprover")
            #expect(added["grantedBy"] as? String == "admin@contoso.com")
            #expect(date(added["grantedAt"]) != nil)
            try await world.refused(
                [
                    "role", "add", "contoso", "approver@contoso.com", "--role", "CustomerLockboxApprover", "--as",
                    "admin@contoso.com",
                ],
                "already has the role")

            let roles = try await world.array("role", "list", "contoso")
            #expect(
                roles.map { $0["upn"] as? String } == ["approver@contoso.com", "admin@contoso.com"], "by role, then UPN"
            )
            #expect(roles.map { $0["role"] as? String } == ["CustomerLockboxApprover", "GlobalAdministrator"])

            let remaining = try await world.array(
                "role", "remove", "contoso", "approver@contoso.com", "--role", "customerlockboxapprover", "--as",
                "admin@contoso.com")
            #expect(remaining.map { $0["upn"] as? String } == ["admin@contoso.com"])
            try await world.refused(
                [
                    "role", "remove", "contoso", "admin@contoso.com", "--role", "GlobalAdministrator", "--as",
                    "admin@contoso.com",
                ],
                "last global administrator of contoso")

            let manager = try await world.object("operator", "add", "morgan", "--manager")
            #expect(manager["alias"] as? String == "morgan" && manager["isManager"] as? Bool == true)
            #expect(date(manager["createdAt"]) != nil)
            try await world.ok("operator", "add", "alex")
            let operators = try await world.array("operator", "list")
            #expect(operators.map { $0["alias"] as? String } == ["alex", "morgan"])
            #expect(operators.map { $0["isManager"] as? Bool } == [false, true])
            let table = try await world.ok("operator", "list")
            #expect(table.stdout.hasPrefix("alias"), "\(table)")
        }
    }

    @Test("a malformed option value is a usage error: exit 64, the option named, nothing changed")
    func malformedOptions() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let request = try await world.newRequest()
            let create = [
                "request", "create", "--operator", "alex", "--tenant", "contoso", "--ticket", "SR-1", "--reason",
                "Mailbox does not sync",
            ]
            let invoke = [
                "invoke", "--operator", "alex", "--tenant", "contoso", "--operation", "Get-MailboxMessage",
                "--resource", "alice@contoso.com/Inbox/msg-1001",
            ]
            let exchange = ["--workload", "Exchange"]
            let workloads = "Please provide one of 'Exchange', 'OneDrive' or 'SharePoint'"
            let cases: [(arguments: [String], message: String)] = [
                (["audit", "search", "--request", "nope"], "'nope' is invalid for '--request <id>': must be a UUID"),
                (["request", "show", "not-a-uuid"], "'not-a-uuid' is invalid for '<id>': must be a UUID"),
                (
                    ["request", "decide", "12345", "--decision", "Approve", "--as", "approver@contoso.com"],
                    "'12345' is invalid for '<id>': must be a UUID"
                ),
                (create + ["--workload", "exchange"], workloads),
                (create + ["--workload", "Teams"], workloads),
                (create + exchange + ["--duration", "soon"], "--duration must be between 1m and 4h, written like 4h"),
                // Too long to count in seconds: refused, not an arithmetic trap (exit 132).
                (
                    create + exchange + ["--duration", "9999999999999999h"],
                    "--duration must be between 1m and 4h, written like 4h, 90m or 1h30m (got \"9999999999999999h\")"
                ),
                (create + exchange + ["--duration", "99999999999999999999m"], "--duration must be between 1m and 4h"),
                (create + exchange + ["--duration", "2562047788015215h30m8s"], "--duration must be between 1m and 4h"),
                (create + exchange + ["--ip", "999.1.1.1"], "'999.1.1.1' is invalid for '--ip <addr>': must be an IPv4 or IPv6 address"),
                (invoke + ["--workload", "exchange"], workloads),
                (invoke + exchange + ["--ip", "nope"], "'nope' is invalid for '--ip <addr>': must be an IPv4 or IPv6 address"),
                (
                    ["request", "review", request, "--manager", "morgan", "--approve", "--ip", "nope"],
                    "'nope' is invalid for '--ip <addr>': must be an IPv4 or IPv6 address"
                ),
                (
                    [
                        "tenant", "set", "contoso", "--customer-lockbox", "off", "--as", "admin@contoso.com", "--ip",
                        "1.2.3",
                    ],
                    "'1.2.3' is invalid for '--ip <addr>': must be an IPv4 or IPv6 address"
                ),
            ]
            // Every option that takes a time refuses one that does not exist instead of moving it to
            // another day, and says why.
            let times: [(arguments: [String], message: String)] = [
                (["audit", "search", "--from", "2026-02-31"], "February 2026 has no day 31"),
                (["audit", "search", "--from", "2026-02-29"], "February 2026 has no day 29 (2026 is not a leap year)"),
                (["audit", "search", "--to", "2026-04-31T12:00:00Z"], "April 2026 has no day 31"),
                (["audit", "search", "--to", "2026-06-00"], "June 2026 has no day 00"),
                (["audit", "search", "--from", "2026-13-01"], "month must be 01-12 (got 13)"),
                (["request", "list", "--created-after", "2026-11-28T39:00:00Z"], "hour must be 00-23 (got 39)"),
                (["request", "list", "--created-after", "2026-11-28T25:00:00Z"], "hour must be 00-23 (got 25)"),
                (["request", "list", "--created-after", "2026-11-28T24:00:00+02:00"], "hour must be 00-23 (got 24)"),
                (["request", "list", "--created-after", "2026-11-28T23:60:00Z"], "minute must be 00-59 (got 60)"),
                (["request", "list", "--created-after", "2026-11-28T23:59:60Z"], "second must be 00-59 (got 60)"),
                (
                    ["request", "list", "--created-after", "2026-11-28T10:00:00+05:99"],
                    "the offset's minutes must be 00-59 (got 99)"
                ),
                (["request", "list", "--created-after", "2026-11-28T10:00:00"], "must be ISO 8601 with an offset"),
                (["audit", "search", "--from", "yesterday"], "must be ISO 8601 with an offset"),
            ]
            let before = try await world.snapshot()
            for (arguments, message) in times {
                let option = try #require(arguments.first { $0.hasPrefix("--") })
                let result = try await world.lockbox(arguments)
                #expect(result.status == 64, "\(result)")
                #expect(
                    result.stderr.contains("'\(arguments.last!)' is invalid for '\(option) <time>': \(message)"),
                    "expected “\(message)”: \(result)")
                #expect(result.stdout.isEmpty, "\(result)")
            }
            for (arguments, message) in cases {
                let result = try await world.lockbox(arguments)
                #expect(result.status == 64, "\(result)")
                #expect(result.stderr.contains(message), "expected “\(message)”: \(result)")
                #expect(result.stdout.isEmpty, "\(result)")
            }
            #expect(try await world.snapshot() == before, "bad input changes nothing, not even the audit log")
        }
    }

    @Test("CSV of an empty list is its header line, the header a list with rows has")
    func emptyCSV() async throws {
        try await CLIWorld.with { world in
            func csv(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) async throws -> String {
                let result = try await world.lockbox(arguments + ["--format", "csv"])
                #expect(result.status == 0 && result.stderr.isEmpty, "\(result)", sourceLocation: sourceLocation)
                return result.stdout
            }
            let tenants = "tenantId,name,customerLockbox,serviceAccount,createdAt"
            let requests =
                "requestId,tenant,workload,ticket,reason,requester,durationMinutes,resource,status,createdAt,"
                + "reviewedAt,internalApprover,notifiedAt,customerDeadline,decidedAt,decidedBy,decision,"
                + "accessStartsAt,accessEndsAt,endedAt,endedReason"
            let audit =
                "id,occurredAt,tenant,recordType,user,actor,clientIp,activity,item,requestId,workload,result,parameters"
            let notifications =
                "notificationId,tenant,requestId,recipient,subject,body,createdAt,sentAt,withdrawnAt,withdrawnReason"
            let newRequests = ["audit", "search", "--activity", "New-AccessToCustomerDataRequest"]
            let empty: [(arguments: [String], header: String)] = [
                (["tenant", "list"], tenants),
                (["operator", "list"], "alias,isManager,createdAt"),
                (["request", "list"], requests),
                (newRequests, audit),
                (["notifications", "list"], notifications),
                (["notifications", "deliver"], notifications),
                (["auditor", "list"], "login,tenant,status"),
            ]
            for (arguments, header) in empty {
                #expect(try await csv(arguments) == header + "\n", "\(arguments)")
            }

            try await world.seed()
            _ = try await world.newRequest()
            #expect(try await csv(["request", "list", "--tenant", "fabrikam"]) == requests + "\n")
            let filled: [(arguments: [String], header: String, rows: Int)] = [
                (["tenant", "list"], tenants, 2), (["request", "list"], requests, 1), (newRequests, audit, 1),
            ]
            for (arguments, header, rows) in filled {
                let lines = try await csv(arguments).split(separator: "\n").map(String.init)
                #expect(lines.count == 1 + rows && lines.first == header, "\(arguments): \(lines)")
            }
        }
    }

    @Test("a tenant named in a malformed way is refused by the name rule, not as a tenant that does not exist")
    func malformedTenantNames() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let rule = "tenant: must be 1 to 63 letters, digits or hyphens, starting with a letter or digit"
            // "contoso\n" was refused as `no tenant named contoso` (the newline made a space, then
            // dropped), which exists; "" as `no tenant named`, naming neither the field nor the rule.
            for (name, shown) in [("contoso\n", "contoso?"), ("", ""), (" contoso", " contoso"), ("con toso", "con toso")] {
                let expected = "\(rule) (got \"\(shown)\")"
                let commands: [[String]] = [
                    ["tenant", "show", name],
                    ["tenant", "set", name, "--customer-lockbox", "off", "--as", "admin@contoso.com"],
                    ["role", "add", name, "eve@contoso.com", "--role", "CustomerLockboxApprover", "--as", "admin@contoso.com"],
                    ["role", "remove", name, "approver@contoso.com", "--role", "CustomerLockboxApprover", "--as", "admin@contoso.com"],
                    ["role", "list", name],
                    ["request", "list", "--tenant", name],
                    ["audit", "search", "--tenant", name],
                    ["notifications", "list", "--tenant", name],
                    ["auditor", "grant", "postgres", "--tenant", name],
                    ["auditor", "revoke", "postgres", "--tenant", name],
                    ["auditor", "list", "--tenant", name],
                ]
                let before = try await world.snapshot()
                for arguments in commands { try await world.refused(arguments, expected) }
                #expect(try await world.snapshot() == before, "a refusal must change nothing")
            }
        }
    }
}

@Suite("lockbox requests, invoke and audit")
struct RequestCommandTests {
    @Test("a request from creation to revocation, every JSON field checked")
    func lifecycle() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let started = Date()
            let create = try await world.lockbox(
                "request", "create", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange",
                "--ticket", "SR-4711", "--reason", "Mailbox does not sync", "--duration", "90m",
                "--resource", "alice@contoso.com", "--ip", "10.1.2.3", "--format", "json")
            #expect(create.status == 0, "\(create)")
            let created = try create.jsonObject()
            let id = try #require(created["requestId"] as? String)
            #expect(UUID(uuidString: id) != nil && id == id.lowercased())
            #expect(created["tenant"] as? String == "contoso")
            #expect(created["workload"] as? String == "Exchange")
            #expect(created["ticket"] as? String == "SR-4711")
            #expect(created["reason"] as? String == "Mailbox does not sync")
            #expect(created["requester"] as? String == "alex")
            #expect(created["durationMinutes"] as? Int == 90)
            #expect(created["resource"] as? String == "alice@contoso.com")
            #expect(created["status"] as? String == "PendingInternal")
            let createdAt = try #require(date(created["createdAt"]))
            #expect(createdAt >= started.addingTimeInterval(-5) && createdAt <= Date().addingTimeInterval(5))
            for key in ["notifiedAt", "decidedAt", "decidedBy", "accessStartsAt", "accessEndsAt"] {
                #expect(created.keys.contains(key), "\(key) is present")
                #expect(created[key] is NSNull, "\(key) is null before any decision")
            }

            let reviewed = try await world.object(
                "request", "review", id, "--manager", "morgan", "--approve", "--comment", "ticket checked")
            #expect(reviewed["status"] as? String == "PendingCustomer")
            #expect(reviewed["internalApprover"] as? String == "morgan")
            let notifiedAt = try #require(date(reviewed["notifiedAt"]))
            #expect(date(reviewed["customerDeadline"]) == notifiedAt.addingTimeInterval(12 * 3600))

            let notifications = try await world.array("notifications", "list", "--tenant", "contoso")
            #expect(
                Set(notifications.compactMap { $0["recipient"] as? String }) == [
                    "admin@contoso.com", "approver@contoso.com",
                ])
            for notification in notifications {
                #expect(notification["requestId"] as? String == id)
                #expect(notification["sentAt"] is NSNull)
                let body = try #require(notification["body"] as? String)
                #expect(
                    body.contains(id) && body.contains("SR-4711") && body.contains("Exchange")
                        && body.contains("1 h 30 min"))
                #expect(!body.contains("http") && !body.contains("www."))
            }
            let delivered = try await world.array("notifications", "deliver")
            #expect(delivered.count == 2)
            let listedAfter = try await world.array("notifications", "list", "--tenant", "contoso")
            for notification in delivered {
                let sentAt = try #require(date(notification["sentAt"]), "deliver prints sentAt: \(notification)")
                #expect(sentAt >= notifiedAt, "\(notification)")
                let id = try #require(notification["notificationId"] as? Int)
                let listed = try #require(listedAfter.first { $0["notificationId"] as? Int == id })
                #expect(listed["sentAt"] as? String == notification["sentAt"] as? String, "as notifications list shows")
            }
            #expect(try await world.array("notifications", "deliver").isEmpty, "never sent twice")

            let approved = try await world.object(
                "request", "decide", id, "--decision", "Approve", "--as", "approver@contoso.com", "--ip", "192.0.2.10")
            #expect(approved["status"] as? String == "Approved")
            #expect(approved["decidedBy"] as? String == "approver@contoso.com")
            let starts = try #require(date(approved["accessStartsAt"]))
            let ends = try #require(date(approved["accessEndsAt"]))
            #expect(ends.timeIntervalSince(starts) == 90 * 60)
            #expect(date(approved["decidedAt"]) == starts)

            // The decision record, exactly as DESIGN.md's table.
            let decisions = try await world.array(
                "audit", "search", "--request", id, "--activity", "Set-AccessToCustomerDataRequest")
            #expect(decisions.count == 1)
            let decision = try #require(decisions.first)
            #expect(decision["id"] is Int)
            #expect(date(decision["occurredAt"]) == starts)
            #expect(decision["tenant"] as? String == "contoso")
            #expect(decision["recordType"] as? String == "CustomerLockbox")
            #expect(decision["user"] as? String == "contosoBOXServiceAccount@contoso.prod.outlook.com")
            #expect(decision["actor"] as? String == "approver@contoso.com")
            #expect(decision["clientIp"] as? String == "192.0.2.10")
            #expect(decision["activity"] as? String == "Set-AccessToCustomerDataRequest")
            #expect(decision["item"] as? String == id)
            #expect(decision["requestId"] as? String == id)
            #expect(decision["workload"] as? String == "Exchange")
            #expect(decision["result"] as? String == "Succeeded")
            let parameters = try #require(decision["parameters"] as? [String: Any])
            #expect(parameters["ApprovalDecision"] as? String == "Approve")
            #expect(parameters["DecidedBy"] as? String == "approver@contoso.com")

            // Operations under the grant: allowed inside the scope, refused elsewhere; all audited.
            let operation = "Get-MailboxMessage"
            let message = ["--resource", "alice@contoso.com/Inbox/msg-1001"]
            let allowed = try await world.lockbox(
                [
                    "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation",
                    operation,
                ]
                    + message + ["--ip", "10.9.8.7", "--format", "json"])
            #expect(allowed.status == 0, "\(allowed)")
            let invoked = try allowed.jsonObject()
            #expect(invoked["requestId"] as? String == id)
            #expect(invoked["operation"] as? String == operation)
            #expect(invoked["resource"] as? String == "alice@contoso.com/Inbox/msg-1001")
            #expect(invoked["auditId"] is Int)
            #expect(date(invoked["accessEndsAt"]) == ends)
            let content = try #require(invoked["result"] as? [String: Any])
            #expect(content["subject"] as? String == "Invoice 4471 from Northwind Traders")
            // Named arguments instead of --resource, and no --ip: a client address is optional.
            let named = try await world.lockbox(
                "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation",
                operation,
                "--arg", "mailbox=alice@contoso.com", "--arg", "folder=Inbox", "--arg", "messageId=msg-1001")
            #expect(named.status == 0 && named.stdout.contains("Invoice 4471"), "\(named)")
            try await world.refused(
                [
                    "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation",
                    operation,
                    "--resource", "bob@contoso.com/Inbox/msg-2001",
                ],
                "access denied: resource bob@contoso.com/Inbox/msg-2001 is outside the scope alice@contoso.com")

            let refused = try await world.refused(
                [
                    "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "SharePoint", "--operation",
                    "Get-Site",
                    "--resource", "finance",
                ],
                "access denied")
            #expect(refused.stderr.contains("no access request of operator alex for SharePoint"), "\(refused)")
            try await world.refused(
                [
                    "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation",
                    "Remove-Mailbox",
                    "--resource", "alice@contoso.com",
                ],
                "not in the pre-approved catalogue")
            let operatorRecords = try await world.array(
                "audit", "search", "--user", "Microsoft Operator", "--oldest-first")
            #expect(
                operatorRecords.map { $0["result"] as? String } == [
                    "Succeeded", "Succeeded", "Denied", "Denied", "Denied",
                ])
            #expect(operatorRecords.first?["requestId"] as? String == id, "operator actions carry the request id")
            // A refusal names its record, where its reason is kept.
            let sharePointRecord = try #require(operatorRecords[3]["id"] as? Int)
            #expect(operatorRecords[3]["workload"] as? String == "SharePoint")
            #expect(refused.stderr.contains("(audit record \(sharePointRecord))"), "\(refused)")
            #expect(operatorRecords.first?["actor"] as? String == "alex")

            // History: list filters and the timeline.
            let listed = try await world.array("request", "list", "--tenant", "contoso", "--status", "Approved")
            #expect(listed.map { $0["requestId"] as? String } == [id])
            #expect(try await world.array("request", "list", "--status", "Denied").isEmpty)
            let after = try await world.array(
                "request", "list", "--created-after", TimeFormat.string(createdAt.addingTimeInterval(-1)))
            #expect(after.count == 1)
            #expect(
                try await world.array(
                    "request", "list", "--created-after", TimeFormat.string(Date().addingTimeInterval(60))
                ).isEmpty)

            let shown = try await world.object("request", "show", id)
            #expect(shown["requestId"] as? String == id)
            let timeline = try #require(shown["timeline"] as? [[String: Any]])
            #expect(
                timeline.compactMap { $0["activity"] as? String }.prefix(3) == [
                    "New-AccessToCustomerDataRequest", "Approve-AccessToCustomerDataRequestInternally",
                    "Set-AccessToCustomerDataRequest",
                ])
            let table = try await world.ok("request", "show", id)
            #expect(
                table.stdout.contains("timeline:") && table.stdout.contains("status:")
                    && table.stdout.contains("Approved"), "\(table)")

            // CSV lists have a header and one line per request.
            let csv = try await world.ok("request", "list", "--format", "csv")
            let header = try #require(csv.stdout.split(separator: "\n").first)
            #expect(
                header.hasPrefix(
                    "requestId,tenant,workload,ticket,reason,requester,durationMinutes,resource,status,createdAt"))

            // The customer ends the grant early; the next read is refused.
            try await world.refused(
                ["request", "revoke", id, "--as", "approver@fabrikam.com"],
                "neither a global administrator nor a Customer Lockbox approver of contoso")
            let revoked = try await world.object(
                "request", "revoke", id, "--as", "approver@contoso.com", "--comment", "done")
            #expect(revoked["status"] as? String == "Revoked")
            try await world.refused(
                [
                    "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation",
                    operation,
                ]
                    + message,
                "access denied")

            let swept = try await world.object("sweep")
            #expect(swept["expired"] as? [String] == [] && swept["completed"] as? [String] == [])
        }
    }

    @Test("deny, cancel, and Customer Lockbox off")
    func otherOutcomes() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let denied = try await world.newRequest()
            try await world.ok("request", "review", denied, "--manager", "sam", "--approve")
            let deniedJSON = try await world.object(
                "request", "decide", denied, "--decision", "deny", "--as", "admin@contoso.com", "--comment", "not now")
            #expect(deniedJSON["status"] as? String == "Denied")
            #expect(deniedJSON["decision"] as? String == "Deny")
            try await world.refused(
                ["request", "decide", denied, "--decision", "Approve", "--as", "approver@contoso.com"],
                "no longer pending")

            let cancelled = try await world.newRequest(by: "blake")
            try await world.refused(
                ["request", "decide", cancelled, "--decision", "Cancel", "--as", "alex"],
                "only the requester (blake) may cancel")
            let cancelledJSON = try await world.object(
                "request", "decide", cancelled, "--decision", "Cancel", "--as", "blake")
            #expect(cancelledJSON["status"] as? String == "Cancelled")

            let rejected = try await world.newRequest()
            let rejectedJSON = try await world.object(
                "request", "review", rejected, "--manager", "morgan", "--reject", "--comment", "wrong ticket")
            #expect(rejectedJSON["status"] as? String == "Rejected")

            try await world.ok("tenant", "set", "fabrikam", "--customer-lockbox", "off", "--as", "admin@fabrikam.com")
            let direct = try await world.newRequest(tenant: "fabrikam", workload: "OneDrive", duration: "1m")
            let directJSON = try await world.object("request", "review", direct, "--manager", "morgan", "--approve")
            #expect(directJSON["status"] as? String == "Approved", "lockbox off: no customer step")
            #expect(directJSON["notifiedAt"] is NSNull)
            #expect(try await world.array("notifications", "list", "--tenant", "fabrikam").isEmpty)

            let statuses = try await world.array("request", "list")
            #expect(
                Set(statuses.compactMap { $0["status"] as? String }) == ["Denied", "Cancelled", "Rejected", "Approved"])
            let table = try await world.ok("request", "list", "--tenant", "contoso")
            #expect(table.stdout.split(separator: "\n").count == 4, "\(table)")
        }
    }

    @Test("the 12-hour deadline, the end of the window, and sweep (times moved back in the database)")
    func deadlinesAndSweep() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let pending = try await world.newRequest()
            try await world.ok("request", "review", pending, "--manager", "morgan", "--approve")
            let granted = try await world.newRequest(duration: "30m", resource: "alice@contoso.com")
            try await world.ok("request", "review", granted, "--manager", "morgan", "--approve")
            try await world.ok("request", "decide", granted, "--decision", "Approve", "--as", "approver@contoso.com")
            // The system clock cannot be moved, so move the request's times back instead (which
            // the lifecycle's rules, migration 0015, refuse: off while the history is rewritten).
            try await world.db.pool.withTransaction { connection in
                try await connection.execute(script: "ALTER TABLE lockbox.requests DISABLE TRIGGER requests_rules")
                try await connection.query(
                    """
                    UPDATE lockbox.requests SET notified_at = notified_at - interval '13 hours',
                        customer_deadline = customer_deadline - interval '13 hours'
                    WHERE request_id = \(UUID(uuidString: pending)!)
                    """)
                try await connection.query(
                    """
                    UPDATE lockbox.requests SET access_starts_at = access_starts_at - interval '1 hour',
                        access_ends_at = access_ends_at - interval '1 hour', decided_at = decided_at - interval '1 hour'
                    WHERE request_id = \(UUID(uuidString: granted)!)
                    """)
                try await connection.execute(script: "ALTER TABLE lockbox.requests ENABLE TRIGGER requests_rules")
            }
            #expect(
                try await world.object("request", "show", pending)["status"] as? String == "Expired",
                "even before a sweep")
            #expect(try await world.object("request", "show", granted)["status"] as? String == "Completed")
            try await world.refused(
                ["request", "decide", pending, "--decision", "Approve", "--as", "approver@contoso.com"],
                "expired")
            try await world.refused(
                [
                    "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation",
                    "Get-Mailbox", "--resource", "alice@contoso.com", "--ip", "10.0.0.1",
                ],
                "access denied: the access window of request \(granted) ended at")

            let swept = try await world.object("sweep")
            #expect(swept["expired"] as? [String] == [pending])
            #expect(swept["completed"] as? [String] == [granted])
            let again = try await world.object("sweep")
            #expect(
                again["expired"] as? [String] == [] && again["completed"] as? [String] == [],
                "sweeping twice changes nothing")
            let table = try await world.ok("sweep")
            #expect(table.stdout.contains("expired:") && table.stdout.contains("completed:"), "\(table)")
            let expiries = try await world.array("audit", "search", "--activity", "Expire-AccessToCustomerDataRequest")
            #expect(expiries.map { $0["requestId"] as? String } == [pending])
            #expect(expiries.first?["user"] as? String == "System")
        }
    }

    @Test("a request's scope must fit its workload's paths, or it would be approved and cover nothing")
    func scopeFitsWorkload() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let before = try await world.snapshot()
            for (workload, scope, message) in [
                (
                    "Exchange", "finance",
                    "resource: a scope for Exchange is a path mailbox[/folder[/messageId[/attachment]]] whose first "
                        + "segment is a mailbox address like alice@contoso.com"
                ),
                ("OneDrive", "finance/reports", "whose first segment is the owner's address like alice@contoso.com"),
                ("OneDrive", "bob@contoso.com/a/b/c", "resource: a scope for OneDrive is a path owner[/folder[/file]]"),
                ("SharePoint", "finance/Documents/q3.xlsx/more", "a scope for SharePoint is a path site[/library[/document]]"),
            ] {
                try await world.refused(
                    [
                        "request", "create", "--operator", "alex", "--tenant", "contoso", "--workload", workload,
                        "--ticket", "SR-1", "--reason", "r", "--resource", scope,
                    ], message)
            }
            #expect(try await world.snapshot() == before, "a refusal changes nothing")
            let fitting = try await world.newRequest(workload: "Exchange", resource: "Alice@Contoso.com/Inbox")
            #expect(try await world.object("request", "show", fitting)["resource"] as? String == "alice@contoso.com/Inbox")
            _ = try await world.newRequest(workload: "SharePoint", resource: "finance/Documents")
        }
    }

    @Test("every documented time form is accepted and means that instant: date, Z, offsets, fractions, leap day")
    func timeForms() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let id = try await world.newRequest()
            let created = try #require(date(try await world.object("request", "show", id)["createdAt"]))
            let second = Date(timeIntervalSince1970: created.timeIntervalSince1970.rounded(.down))

            /// `instant` as the local time `offset` seconds east of UTC, then `zone` as written there.
            func written(_ instant: Date, offset: Int, zone: String, fraction: Bool = false) -> String {
                let local = Date.ISO8601FormatStyle(includingFractionalSeconds: fraction)
                    .format(instant.addingTimeInterval(Double(offset)))
                return String(local.dropLast()) + zone  // without its Z
            }
            func listed(after time: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> Bool {
                try await world.array("request", "list", "--created-after", time, sourceLocation: sourceLocation)
                    .contains { $0["requestId"] as? String == id }
            }
            // Each form of the second before the request was created lists it; of the second after, not.
            var forms: [(before: String, after: String)] = []
            let zones = [(0, "Z"), (19_800, "+05:30"), (19_800, "+0530"), (-28_800, "-08:00"), (18_000, "+05")]
            for (offset, zone) in zones {
                forms.append(
                    (
                        written(second.addingTimeInterval(-1), offset: offset, zone: zone),
                        written(second.addingTimeInterval(1), offset: offset, zone: zone)
                    ))
            }
            // Fractional seconds count: half a second either side.
            forms.append(
                (
                    written(created.addingTimeInterval(-0.5), offset: 19_800, zone: "+05:30", fraction: true),
                    written(created.addingTimeInterval(0.5), offset: -28_800, zone: "-08:00", fraction: true)
                ))
            for (before, after) in forms {
                #expect(try await listed(after: before), "\(before)")
                #expect(try await listed(after: after) == false, "\(after)")
            }

            // A date is midnight UTC.
            var utc = Calendar(identifier: .gregorian)
            utc.timeZone = try #require(TimeZone(secondsFromGMT: 0))
            let day = Date.ISO8601FormatStyle().year().month().day()
            let today = day.format(created)
            let midnight = utc.startOfDay(for: created)
            let tomorrow = day.format(try #require(utc.date(byAdding: .day, value: 1, to: midnight)))
            let records = ["audit", "search", "--request", id]
            #expect(try await world.array(records + ["--from", today, "--to", tomorrow]).count == 1)
            #expect(try await world.array(records + ["--from", tomorrow]).isEmpty)
            #expect(try await world.array(records + ["--to", today]).isEmpty)

            // A leap day and the last second of a day exist.
            #expect(
                try await world.array("audit", "search", "--from", "2024-02-29", "--to", "2024-02-29T23:59:59Z")
                    .isEmpty)
            #expect(try await world.array(records + ["--from", "2024-02-29T23:59:59+05:30"]).count == 1)
            let leapDay2028 = Date(timeIntervalSince1970: 1_835_395_200)  // 2028-02-29T00:00:00Z
            #expect(try await listed(after: "2028-02-29") == (created > leapDay2028))
            #expect(
                try await listed(after: "2028-02-29T23:59:59.999-08:00")
                    == (created > leapDay2028.addingTimeInterval(32 * 3600 - 0.001)))
        }
    }

    @Test("each bad input of the broker issue: exit 1, the message, nothing changed")
    func badInput() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let pendingInternal = try await world.newRequest()
            let pendingCustomer = try await world.newRequest()
            try await world.ok("request", "review", pendingCustomer, "--manager", "morgan", "--approve")
            let managersOwn = try await world.newRequest(by: "morgan")
            let unknownID = UUID().uuidString.lowercased()
            func create(_ changes: [String: String]) -> [String] {
                var options = [
                    "--operator": "alex", "--tenant": "contoso", "--workload": "Exchange", "--ticket": "SR-1",
                    "--reason": "Mailbox does not sync", "--duration": "1h",
                ]
                options.merge(changes) { $1 }
                return ["request", "create"] + options.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] }
            }
            let cases: [(arguments: [String], message: String)] = [
                (create(["--tenant": "nowhere"]), "no tenant named nowhere"),
                (
                    create(["--tenant": "Contoso"]),
                    "no tenant named Contoso (tenant names are exact: did you mean contoso?)"
                ),
                (create(["--operator": "ghost"]), "no operator with alias ghost"),
                (["request", "show", unknownID], "no request with id \(unknownID)"),
                (
                    ["request", "decide", unknownID, "--decision", "Approve", "--as", "approver@contoso.com"],
                    "no request with id"
                ),
                (["request", "review", unknownID, "--manager", "morgan", "--approve"], "no request with id"),
                // Zero is `0` whatever unit it was typed in (not “0s” for 0m); others as typed.
                (create(["--duration": "0m"]), "duration: must be between 1 minute and 4 hours (got 0)"),
                (create(["--duration": "0h"]), "duration: must be between 1 minute and 4 hours (got 0)"),
                (create(["--duration": "-5m"]), "duration: must be between 1 minute and 4 hours (got -5m)"),
                (create(["--duration": "4h1m"]), "duration: must be between 1 minute and 4 hours (got 4h1m)"),
                (create(["--duration": "9999999999999h"]), "duration: must be between 1 minute and 4 hours"),
                (create(["--duration": "1m30s"]), "duration: must be a whole number of minutes (got 1m30s)"),
                (create(["--ticket": ""]), "ticket: must not be empty or only whitespace"),
                (create(["--ticket": "   "]), "ticket: must not be empty or only whitespace"),
                (create(["--ticket": "SR-1\u{7}2"]), "ticket: must not contain control characters"),
                (create(["--reason": "first line\nsecond line"]), "reason: must not contain control characters"),
                (create(["--reason": "tab\there"]), "reason: must not contain control characters"),
                (
                    create(["--reason": "refund \u{202E}gnp.exe"]),
                    "reason: must not contain line or paragraph separators or bidirectional text controls (got U+202E)"
                ),
                (
                    create(["--ticket": "SR-1\u{2028}SR-2"]),
                    "ticket: must not contain line or paragraph separators or bidirectional text controls (got U+2028)"
                ),
                (["audit", "search", "--activity", ""], "activity: must not be empty"),
                (["audit", "search", "--user", ""], "user: must not be empty"),
                (create(["--reason": String(repeating: "x", count: 2001)]), "reason: must be at most 2000 characters"),
                (
                    ["request", "review", managersOwn, "--manager", "morgan", "--approve"],
                    "morgan created request \(managersOwn) and cannot review it"
                ),
                (
                    ["request", "review", pendingInternal, "--manager", "blake", "--approve"],
                    "blake is not a support manager"
                ),
                (
                    ["request", "decide", pendingCustomer, "--decision", "Approve", "--as", "approver@fabrikam.com"],
                    "approver@fabrikam.com is neither a global administrator nor a Customer Lockbox approver of contoso"
                ),
                (
                    ["request", "decide", pendingCustomer, "--decision", "Deny", "--as", "nobody@contoso.com"],
                    "nobody@contoso.com is neither a global administrator nor a Customer Lockbox approver of contoso"
                ),
                (
                    ["request", "decide", pendingInternal, "--decision", "Approve", "--as", "approver@contoso.com"],
                    "is PendingInternal, not yet pending a customer decision: it awaits the provider's internal review"
                ),
                (
                    ["request", "review", pendingCustomer, "--manager", "sam", "--approve"],
                    "not pending internal review"
                ),
                (
                    ["request", "decide", pendingCustomer, "--decision", "Cancel", "--as", "blake"],
                    "only the requester (alex) may cancel"
                ),
                (
                    ["request", "revoke", pendingCustomer, "--as", "approver@contoso.com"],
                    "is PendingCustomer, not an active grant to revoke"
                ),
                (
                    ["tenant", "set", "contoso", "--customer-lockbox", "off", "--as", "approver@contoso.com"],
                    "only a global administrator of contoso may turn Customer Lockbox on or off"
                ),
                (
                    ["tenant", "set", "contoso", "--customer-lockbox", "off", "--as", "admin@fabrikam.com"],
                    "only a global administrator of contoso may turn Customer Lockbox on or off"
                ),
                (
                    [
                        "role", "add", "contoso", "eve@contoso.com", "--role", "GlobalAdministrator", "--as",
                        "approver@contoso.com",
                    ],
                    "only a global administrator of contoso may assign roles"
                ),
                (
                    [
                        "role", "remove", "contoso", "approver@contoso.com", "--role", "CustomerLockboxApprover",
                        "--as", "approver@contoso.com",
                    ],
                    "only a global administrator of contoso may remove roles"
                ),
                (["tenant", "create", "northwind", "--admin", "not-an-email"], "admin: must be a user principal name"),
                (["tenant", "create", "bad name", "--admin", "admin@northwind.com"], "name: must be 1 to 63 letters"),
                (["tenant", "show", "nowhere"], "no tenant named nowhere"),
                (["role", "list", "nowhere"], "no tenant named nowhere"),
                (["operator", "add", "alex"], "operator alex already exists"),
                (["operator", "add", "Alex!"], "alias: an operator alias is"),
                (["notifications", "list", "--tenant", "nowhere"], "no tenant named nowhere"),
                (["audit", "search", "--tenant", "nowhere"], "no tenant named nowhere"),
                // Names are exact; a name that differs only in case is refused, naming the tenant meant.
                (["tenant", "show", "CONTOSO"], "no tenant named CONTOSO (tenant names are exact: did you mean contoso?)"),
                (["role", "list", "Contoso"], "no tenant named Contoso (tenant names are exact: did you mean contoso?)"),
                (
                    ["tenant", "set", "CONTOSO", "--customer-lockbox", "off", "--as", "admin@contoso.com"],
                    "no tenant named CONTOSO (tenant names are exact: did you mean contoso?)"
                ),
                (
                    ["request", "list", "--tenant", "CONTOSO"],
                    "no tenant named CONTOSO (tenant names are exact: did you mean contoso?)"
                ),
                (
                    ["audit", "search", "--tenant", "CONTOSO"],
                    "no tenant named CONTOSO (tenant names are exact: did you mean contoso?)"
                ),
            ]
            let before = try await world.snapshot()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (arguments, message) in cases {
                    group.addTask { try await world.refused(arguments, message) }
                }
                try await group.waitForAll()
            }
            let after = try await world.snapshot()
            #expect(before == after, "a refusal must change nothing")
        }
    }

    @Test("a decision held up in the database past --database-timeout: exit 1, one line naming the wait, nothing done")
    func heldUpDecision() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let id = try await world.newRequest()
            try await world.ok("request", "review", id, "--manager", "morgan", "--approve")
            let before = try await world.snapshot()
            // Another session holds the request, as a decision that never finishes would.
            let pin = try await PGConnection.connect(world.db.connectionString)
            try await pin.execute(script: "BEGIN")
            try await pin.query("SELECT 1 FROM lockbox.requests WHERE request_id = \(UUID(uuidString: id)!) FOR UPDATE")
            // The decision waits for the test's lock: the timeout only has to outlast the command's
            // other statements on a busy machine, whose pauses between two of them the server
            // ends the transaction for (idle-in-transaction, as long as the timeout).
            let decision = Task {
                try await world.lockbox(
                    "request", "decide", id, "--decision", "Approve", "--as", "approver@contoso.com",
                    "--database-timeout", "10s")
            }
            // Released after 60 s at the latest: a decision that waits for ever would then be made.
            let released = Task {
                try? await Task.sleep(for: .seconds(60))
                try await pin.execute(script: "COMMIT")
            }
            let result = try await decision.value
            released.cancel()
            _ = try? await released.value
            await pin.close()
            #expect(result.status == 1, "\(result)")
            #expect(result.stderrLines.count == 1, "\(result)")
            #expect(
                result.stderr.contains(
                    "error: the lockbox database did not answer within 10 s, so nothing was done: the change was "
                        + "cancelled and rolled back"),
                "\(result)")
            #expect(result.stdout.isEmpty, "\(result)")
            #expect(try await world.snapshot() == before, "a refused decision changed something")
            #expect(try await world.object("request", "show", id)["status"] as? String == "PendingCustomer")
        }
    }
}

@Suite("lockbox auditor")
struct AuditorCommandTests {
    @Test("auditor grant/list/revoke map a login to tenants, and the report views honour it")
    func grants() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            try await world.db.withLogins([("carol", "lockbox_auditor")]) { logins in
                let login = logins[0].name
                // Granting to a login no role has is refused: a typo would grant nothing now, and
                // everything to whoever later gets that name.
                let typo = login + "x"
                let before = try await world.snapshot()
                try await world.refused(
                    ["auditor", "grant", typo, "--tenant", "contoso"],
                    "no PostgreSQL role is named \(typo): create the login first, e.g. CREATE ROLE \"\(typo)\" LOGIN")
                #expect(try await world.snapshot() == before, "a refused grant records nothing")
                #expect(try await world.array("auditor", "list").isEmpty)

                let granted = try await world.array("auditor", "grant", login, "--tenant", "contoso")
                #expect(granted.count == 1)
                #expect(granted.first?["login"] as? String == login && granted.first?["tenant"] as? String == "contoso")
                #expect(granted.first?["status"] as? String == "active")
                try await world.refused(
                    ["auditor", "grant", login, "--tenant", "contoso"], "\(login) already audits tenant contoso")
                try await world.refused(["auditor", "grant", login, "--tenant", "nowhere"], "no tenant named nowhere")
                try await world.refused(
                    ["auditor", "grant", "", "--tenant", "contoso"], "login: must be a PostgreSQL login name")
                try await world.refused(
                    ["auditor", "grant", String(repeating: "x", count: 64), "--tenant", "contoso"], "1 to 63 bytes")

                let all = try await world.array("auditor", "list")
                #expect(all.map { $0["tenant"] as? String } == ["contoso"])
                #expect(try await world.array("auditor", "list", "--tenant", "fabrikam").isEmpty)
                let table = try await world.ok("auditor", "list")
                #expect(table.stdout.contains(login) && table.stdout.contains("active"), "\(table)")

                // With the auditor role, the login sees only the granted tenant in the report views.
                let auditor = try await world.db.connect(user: login, password: logins[0].password)
                let tenants = try await auditor.query("SELECT DISTINCT tenant FROM lockbox.audit_log ORDER BY 1")
                let denied = (try? await auditor.query("SELECT count(*) FROM lockbox.audit_records")) == nil
                await auditor.close()
                #expect(try tenants.map { try $0.decode(String.self, at: 0) } == ["contoso"])
                #expect(denied, "auditors cannot read the base tables")

                let revoked = try await world.array("auditor", "revoke", login, "--tenant", "contoso")
                #expect(revoked.isEmpty)
                try await world.refused(
                    ["auditor", "revoke", login, "--tenant", "contoso"], "\(login) does not audit tenant contoso")
                for activity in ["Add-AuditorTenant", "Remove-AuditorTenant"] {
                    let records = try await world.array("audit", "search", "--activity", activity)
                    #expect(records.count == 1, "\(activity)")
                    #expect(
                        records.first?["item"] as? String == login && records.first?["tenant"] as? String == "contoso")
                }
            }
        }
    }

    @Test("role remove and auditor grant/revoke list what is left within the change, not after it committed")
    func listingWithinTheChange() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            try await world.db.withLogins([("hana", "lockbox_auditor"), ("nobody", nil)]) { logins in
                let (auditor, nobody) = (logins[0].name, logins[1].name)
                try await world.ok("auditor", "grant", auditor, "--tenant", "fabrikam")
                // As each change commits, its session becomes a login that may read nothing. The
                // listing of what is left used to run after the commit and failed: the command
                // said the change failed (exit 1), though it was made.
                let admin = try await world.db.connect()
                try await admin.execute(
                    script: """
                        CREATE FUNCTION public.lose_privileges() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN PERFORM set_config('role', '\(nobody)', false); RETURN NULL; END $$;
                        CREATE CONSTRAINT TRIGGER lose_privileges AFTER INSERT ON lockbox.audit_records
                            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                            WHEN (NEW.activity IN ('Remove-RoleGroupMember', 'Add-AuditorTenant',
                                                   'Remove-AuditorTenant'))
                            EXECUTE FUNCTION public.lose_privileges();
                        """)
                await admin.close()
                let roles = try await world.array(
                    "role", "remove", "contoso", "approver@contoso.com", "--role", "CustomerLockboxApprover", "--as",
                    "admin@contoso.com")
                #expect(roles.map { $0["upn"] as? String } == ["admin@contoso.com"])
                let granted = try await world.array("auditor", "grant", auditor, "--tenant", "contoso")
                #expect(granted.map { $0["tenant"] as? String } == ["contoso"])
                #expect(try await world.array("auditor", "revoke", auditor, "--tenant", "fabrikam").isEmpty)
                // Each was made, as reported.
                #expect(try await world.array("role", "list", "contoso").count == 1)
                let grants = try await world.array("auditor", "list")
                #expect(grants.map { $0["tenant"] as? String } == ["contoso"])
            }
        }
    }

    @Test("auditor list shows grants that do not take effect: outside lockbox_auditor, NOLOGIN since, dropped")
    func grantStatus() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            // A group role reaches every member that sets it as its role: granting lockbox_auditor
            // itself would open the tenant to every auditor.
            for group in ["lockbox_auditor", "lockbox_app"] {
                try await world.refused(
                    ["auditor", "grant", group, "--tenant", "fabrikam"], "\(group) is a group role (NOLOGIN), not a login")
            }
            try await world.db.withLogins([
                ("dave", nil), ("erin", "lockbox_auditor"), ("finn", "lockbox_auditor"), ("gina", "lockbox_auditor"),
                ("hank", nil),
            ]) { logins in
                let (outside, dropped, disabled, shared, member) = (
                    logins[0].name, logins[1].name, logins[2].name, logins[3].name, logins[4].name
                )
                let granted = try await world.array("auditor", "grant", outside, "--tenant", "fabrikam")
                #expect(granted.first?["status"] as? String == "not in lockbox_auditor", "\(granted)")
                for login in [dropped, disabled, shared] { try await world.ok("auditor", "grant", login, "--tenant", "fabrikam") }
                // A login that other roles are members of reaches them too, through SET ROLE.
                try await world.db.pool.withConnection {
                    try await $0.execute(
                        script: """
                            DROP ROLE \(quoteIdentifier(dropped)); ALTER ROLE \(quoteIdentifier(disabled)) NOLOGIN;
                            GRANT \(quoteIdentifier(shared)) TO \(quoteIdentifier(member));
                            """)
                }
                try await world.refused(
                    ["auditor", "grant", shared, "--tenant", "contoso"], "\(shared) has member roles, which could SET ROLE")
                let listed = try await world.array("auditor", "list", "--tenant", "fabrikam")
                #expect(listed.map { $0["login"] as? String } == [outside, dropped, disabled, shared])
                #expect(
                    listed.map { $0["status"] as? String }
                        == ["not in lockbox_auditor", "no such role", "not a login", "has members"])
                let table = try await world.ok("auditor", "list")
                #expect(table.stdout.contains("no such role"), "\(table)")
                // A grant whose role is gone can still be revoked.
                #expect(try await world.array("auditor", "revoke", dropped, "--tenant", "fabrikam").count == 3)
            }
        }
    }
}

@Suite("lockbox db")
struct DatabaseCommandTests {
    @Test("a malformed --database-url is refused without printing its password")
    func malformedURLHidesPassword() async throws {
        // libpq's complaint about these quotes the URL whole; db stop named the unreadable one as given.
        let urls = [
            "postgres://alex:s3cret-pw@[::1", "postgres://alex:s3cret-pw@[]/lockbox",
            "postgresql://alex:s3cret-pw@[::1]x/lockbox", "postgres://alex:s3cret-pw@[::1?password=s3cret-pw",
        ]
        for url in urls {
            for command in [["tenant", "list"], ["db", "status"], ["db", "migrate"], ["db", "stop"], ["demo"]] {
                let result = try await CLI.run(command + ["--database-url", url])
                #expect(result.status == 1, "\(result)")
                #expect(result.stderrLines.count == 1, "\(result)")
                #expect(!result.stderr.contains("s3cret"), "\(result)")
                #expect(!result.stdout.contains("s3cret"), "\(result)")
                #expect(result.stderr.contains("alex:***@"), "\(result)")
            }
        }
    }

    @Test("commands refuse an unmigrated or newer schema; db migrate and db status")
    func schema() async throws {
        try await CLIWorld.with { world in
            let empty = world.db.name + "_empty"
            let admin = try await PGConnection.connect(world.db.conninfo)
            try await admin.execute(script: "CREATE DATABASE \(quoteIdentifier(empty))")
            let url = conninfo(world.db, database: empty)
            do {
                let refused = try await CLI.run(["tenant", "list", "--database-url", url])
                #expect(refused.status == 1, "\(refused)")
                #expect(refused.stderrLines.count == 1)
                #expect(
                    refused.stderr.contains("not up to date") && refused.stderr.contains("lockbox db migrate"),
                    "\(refused)")

                let status = try await CLI.run(["db", "status", "--database-url", url, "--format", "json"])
                #expect(status.status == 0, "\(status)")
                let before = try status.jsonObject()
                #expect(before["location"] as? String == "url")
                #expect((before["schema"] as? String)?.contains("pending") == true, "\(before)")
                let pending = try #require(before["migrations"] as? [[String: Any]])
                #expect(!pending.isEmpty && pending.allSatisfy { $0["status"] as? String == "pending" })

                let migrate = try await CLI.run(["db", "migrate", "--database-url", url, "--format", "json"])
                #expect(migrate.status == 0, "\(migrate)")
                let migrated = try migrate.jsonObject()
                #expect((migrated["appliedNow"] as? [Int])?.first == 1, "\(migrated)")
                #expect((migrated["appliedNow"] as? [Int])?.count == pending.count)
                let again = try await CLI.run(["db", "migrate", "--database-url", url, "--format", "json"])
                #expect(try again.jsonObject()["appliedNow"] as? [Int] == [])

                let works = try await CLI.run(["tenant", "list", "--database-url", url])
                #expect(works.status == 0, "\(works)")
                let table = try await CLI.run(["db", "status", "--database-url", url])
                #expect(table.stdout.contains("up to date") && table.stdout.contains("applied"), "\(table)")

                let connection = try await PGConnection.connect(world.db.conninfo, database: empty)
                try await connection.execute(
                    script:
                        "INSERT INTO public.lockbox_schema_migrations (version, name, checksum) "
                        + "VALUES (9999, 'future', 'x')"
                )
                await connection.close()
                let newer = try await CLI.run(["tenant", "list", "--database-url", url])
                #expect(newer.status == 1 && newer.stderr.contains("newer than this binary"), "\(newer)")
                let migrateNewer = try await CLI.run(["db", "migrate", "--database-url", url])
                #expect(
                    migrateNewer.status == 1 && migrateNewer.stderr.contains("newer than this binary"),
                    "\(migrateNewer)")
                let stop = try await CLI.run(["db", "stop", "--database-url", url])
                #expect(stop.status == 1 && stop.stderr.contains("only stops the embedded cluster"), "\(stop)")
            } catch {
                try? await admin.execute(script: "DROP DATABASE IF EXISTS \(quoteIdentifier(empty)) WITH (FORCE)")
                await admin.close()
                throw error
            }
            try await admin.execute(script: "DROP DATABASE IF EXISTS \(quoteIdentifier(empty)) WITH (FORCE)")
            await admin.close()
        }
    }

    @Test("an empty PG* variable does not count as libpq's environment: the embedded cluster is still used")
    func emptyLibpqVariable() async throws {
        let home = NSTemporaryDirectory() + "lockbox-cli-home-\(UUID().uuidString.prefix(8))"
        var environment: [String: String?] = ["LOCKBOX_HOME": home, "LOCKBOX_DATABASE_URL": nil]
        for key in ProcessInfo.processInfo.environment.keys where key.hasPrefix("PG") { environment[key] = nil }
        environment["PGDATABASE"] = ""
        environment["PGHOST"] = ""
        defer { try? FileManager.default.removeItem(atPath: home) }
        let status = try await CLI.run(["db", "status", "--format", "json"], environment: environment)
        #expect(status.status == 0, "\(status)")
        #expect(try status.jsonObject()["location"] as? String == "embedded", "\(status)")
    }

    @Test("a LOCKBOX_HOME that is a file is refused in one clear line, and the file left as it was")
    func homeIsAFile() async throws {
        let home = NSTemporaryDirectory() + "lockbox-cli-file-\(UUID().uuidString.prefix(8))"
        try "mine\n".write(toFile: home, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: home) }
        var environment: [String: String?] = ["LOCKBOX_HOME": home, "LOCKBOX_DATABASE_URL": nil]
        for key in ProcessInfo.processInfo.environment.keys where key.hasPrefix("PG") { environment[key] = nil }
        let result = try await CLI.run(["tenant", "list"], environment: environment)
        #expect(result.status == 1, "\(result)")
        #expect(
            result.stderr
                == "error: LOCKBOX_HOME \(home) is not a directory: set LOCKBOX_HOME to a directory, or remove it\n",
            "\(result)")
        #expect(try String(contentsOfFile: home, encoding: .utf8) == "mine\n")
    }

    @Test("db stop waits for a command holding LOCKBOX_HOME's lock, as a command waits for db stop")
    func stopTakesTheHomeLock() async throws {
        let home = NSTemporaryDirectory() + "lockbox-cli-stop-\(UUID().uuidString.prefix(8))"
        var environment: [String: String?] = ["LOCKBOX_HOME": home, "LOCKBOX_DATABASE_URL": nil]
        for key in ProcessInfo.processInfo.environment.keys where key.hasPrefix("PG") { environment[key] = nil }
        let started = try await CLI.run(["tenant", "list"], environment: environment)
        let clusterDirectory = try? String(contentsOfFile: home + "/cluster-location", encoding: .utf8)
        defer {
            if let clusterDirectory { try? FileManager.default.removeItem(atPath: clusterDirectory) }
            try? FileManager.default.removeItem(atPath: home)
        }
        #expect(started.status == 0, "\(started)")
        let cluster = EmbeddedPostgres(directory: try #require(clusterDirectory), durable: true)
        // The lock a starting command holds (`open`): taken here, as such a command would.
        let descriptor = open(home + "/.lock", O_RDWR | O_CLOEXEC)
        #expect(descriptor >= 0 && flock(descriptor, LOCK_EX) == 0)
        var status = stat()
        #expect(fstat(descriptor, &status) == 0)
        let stopping = Task { try await CLI.run(["db", "stop"], environment: environment) }
        // Until db stop waits for the lock (the kernel lists it as blocked on that file), or has
        // stopped the cluster without waiting.
        var waiting = false
        for _ in 0..<3000 where !waiting {
            let locks = (try? String(contentsOfFile: "/proc/locks", encoding: .utf8)) ?? ""
            waiting = locks.split(separator: "\n").contains { $0.contains("->") && $0.contains(":\(status.st_ino) ") }
            if !waiting {
                if try await !cluster.isRunning() { break }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        #expect(waiting, "db stop did not wait for the home's lock")
        #expect(try await cluster.isRunning(), "stopped while a command held the home's lock")
        flock(descriptor, LOCK_UN)
        close(descriptor)
        let stop = try await stopping.value
        #expect(stop.status == 0, "\(stop)")
        #expect(try await !cluster.isRunning())
    }

    @Test("without a database named, an embedded cluster in LOCKBOX_HOME is created, used and stopped")
    func embedded() async throws {
        let home = NSTemporaryDirectory() + "lockbox-cli-home-\(UUID().uuidString.prefix(8))"
        var environment: [String: String?] = ["LOCKBOX_HOME": home, "LOCKBOX_DATABASE_URL": nil]
        for key in ProcessInfo.processInfo.environment.keys where key.hasPrefix("PG") { environment[key] = nil }
        func lockbox(_ arguments: String...) async throws -> CLIResult {
            try await CLI.run(arguments, environment: environment)
        }
        var clusterDirectory: String?
        do {
            let fresh = try await lockbox("db", "status", "--format", "json")
            #expect(fresh.status == 0, "\(fresh)")
            let freshStatus = try fresh.jsonObject()
            #expect(freshStatus["location"] as? String == "embedded")
            #expect(freshStatus["created"] as? Bool == false && freshStatus["running"] as? Bool == false)
            clusterDirectory = freshStatus["clusterDirectory"] as? String

            let created = try await lockbox("tenant", "create", "contoso", "--admin", "admin@contoso.com")
            #expect(created.status == 0, "\(created)")
            let listed = try await lockbox("tenant", "list", "--format", "json")
            #expect(
                try listed.jsonArray().map { $0["name"] as? String } == ["contoso"],
                "the cluster persists between commands")

            let status = try await lockbox("db", "status", "--format", "json")
            let running = try status.jsonObject()
            #expect(running["running"] as? Bool == true && running["created"] as? Bool == true, "\(status)")
            #expect(running["schema"] as? String == "up to date", "created clusters are migrated")
            #expect(running["clusterDirectory"] as? String == clusterDirectory)
            let recorded = try String(contentsOfFile: home + "/cluster-location", encoding: .utf8)
            #expect(recorded == clusterDirectory)
            // The server trusts every connection on its socket (as its superuser): only the
            // cluster's owner may enter the directory that holds the socket.
            let attributes = try FileManager.default.attributesOfItem(atPath: clusterDirectory ?? "?")
            let permissions = try #require((attributes[.posixPermissions] as? NSNumber)?.intValue)
            #expect(permissions & 0o077 == 0, "cluster directory mode \(String(permissions, radix: 8))")
            if geteuid() == 0 {
                #expect(clusterDirectory?.hasPrefix("/var/tmp/lockbox-") == true, "as root, outside the home")
            }
            let table = try await lockbox("db", "status")
            #expect(
                table.stdout.contains("clusterDirectory:") && table.stdout.contains(clusterDirectory ?? "?"), "\(table)"
            )

            let stop = try await lockbox("db", "stop", "--format", "json")
            #expect(stop.status == 0, "\(stop)")
            #expect(try stop.jsonObject()["wasRunning"] as? Bool == true)
            let stopped = try await lockbox("db", "status", "--format", "json")
            let stoppedStatus = try stopped.jsonObject()
            #expect(stoppedStatus["running"] as? Bool == false, "\(stopped)")
            // A stopped cluster cannot be asked which migrations it has: they are unknown, not pending
            // (it was migrated when it was created), in JSON as in the table.
            let unknown = try #require(stoppedStatus["migrations"] as? [[String: Any]])
            #expect(!unknown.isEmpty && unknown.allSatisfy { $0["status"] as? String == "unknown" }, "\(stopped)")
            let stoppedTable = try await lockbox("db", "status")
            #expect(!stoppedTable.stdout.contains("pending"), "\(stoppedTable)")

            // A CLI run under faketime that starts the server does not hand it its clock: the
            // server keeps the real time, so the CLI's 40 s offset is still found ambiguous,
            // and commands run afterwards on the real clock are not.
            let faked = try await CLI.run(["request", "list"], environment: environment, clock: "-40s")
            #expect(faked.status == 1 && faked.stderr.contains("the time is ambiguous"), "\(faked)")
            let honest = try await lockbox("request", "list")
            #expect(honest.status == 0, "\(honest)")
            _ = try await lockbox("db", "stop")
        } catch {
            _ = try? await lockbox("db", "stop")
            if let clusterDirectory { try? FileManager.default.removeItem(atPath: clusterDirectory) }
            try? FileManager.default.removeItem(atPath: home)
            throw error
        }
        _ = try? await lockbox("db", "stop")
        if let clusterDirectory { try? FileManager.default.removeItem(atPath: clusterDirectory) }
        try? FileManager.default.removeItem(atPath: home)
    }
}

@Suite("lockbox demo")
struct DemoTests {
    @Test("under faketime, a system clock the database server disagrees with is ambiguous: denied and recorded, decisions and the sweep refused")
    func systemClockChecked() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let pending = try await world.newRequest()
            let granted = try await world.newRequest(duration: "1h", resource: "alice@contoso.com")
            for id in [pending, granted] { try await world.ok("request", "review", id, "--manager", "morgan", "--approve") }
            try await world.ok("request", "decide", granted, "--decision", "Approve", "--as", "approver@contoso.com")
            let invoke = [
                "invoke", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange", "--operation",
                "Get-Mailbox", "--resource", "alice@contoso.com",
            ]
            // Within the tolerance (5 s), the clock is trusted.
            let close = try await world.lockbox(invoke, clock: "+2s")
            #expect(close.status == 0, "\(close)")
            // Set back 40 s, a clock could let an operator in after the window with a record dated
            // inside it; set forward, it could expire or end grants early. Both are refused.
            let before = try await world.snapshot()
            for (arguments, offset) in [
                (["request", "decide", pending, "--decision", "Approve", "--as", "approver@contoso.com"], "+13h"),
                (["request", "decide", pending, "--decision", "Approve", "--as", "approver@contoso.com"], "-40s"),
                (["sweep"], "+3h"),
                (["request", "revoke", granted, "--as", "approver@contoso.com"], "-1h"),
            ] {
                let refused = try await world.lockbox(arguments, clock: offset)
                #expect(refused.status == 1 && refused.stderrLines.count == 1, "\(offset): \(refused)")
                #expect(refused.stderr.contains("the time is ambiguous: this machine's clock reads"), "\(refused)")
                #expect(refused.stderr.contains("at most 5 s is allowed"), "\(refused)")
            }
            #expect(try await world.snapshot() == before, "a refusal changes nothing")
            // An operator's attempt is denied, and recorded with the reason.
            let late = try await world.lockbox(invoke, clock: "-40s")
            #expect(late.status == 1 && late.stderr.contains("the time is ambiguous"), "\(late)")
            let invoked = try await world.array("audit", "search", "--request", granted, "--activity", "Get-Mailbox")
            #expect(invoked.compactMap { $0["result"] as? String }.sorted() == ["Denied", "Succeeded"], "\(invoked)")
            let denied = invoked.first { $0["result"] as? String == "Denied" }
            let reason = (denied?["parameters"] as? [String: Any])?["reason"] as? String
            #expect(reason?.contains("the time is ambiguous") == true, "\(invoked)")
            #expect(try await world.object("request", "show", pending)["status"] as? String == "PendingCustomer")
            #expect(try await world.object("request", "show", granted)["status"] as? String == "Approved")
        }
    }

    @Test("the demo tells the whole story on a named database in under 30 seconds")
    func demo() async throws {
        try await CLIWorld.with { world in
            let started = ContinuousClock.now
            let result = try await world.lockbox("demo")
            let elapsed = ContinuousClock.now - started
            #expect(result.status == 0, "\(result)")
            #expect(elapsed < .seconds(30), "took \(elapsed)")
            let output = result.stdout
            for line in [
                "Customer Lockbox: Off → On",
                "PendingInternal",
                "PendingCustomer",
                "This message contains no links",
                "Approved",
                "allowed, audit record",
                "refused: access denied: no access request of operator alex for SharePoint",
                "refused: access denied: the access window of request",
                "Denied by approver@contoso.com",
                "expired at",
                "Request history",
                "Audit search",
                "Auditor report",
            ] {
                #expect(output.contains(line), "demo output shows “\(line)”")
            }
            #expect(!output.contains("http://") && !output.contains("https://"), "no links")
            // The story went through the real broker: its records are in the database.
            let requests = try await world.array("request", "list", "--tenant", "contoso")
            #expect(requests.count == 3)
            let again = try await world.lockbox("demo")
            #expect(
                again.status == 1 && again.stderr.contains("already"),
                "a named database is never reused silently: \(again)")
        }
    }

    @Test("the demo refuses up front a database whose tenant has its tenant's name in another letter case")
    func demoTenantInAnotherCase() async throws {
        try await CLIWorld.with { world in
            let created = try await world.lockbox("tenant", "create", "Contoso", "--admin", "admin@contoso.com")
            #expect(created.status == 0, "\(created)")
            let demo = try await world.lockbox("demo")
            #expect(demo.status == 1 && demo.stderr.contains("already has the demo's tenant"), "\(demo)")
            #expect(!demo.stdout.contains("A tenant with Customer Lockbox on"), "refused before the story starts: \(demo)")
            let tenants = try await world.array("tenant", "list")
            #expect(tenants.compactMap { $0["name"] as? String } == ["Contoso"], "nothing created: \(tenants)")
            #expect(try await world.array("operator", "list").isEmpty, "nothing created")
        }
    }
}

/// ISO 8601 as the CLI accepts it.
enum TimeFormat {
    static func string(_ date: Date) -> String {
        Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(date)
    }
}
