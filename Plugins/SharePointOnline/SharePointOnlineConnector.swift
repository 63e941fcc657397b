import LockboxCore

/// The pre-approved operations of the SharePoint Online connector, by catalogue name.
public enum SharePointOperation: String, CaseIterable, Sendable {
    /// A site's properties and libraries (read).
    case getSite = "Get-Site"
    /// The documents of one library, without content (read).
    case getSiteDocumentLibrary = "Get-SiteDocumentLibrary"
    /// One document with its content and permissions (read).
    case getSiteDocument = "Get-SiteDocument"
    /// A site's permissions and the documents that break inheritance (read).
    case getSitePermission = "Get-SitePermission"
    /// Makes a document inherit the site's permissions again (change).
    case repairSiteDocumentPermission = "Repair-SiteDocumentPermission"

    /// The catalogue entry: kind, what it addresses, and its required arguments.
    public var descriptor: OperationDescriptor {
        switch self {
        case .getSite:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a site: site",
                summary: "Shows a site's properties and its document libraries with item counts.",
                requiredArguments: ["site"])
        case .getSiteDocumentLibrary:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a document library of a site: site/library",
                summary: "Lists the documents of one library (names, authors, dates, sizes; no content).",
                requiredArguments: ["site", "library"])
        case .getSiteDocument:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a document in a library: site/library/document",
                summary: "Shows one document with its content and effective permissions.",
                requiredArguments: ["site", "library", "document"])
        case .getSitePermission:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a site: site",
                summary: "Shows the site's permissions and the documents that no longer inherit them.",
                requiredArguments: ["site"])
        case .repairSiteDocumentPermission:
            OperationDescriptor(
                name: rawValue, kind: .change, addresses: "a document in a library: site/library/document",
                summary: "Removes a document's unique permissions so that it inherits the site's again.",
                requiredArguments: ["site", "library", "document"])
        }
    }

    /// How many path segments the operation's resource has.
    var depth: ClosedRange<Int> {
        switch self {
        case .getSite, .getSitePermission: 1...1
        case .getSiteDocumentLibrary: 2...2
        case .getSiteDocument, .repairSiteDocumentPermission: 3...3
        }
    }
}

/// The SharePoint Online connector (workload `SharePoint`): sites, document
/// libraries, documents and permissions of a mock service, reachable only
/// through the broker.
///
/// Resources are `site[/library[/document]]`, e.g. `finance/Documents/budget-2027.xlsx`;
/// a request scoped to `finance` covers everything in that site. Every
/// operation also accepts the path as one `resource` argument instead of the named ones.
public struct SharePointOnlineConnector: Connector {
    /// The mock service holding the content; its methods require a ``ContentAccess``.
    public let service: SharePointOnlineService

    private static let paths = ResourcePath(
        segmentArguments: ["site", "library", "document"], firstSegment: "a site name", firstIsAddress: false)

    /// Request scopes are checked against the same paths.
    public var scopePath: ResourcePath? { Self.paths }

    /// A connector over the deterministic seed content (`Fixtures/sharepoint.json`).
    public init() { self.init(service: SharePointOnlineService()) }

    /// A connector over the given service.
    public init(service: SharePointOnlineService) { self.service = service }

    /// `SharePoint`.
    public var workload: Workload { .sharePoint }

    /// Four reads and one repair (`Repair-SiteDocumentPermission`); nothing else runs.
    public var catalogue: [OperationDescriptor] { Self.operations }
    private static let operations = SharePointOperation.allCases.map(\.descriptor)

    /// The path of what the operation addresses, site name lower-cased.
    /// Refuses an operation outside the catalogue, a missing argument (naming
    /// it) and a malformed path segment.
    public func resource(for operation: OperationDescriptor, tenant: String, arguments: [String: String]) throws
        -> String
    {
        guard let known = SharePointOperation(rawValue: operation.name) else {
            throw LockboxError(
                .invalidInput, "\(operation.name) is not a SharePoint Online operation", field: "operation")
        }
        return try Self.paths.segments(for: known.rawValue, depth: known.depth, arguments: arguments)
            .joined(separator: "/")
    }

    /// Runs the operation the broker authorized, on the tenant and resource of
    /// `access` only. Refuses an access for another workload or an operation
    /// outside the catalogue.
    public func perform(_ access: ContentAccess, arguments: [String: String]) async throws -> ContentValue {
        guard access.workload == workload, let operation = SharePointOperation(rawValue: access.operation) else {
            throw LockboxError(
                .accessDenied,
                "the SharePoint Online connector does not perform \(access.operation) on \(access.workload)")
        }
        let path = try Self.paths.split(access.resource, for: operation.rawValue, depth: operation.depth)
        switch operation {
        case .getSite:
            return try service.site(access, site: path[0])
        case .getSiteDocumentLibrary:
            return try service.library(access, site: path[0], library: path[1])
        case .getSiteDocument:
            return try service.document(access, site: path[0], library: path[1], document: path[2])
        case .getSitePermission:
            return try service.permissions(access, site: path[0])
        case .repairSiteDocumentPermission:
            return try service.repairDocumentPermission(access, site: path[0], library: path[1], document: path[2])
        }
    }
}
