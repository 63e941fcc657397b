import ExchangeOnline
import LockboxConnectors
import LockboxCore
import OneDrive
import SharePointOnline

/// The connectors the conformance suite runs over: the standard registry plus
/// the test's Teams connector, added with one line.
func connectorsUnderTest() -> ConnectorRegistry {
    var registry = standardConnectors()
    registry.register(TeamsConnector())
    return registry
}

/// The workloads of ``connectorsUnderTest()``, the suite's parameter.
let workloadsUnderTest = connectorsUnderTest().all.map(\.workload)

/// One operation with its arguments, the resource path the connector must
/// derive from them, and a piece of text the returned content must contain.
struct SampleCall: Sendable {
    var operation: String
    /// The arguments that name the resource's path segments.
    var path: [String: String]
    /// Other arguments (a search query, a version).
    var extra: [String: String] = [:]
    var resource: String
    var expect: String

    var arguments: [String: String] { path.merging(extra) { $1 } }
}

/// What each connector offers the conformance suite, on its seed content.
protocol ConformanceSampling: Connector {
    /// A request scope in tenant `contoso` (one mailbox, site, drive or team).
    var sampleScope: String { get }
    /// A read inside ``sampleScope``.
    var sampleRead: SampleCall { get }
    /// The same kind of read on a resource of `contoso` outside ``sampleScope``.
    var sampleOutside: SampleCall { get }
    /// A read of the same kind of content in tenant `fabrikam`.
    var sampleOtherTenant: SampleCall { get }
    /// Every catalogue operation inside ``sampleScope``, in an order in which all succeed on the seed content.
    var sampleOperations: [SampleCall] { get }
}

extension ExchangeOnlineConnector: ConformanceSampling {
    var sampleScope: String { "alice@contoso.com" }

    var sampleRead: SampleCall {
        SampleCall(
            operation: "Get-MailboxMessage",
            path: ["mailbox": "alice@contoso.com", "folder": "Inbox", "messageId": "msg-1001"],
            resource: "alice@contoso.com/Inbox/msg-1001", expect: "Invoice 4471 from Northwind Traders")
    }

    var sampleOutside: SampleCall {
        SampleCall(
            operation: "Get-MailboxMessage",
            path: ["mailbox": "bob@contoso.com", "folder": "Inbox", "messageId": "msg-2002"],
            resource: "bob@contoso.com/Inbox/msg-2002", expect: "Renewal quote for 2027")
    }

    var sampleOtherTenant: SampleCall {
        SampleCall(
            operation: "Get-MailboxMessage",
            path: ["mailbox": "dana@fabrikam.com", "folder": "Inbox", "messageId": "msg-5001"],
            resource: "dana@fabrikam.com/Inbox/msg-5001", expect: "Clinical trial site visit")
    }

    var sampleOperations: [SampleCall] {
        [
            SampleCall(
                operation: "Get-Mailbox", path: ["mailbox": "Alice@Contoso.com"], resource: "alice@contoso.com",
                expect: #""displayName":"Alice Martin""#),
            SampleCall(
                operation: "Get-MailboxFolder", path: ["mailbox": "alice@contoso.com", "folder": "Sent Items"],
                resource: "alice@contoso.com/Sent Items", expect: #""id":"msg-1003""#),
            sampleRead,
            SampleCall(
                operation: "Search-Mailbox", path: ["mailbox": "alice@contoso.com"], extra: ["query": "VENDOR"],
                resource: "alice@contoso.com", expect: #""id":"msg-1004""#),
            SampleCall(
                operation: "Get-MessageAttachment",
                path: [
                    "mailbox": "alice@contoso.com", "folder": "Inbox", "messageId": "msg-1001",
                    "attachment": "invoice-4471.csv",
                ],
                resource: "alice@contoso.com/Inbox/msg-1001/invoice-4471.csv", expect: "Standing desks"),
            SampleCall(
                operation: "Restore-DeletedItem", path: ["mailbox": "alice@contoso.com"],
                extra: ["messageId": "msg-1004"], resource: "alice@contoso.com", expect: #""restoredTo":"Inbox""#),
        ]
    }
}

extension SharePointOnlineConnector: ConformanceSampling {
    var sampleScope: String { "finance" }

    var sampleRead: SampleCall {
        SampleCall(
            operation: "Get-SiteDocument",
            path: ["site": "finance", "library": "Documents", "document": "budget-2027.xlsx"],
            resource: "finance/Documents/budget-2027.xlsx", expect: "Sales,420000")
    }

    var sampleOutside: SampleCall {
        SampleCall(
            operation: "Get-SiteDocument",
            path: ["site": "sales", "library": "Documents", "document": "pipeline-january.xlsx"],
            resource: "sales/Documents/pipeline-january.xlsx", expect: "Litware,Proposal")
    }

    var sampleOtherTenant: SampleCall {
        SampleCall(
            operation: "Get-SiteDocument",
            path: ["site": "research", "library": "Trial Protocols", "document": "protocol-fb-204.docx"],
            resource: "research/Trial Protocols/protocol-fb-204.docx", expect: "Protocol FB-204")
    }

    var sampleOperations: [SampleCall] {
        [
            SampleCall(
                operation: "Get-Site", path: ["site": "finance"], resource: "finance",
                expect: #""name":"Vendor Contracts""#),
            SampleCall(
                operation: "Get-SiteDocumentLibrary", path: ["site": "finance", "library": "Documents"],
                resource: "finance/Documents", expect: #""name":"q4-forecast.xlsx""#),
            sampleRead,
            SampleCall(
                operation: "Get-SitePermission", path: ["site": "Finance"], resource: "finance",
                expect: #""documentsWithUniquePermissions":["Documents/q4-forecast.xlsx"]"#),
            SampleCall(
                operation: "Repair-SiteDocumentPermission",
                path: ["site": "finance", "library": "Documents", "document": "q4-forecast.xlsx"],
                resource: "finance/Documents/q4-forecast.xlsx", expect: #""changed":true"#),
        ]
    }
}

extension OneDriveConnector: ConformanceSampling {
    var sampleScope: String { "alice@contoso.com" }

    var sampleRead: SampleCall {
        SampleCall(
            operation: "Get-DriveFile",
            path: ["owner": "alice@contoso.com", "folder": "Documents", "file": "expenses-december.xlsx"],
            resource: "alice@contoso.com/Documents/expenses-december.xlsx", expect: "Train to Lyon")
    }

    var sampleOutside: SampleCall {
        SampleCall(
            operation: "Get-DriveFile",
            path: ["owner": "bob@contoso.com", "folder": "Documents", "file": "litware-proposal.pptx"],
            resource: "bob@contoso.com/Documents/litware-proposal.pptx", expect: "Discount 6%")
    }

    var sampleOtherTenant: SampleCall {
        SampleCall(
            operation: "Get-DriveFile",
            path: ["owner": "dana@fabrikam.com", "folder": "Documents", "file": "enrolment-tracker.xlsx"],
            resource: "dana@fabrikam.com/Documents/enrolment-tracker.xlsx", expect: "Lyon,31")
    }

    var sampleOperations: [SampleCall] {
        [
            SampleCall(
                operation: "Get-Drive", path: ["owner": "alice@contoso.com"], resource: "alice@contoso.com",
                expect: #""displayName":"OneDrive - Alice Martin""#),
            SampleCall(
                operation: "Get-DriveFolder", path: ["owner": "alice@contoso.com", "folder": "Desktop"],
                resource: "alice@contoso.com/Desktop", expect: #""name":"notes.txt""#),
            sampleRead,
            SampleCall(
                operation: "Get-DriveFileVersion",
                path: ["owner": "alice@contoso.com", "folder": "Documents", "file": "board-report.docx"],
                extra: ["version": "2.0"], resource: "alice@contoso.com/Documents/board-report.docx",
                expect: "Appendix: regional figures"),
            SampleCall(
                operation: "Restore-FileVersion",
                path: ["owner": "alice@contoso.com", "folder": "Documents", "file": "board-report.docx"],
                extra: ["version": "2.0"], resource: "alice@contoso.com/Documents/board-report.docx",
                expect: #""currentVersion":"4.0""#),
        ]
    }
}

extension TeamsConnector: ConformanceSampling {
    var sampleScope: String { "support" }

    var sampleRead: SampleCall {
        SampleCall(
            operation: Self.getChannelMessage, path: ["team": "support", "channel": "general"],
            resource: "support/general", expect: "Printer on floor 3 is jammed again")
    }

    var sampleOutside: SampleCall {
        SampleCall(
            operation: Self.getChannelMessage, path: ["team": "sales", "channel": "general"],
            resource: "sales/general", expect: "Litware signed the renewal")
    }

    var sampleOtherTenant: SampleCall {
        SampleCall(
            operation: Self.getChannelMessage, path: ["team": "research", "channel": "lab"],
            resource: "research/lab", expect: "Centrifuge B")
    }

    var sampleOperations: [SampleCall] { [sampleRead] }
}
