import Foundation
import LockboxPostgres
import LockboxTestSupport
import Testing

@Suite("lockbox output formats")
struct OutputFormatTests {
    @Test("times print the millisecond the database holds, truncated: .001 is not .000, .9996 is .999")
    func millisecondsAsStored() async throws {
        try await CLIWorld.with { world in
            let stored = [
                "2026-03-01 09:30:00.001+00", "2026-03-01 09:30:00.007+00", "2026-03-01 09:30:00.123+00",
                "2026-03-01 09:30:00.9996+00", "2026-03-01 09:30:59.999999+00", "2026-03-01 09:30:00.000999+00",
            ]
            let printed = [
                "2026-03-01T09:30:00.001Z", "2026-03-01T09:30:00.007Z", "2026-03-01T09:30:00.123Z",
                "2026-03-01T09:30:00.999Z", "2026-03-01T09:30:59.999Z", "2026-03-01T09:30:00.000Z",
            ]
            for index in stored.indices { try await world.ok("operator", "add", "engineer\(index)") }
            for (index, time) in stored.enumerated() {
                try await world.db.pool.query(
                    """
                    UPDATE lockbox.operators SET created_at = \(time)::timestamptz WHERE alias = \("engineer\(index)")
                    """)
            }
            let json = try await world.array("operator", "list")
            for index in stored.indices {
                let row = json.first { $0["alias"] as? String == "engineer\(index)" }
                #expect(row?["createdAt"] as? String == printed[index], "\(stored[index])")
            }
            let csv = try await world.ok("operator", "list", "--format", "csv")
            let table = try await world.ok("operator", "list")
            for index in stored.indices {
                #expect(csv.stdout.contains("engineer\(index),false,\(printed[index])\n"), "\(csv)")
                #expect(table.stdout.contains(printed[index]), "\(table)")
            }
        }
    }

    @Test("CSV cells an operator or customer wrote that a spreadsheet would run as a formula start with a quote")
    func csvFormulas() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let ticket = "=HYPERLINK(\"http://evil.example\",\"SR-1\")"
            let reason = "+cmd|' /C calc'!A0"
            let id = try await world.object(
                "request", "create", "--operator", "alex", "--tenant", "contoso", "--workload", "Exchange",
                "--ticket", ticket, "--reason", reason)["requestId"] as? String
            let request = try #require(id)
            for arguments in [["request", "list"], ["request", "show", request]] {
                let csv = try await world.lockbox(arguments + ["--format", "csv"])
                #expect(csv.status == 0 && csv.stderr.isEmpty, "\(csv)")
                let row = try #require(csv.stdout.split(separator: "\n").dropFirst().first.map(String.init))
                #expect(row.contains(#","'=HYPERLINK(""http://evil.example"",""SR-1"")","#), "\(csv)")
                #expect(row.contains(",'+cmd|' /C calc'!A0,"), "\(csv)")
                #expect(!row.contains(",=") && !row.contains(",+") && !row.contains(",\"="), "\(csv)")
            }
            // JSON and tables print the text as written; a CSV cell that is JSON starts with {.
            let json = try await world.object("request", "show", request)
            #expect(json["ticket"] as? String == ticket && json["reason"] as? String == reason)
            let table = try await world.ok("request", "show", request)
            #expect(table.stdout.contains("ticket:           \(ticket)\n"), "\(table)")
            let audit = try await world.ok("audit", "search", "--request", request, "--format", "csv")
            #expect(audit.stdout.contains(#","{""DurationMinutes"":""240"",""Reason"":""+cmd"#), "\(audit)")
            // Numbers stay numbers, and text starting otherwise is unchanged.
            let tenants = try await world.ok("tenant", "list", "--format", "csv")
            #expect(tenants.stdout.contains(",contoso,true,contosoBOXServiceAccount@"), "\(tenants)")
        }
    }

    @Test("table columns line up under wide text (CJK, emoji), and no cell is cut in the middle of a character")
    func wideTextInTables() async throws {
        try await CLIWorld.with { world in
            try await world.seed()
            let tickets = ["😀😀😀😀😀😀😀", "日本語チケット", "SR-1"]
            for ticket in tickets {
                try await world.ok(
                    "request", "create", "--operator", "alex", "--tenant", "fabrikam", "--workload", "SharePoint",
                    "--ticket", ticket, "--reason", "Sync fails")
            }
            let table = try await world.ok("request", "list", "--tenant", "fabrikam")
            let lines = table.stdout.split(separator: "\n").map(String.init)
            #expect(lines.count == 4, "\(table)")
            for ticket in tickets { #expect(table.stdout.contains("  \(ticket)  "), "\(table)") }
            #expect(!table.stdout.contains("\u{FFFD}"), "\(table)")
            // Every line reaches the createdAt column at the same terminal column (the text before
            // it, as wide as it shows: CJK and emoji take two columns).
            func columns(_ text: Substring) -> Int {
                text.unicodeScalars.reduce(0) { $0 + ($1.value >= 0x1100 ? 2 : 1) }
            }
            let header = try #require(lines.first?.range(of: "createdAt"))
            let starts = lines.dropFirst().compactMap { line in
                line.range(of: #"20[0-9]{2}-[0-9]{2}-[0-9]{2}T"#, options: .regularExpression).map {
                    columns(line[..<$0.lowerBound])
                }
            }
            #expect(starts == Array(repeating: columns(lines[0][..<header.lowerBound]), count: 3), "\(table)")
        }
    }

    @Test("a CSV field holding a CR LF line break is quoted, as one with a lone CR or LF is")
    func csvQuotesCRLF() async throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("lockbox-home-\(UUID())\r\nx").path
        var environment: [String: String?] = ["LOCKBOX_HOME": home, "LOCKBOX_DATABASE_URL": nil]
        for key in ProcessInfo.processInfo.environment.keys where key.hasPrefix("PG") { environment[key] = nil }
        let result = try await CLI.run(["db", "status", "--format", "csv"], environment: environment)
        #expect(result.status == 0, "\(result)")
        #expect(result.stdout.contains(",\"\(home)\","), "\(result)")
        #expect(!FileManager.default.fileExists(atPath: home), "db status creates nothing")
    }
}
