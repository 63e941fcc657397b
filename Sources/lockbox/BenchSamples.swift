import LockboxCore

/// The reads the benchmark's simulated operators run, per workload, on the
/// connectors' seed content of tenants `contoso` and `fabrikam`.
enum BenchSamples {
    struct Read: Sendable {
        var operation: String
        var arguments: @Sendable (String) -> [String: String]
    }

    static let reads: [Workload: [Read]] = [
        .exchange: [
            Read(operation: "Get-MailboxMessage") { tenant in
                tenant == "contoso"
                    ? ["mailbox": "alice@contoso.com", "folder": "Inbox", "messageId": "msg-1001"]
                    : ["mailbox": "dana@fabrikam.com", "folder": "Inbox", "messageId": "msg-5001"]
            },
            Read(operation: "Get-MailboxFolder") { tenant in
                ["mailbox": tenant == "contoso" ? "bob@contoso.com" : "dana@fabrikam.com", "folder": "Inbox"]
            },
            Read(operation: "Get-Mailbox") { tenant in
                ["mailbox": tenant == "contoso" ? "alice@contoso.com" : "eli@fabrikam.com"]
            },
        ],
        .sharePoint: [
            Read(operation: "Get-SiteDocument") { tenant in
                tenant == "contoso"
                    ? ["site": "finance", "library": "Documents", "document": "budget-2027.xlsx"]
                    : ["site": "research", "library": "Trial Protocols", "document": "protocol-fb-204.docx"]
            },
            Read(operation: "Get-Site") { tenant in ["site": tenant == "contoso" ? "sales" : "research"] },
        ],
        .oneDrive: [
            Read(operation: "Get-DriveFile") { tenant in
                tenant == "contoso"
                    ? ["owner": "alice@contoso.com", "folder": "Documents", "file": "board-report.docx"]
                    : ["owner": "dana@fabrikam.com", "folder": "Documents", "file": "enrolment-tracker.xlsx"]
            },
            Read(operation: "Get-DriveFolder") { tenant in
                ["owner": tenant == "contoso" ? "bob@contoso.com" : "dana@fabrikam.com", "folder": "Documents"]
            },
        ],
    ]
}
