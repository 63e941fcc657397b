import Foundation
import LockboxCore
import Synchronization

/// A mock OneDrive: one drive per user, with folders and files that keep their
/// versions, for several tenants, in memory.
///
/// Every content method takes a ``ContentAccess``, which only the broker
/// creates after checking the operator's grant and writing the audit record,
/// and refuses with `accessDenied` unless that access was granted for exactly
/// this operation and this resource. A method reads only the tenant the access
/// names. Content that does not exist is refused with `notFound`.
public final class OneDriveService: Sendable {
    private let tenants: Mutex<[String: OneDriveTenant]>

    /// Loads the deterministic seed content built into the connector
    /// (`Fixtures/onedrive.json`, embedded at build time: tenants `contoso` and `fabrikam`).
    /// Stops the program if it is malformed, which is a build bug.
    public convenience init() {
        do {
            try self.init(data: try embeddedFixture("onedrive.json", in: embeddedFixtures), source: "onedrive.json")
        } catch {
            preconditionFailure("the built-in OneDrive fixture Fixtures/onedrive.json cannot be loaded: \(error)")
        }
    }

    /// Loads content from a fixture file shaped like `Fixtures/onedrive.json`;
    /// throws if the file cannot be read or decoded.
    public convenience init(contentsOf url: URL) throws {
        try self.init(data: Data(contentsOf: url), source: url.lastPathComponent)
    }

    /// Loads content shaped like `Fixtures/onedrive.json`; `source` names it in errors.
    init(data: Data, source: String) throws {
        let seed = try JSONDecoder().decode(OneDriveSeed.self, from: data)
        for (tenant, content) in seed.tenants {
            for drive in content.drives {
                for folder in drive.folders {
                    for file in folder.files where file.versions.isEmpty {
                        let path = "\(tenant)/\(drive.owner)/\(folder.name)/\(file.name)"
                        throw LockboxError(
                            .invalidInput, "\(source): \(path) has no version", field: "versions")
                    }
                }
            }
        }
        tenants = Mutex(seed.tenants)
    }

    // MARK: Reads

    /// `Get-Drive`: a user's drive: quota, space used and folders with item counts.
    /// Refuses an access for any other operation or resource than `owner`.
    public func drive(_ access: ContentAccess, owner: String) throws -> ContentValue {
        try access.require(workload: .oneDrive, operation: OneDriveOperation.getDrive.rawValue, resource: owner)
        return try drive(owner, in: access).content
    }

    /// `Get-DriveFolder`: the files of one folder with their current version (no content).
    /// Refuses an access for any other operation or resource than `owner/folder`.
    public func folder(_ access: ContentAccess, owner: String, folder: String) throws -> ContentValue {
        try access.require(
            workload: .oneDrive, operation: OneDriveOperation.getDriveFolder.rawValue, resource: "\(owner)/\(folder)")
        return try self.folder(folder, of: drive(owner, in: access)).content(owner: owner)
    }

    /// `Get-DriveFile`: the current version of a file, with its content.
    /// Refuses an access for any other operation or resource than `owner/folder/file`.
    public func file(_ access: ContentAccess, owner: String, folder: String, file: String) throws -> ContentValue {
        try access.require(
            workload: .oneDrive, operation: OneDriveOperation.getDriveFile.rawValue,
            resource: "\(owner)/\(folder)/\(file)")
        let drive = try drive(owner, in: access)
        return try self.file(file, in: self.folder(folder, of: drive), of: drive).content(owner: owner, folder: folder)
    }

    /// `Get-DriveFileVersion`: one version of a file with its content, or,
    /// when `version` is nil, the list of its versions. Refuses an access for any
    /// other operation or resource than `owner/folder/file`, and an unknown version.
    public func fileVersion(
        _ access: ContentAccess, owner: String, folder: String, file: String, version: String?
    ) throws -> ContentValue {
        try access.require(
            workload: .oneDrive, operation: OneDriveOperation.getDriveFileVersion.rawValue,
            resource: "\(owner)/\(folder)/\(file)")
        let drive = try drive(owner, in: access)
        let found = try self.file(file, in: self.folder(folder, of: drive), of: drive)
        guard let version else { return found.versionList(owner: owner, folder: folder) }
        guard let match = found.versions.first(where: { $0.id.sameSegment(as: version) }) else {
            throw Self.noVersion(version, of: "\(owner)/\(folder)/\(file)", found)
        }
        return match.content(file: file)
    }

    // MARK: Changes

    /// `Restore-FileVersion`: makes an earlier version current again, as
    /// OneDrive does: a new version is added with that version's content, and
    /// the history is kept. Refuses an access for any other operation or
    /// resource than `owner/folder/file`, an unknown version (`notFound`) and
    /// the version that is already current (`invalidInput`). Safe to call concurrently.
    public func restoreVersion(
        _ access: ContentAccess, owner: String, folder: String, file: String, version: String
    ) throws -> ContentValue {
        try access.require(
            workload: .oneDrive, operation: OneDriveOperation.restoreFileVersion.rawValue,
            resource: "\(owner)/\(folder)/\(file)")
        return try tenants.withLock { tenants in
            guard var tenant = tenants[access.tenant] else { throw Self.noTenant(access.tenant) }
            guard let d = tenant.drives.firstIndex(where: { $0.owner.lowercased().sameSegment(as: owner) }) else {
                throw Self.noDrive(owner, access.tenant)
            }
            guard let f = tenant.drives[d].folders.firstIndex(where: { $0.name.sameSegment(as: folder) }) else {
                throw Self.noFolder(folder, owner)
            }
            guard let i = tenant.drives[d].folders[f].files.firstIndex(where: { $0.name.sameSegment(as: file) }) else {
                throw Self.noFile(file, folder, owner)
            }
            var target = tenant.drives[d].folders[f].files[i]
            guard let source = target.versions.first(where: { $0.id.sameSegment(as: version) }) else {
                throw Self.noVersion(version, of: "\(owner)/\(folder)/\(file)", target)
            }
            guard !source.id.sameSegment(as: target.current.id) else {
                throw LockboxError(
                    .invalidInput, "version \(version) of \(owner)/\(folder)/\(file) is already the current version",
                    field: "version")
            }
            let major = Int(target.current.id.prefix { $0 != "." }) ?? target.versions.count
            let restored = FileVersion(
                id: "\(major + 1).0", modified: nil, modifiedBy: "Microsoft Operator", content: source.content,
                restoredFrom: source.id, requestId: access.requestID.uuidString.lowercased(),
                auditRecord: Int(access.auditID))
            target.versions.append(restored)
            tenant.drives[d].folders[f].files[i] = target
            tenants[access.tenant] = tenant
            return .object([
                "owner": .string(owner),
                "folder": .string(folder),
                "name": .string(file),
                "restoredFrom": .string(source.id),
                "currentVersion": .string(restored.id),
                "size": .int(restored.size),
                "requestId": .string(access.requestID.uuidString.lowercased()),
                "auditRecord": .int(Int(access.auditID)),
            ])
        }
    }

    // MARK: Lookups

    private func drive(_ owner: String, in access: ContentAccess) throws -> Drive {
        guard let tenant = tenants.withLock({ $0[access.tenant] }) else { throw Self.noTenant(access.tenant) }
        guard let drive = tenant.drives.first(where: { $0.owner.lowercased().sameSegment(as: owner) }) else {
            throw Self.noDrive(owner, access.tenant)
        }
        return drive
    }

    private func folder(_ name: String, of drive: Drive) throws -> DriveFolder {
        guard let folder = drive.folders.first(where: { $0.name.sameSegment(as: name) }) else {
            throw Self.noFolder(name, drive.owner)
        }
        return folder
    }

    private func file(_ name: String, in folder: DriveFolder, of drive: Drive) throws -> DriveFile {
        guard let file = folder.files.first(where: { $0.name.sameSegment(as: name) }) else {
            throw Self.noFile(name, folder.name, drive.owner)
        }
        return file
    }

    private static func noTenant(_ tenant: String) -> LockboxError {
        LockboxError(.notFound, "tenant \(tenant) has no OneDrive drives", field: "tenant")
    }

    private static func noDrive(_ owner: String, _ tenant: String) -> LockboxError {
        LockboxError(.notFound, "tenant \(tenant) has no drive owned by \(owner)", field: "owner")
    }

    private static func noFolder(_ folder: String, _ owner: String) -> LockboxError {
        LockboxError(.notFound, "the drive of \(owner) has no folder named \(folder)", field: "folder")
    }

    private static func noFile(_ file: String, _ folder: String, _ owner: String) -> LockboxError {
        LockboxError(.notFound, "folder \(folder) of the drive of \(owner) has no file named \(file)", field: "file")
    }

    private static func noVersion(_ version: String, of path: String, _ file: DriveFile) -> LockboxError {
        LockboxError(
            .notFound,
            "\(path) has no version \(version) (versions: \(file.versions.map(\.id).joined(separator: ", ")))",
            field: "version")
    }
}
