import LockboxCore

/// The pre-approved operations of the OneDrive connector, by catalogue name.
public enum OneDriveOperation: String, CaseIterable, Sendable {
    /// A drive's quota, usage and folders (read).
    case getDrive = "Get-Drive"
    /// The files of one folder, without content (read).
    case getDriveFolder = "Get-DriveFolder"
    /// The current version of a file, with its content (read).
    case getDriveFile = "Get-DriveFile"
    /// A file's versions, or one version's content (read).
    case getDriveFileVersion = "Get-DriveFileVersion"
    /// Makes an earlier version current again (change).
    case restoreFileVersion = "Restore-FileVersion"

    /// The catalogue entry: kind, what it addresses, and its required arguments.
    public var descriptor: OperationDescriptor {
        switch self {
        case .getDrive:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a user's drive: owner",
                summary: "Shows a drive's quota, space used and folders with item counts.",
                requiredArguments: ["owner"])
        case .getDriveFolder:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a folder of a drive: owner/folder",
                summary: "Lists the files of one folder with their current version (no content).",
                requiredArguments: ["owner", "folder"])
        case .getDriveFile:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a file in a folder: owner/folder/file",
                summary: "Shows the current version of a file, with its content.",
                requiredArguments: ["owner", "folder", "file"])
        case .getDriveFileVersion:
            OperationDescriptor(
                name: rawValue, kind: .read, addresses: "a file in a folder: owner/folder/file",
                summary: "Lists a file's versions, or shows one version's content when the argument version is given.",
                requiredArguments: ["owner", "folder", "file"], optionalArguments: ["version"])
        case .restoreFileVersion:
            OperationDescriptor(
                name: rawValue, kind: .change, addresses: "a file in a folder: owner/folder/file",
                summary: "Makes an earlier version current again by adding a new version with its content.",
                requiredArguments: ["owner", "folder", "file", "version"])
        }
    }

    /// How many path segments the operation's resource has.
    var depth: ClosedRange<Int> {
        switch self {
        case .getDrive: 1...1
        case .getDriveFolder: 2...2
        case .getDriveFile, .getDriveFileVersion, .restoreFileVersion: 3...3
        }
    }
}

/// The OneDrive connector (workload `OneDrive`): each user's drive, its
/// folders and its files with their versions, in a mock service reachable only
/// through the broker.
///
/// Resources are `owner[/folder[/file]]`, e.g. `alice@contoso.com/Documents/board-report.docx`;
/// a request scoped to `alice@contoso.com` covers everything in that drive. A
/// file's version is an argument (`version`), not part of the path. Every
/// operation also accepts the path as one `resource` argument instead of the named ones.
public struct OneDriveConnector: Connector {
    /// The mock service holding the content; its methods require a ``ContentAccess``.
    public let service: OneDriveService

    private static let paths = ResourcePath(
        segmentArguments: ["owner", "folder", "file"], firstSegment: "the owner's address", firstIsAddress: true)

    /// Request scopes are checked against the same paths.
    public var scopePath: ResourcePath? { Self.paths }

    /// A connector over the deterministic seed content (`Fixtures/onedrive.json`).
    public init() { self.init(service: OneDriveService()) }

    /// A connector over the given service.
    public init(service: OneDriveService) { self.service = service }

    /// `OneDrive`.
    public var workload: Workload { .oneDrive }

    /// Four reads and one change (`Restore-FileVersion`); nothing else runs.
    public var catalogue: [OperationDescriptor] { Self.operations }
    private static let operations = OneDriveOperation.allCases.map(\.descriptor)

    /// The path of what the operation addresses, owner address lower-cased.
    /// Refuses an operation outside the catalogue, a missing argument (naming
    /// it, `version` included for `Restore-FileVersion`) and a malformed owner
    /// address or path segment.
    public func resource(for operation: OperationDescriptor, tenant: String, arguments: [String: String]) throws
        -> String
    {
        guard let known = OneDriveOperation(rawValue: operation.name) else {
            throw LockboxError(.invalidInput, "\(operation.name) is not a OneDrive operation", field: "operation")
        }
        let path = try Self.paths.segments(for: known.rawValue, depth: known.depth, arguments: arguments)
        if known == .restoreFileVersion, (arguments["version"] ?? "").allSatisfy(\.isWhitespace) {
            throw LockboxError(
                .invalidInput, "Restore-FileVersion needs the argument version (the version to make current)",
                field: "version")
        }
        return path.joined(separator: "/")
    }

    /// Runs the operation the broker authorized, on the tenant and resource of
    /// `access` only (other arguments: `version`). Refuses an access for another
    /// workload or an operation outside the catalogue.
    public func perform(_ access: ContentAccess, arguments: [String: String]) async throws -> ContentValue {
        guard access.workload == workload, let operation = OneDriveOperation(rawValue: access.operation) else {
            throw LockboxError(
                .accessDenied, "the OneDrive connector does not perform \(access.operation) on \(access.workload)")
        }
        let path = try Self.paths.split(access.resource, for: operation.rawValue, depth: operation.depth)
        switch operation {
        case .getDrive:
            return try service.drive(access, owner: path[0])
        case .getDriveFolder:
            return try service.folder(access, owner: path[0], folder: path[1])
        case .getDriveFile:
            return try service.file(access, owner: path[0], folder: path[1], file: path[2])
        case .getDriveFileVersion:
            return try service.fileVersion(
                access, owner: path[0], folder: path[1], file: path[2], version: arguments["version"])
        case .restoreFileVersion:
            guard let version = arguments["version"] else {
                throw LockboxError(.invalidInput, "Restore-FileVersion needs the argument version", field: "version")
            }
            return try service.restoreVersion(access, owner: path[0], folder: path[1], file: path[2], version: version)
        }
    }
}
