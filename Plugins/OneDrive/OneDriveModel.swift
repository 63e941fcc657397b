import LockboxCore

/// The content of the mock OneDrive service, as the fixture file holds it.
struct OneDriveSeed: Codable, Sendable {
    var tenants: [String: OneDriveTenant]
}

/// One tenant's drives, one per user.
struct OneDriveTenant: Codable, Sendable {
    var drives: [Drive]
}

struct Drive: Codable, Sendable {
    var owner: String
    var displayName: String
    var quotaBytes: Int
    var folders: [DriveFolder]
}

struct DriveFolder: Codable, Sendable {
    var name: String
    var files: [DriveFile]
}

struct DriveFile: Codable, Sendable {
    var name: String
    /// Oldest first; the last one is the current version.
    var versions: [FileVersion]
}

struct FileVersion: Codable, Sendable {
    var id: String
    /// When the owner saved it; nil for a version made by a restore (its audit record has the time).
    var modified: String?
    var modifiedBy: String
    var content: String
    /// For a version made by `Restore-FileVersion`: the version it copies.
    var restoredFrom: String?
    var requestId: String?
    var auditRecord: Int?
}

// MARK: What operations return

extension Drive {
    var content: ContentValue {
        .object([
            "owner": .string(owner),
            "displayName": .string(displayName),
            "quotaBytes": .int(quotaBytes),
            "usedBytes": .int(folders.flatMap(\.files).reduce(0) { $0 + $1.current.size }),
            "folders": .array(folders.map { .object(["name": .string($0.name), "itemCount": .int($0.files.count)]) }),
        ])
    }
}

extension DriveFolder {
    func content(owner: String) -> ContentValue {
        .object([
            "owner": .string(owner),
            "folder": .string(name),
            "itemCount": .int(files.count),
            "files": .array(
                files.map { file in
                    .object([
                        "name": .string(file.name),
                        "currentVersion": .string(file.current.id),
                        "versionCount": .int(file.versions.count),
                        "size": .int(file.current.size),
                        "modifiedBy": .string(file.current.modifiedBy),
                    ])
                }),
        ])
    }
}

extension DriveFile {
    var current: FileVersion { versions[versions.count - 1] }

    func content(owner: String, folder: String) -> ContentValue {
        .object([
            "owner": .string(owner),
            "folder": .string(folder),
            "name": .string(name),
            "currentVersion": .string(current.id),
            "size": .int(current.size),
            "modified": current.modified.map(ContentValue.string) ?? .null,
            "modifiedBy": .string(current.modifiedBy),
            "content": .string(current.content),
            "versions": .array(versions.map { .string($0.id) }),
        ])
    }

    func versionList(owner: String, folder: String) -> ContentValue {
        .object([
            "owner": .string(owner),
            "folder": .string(folder),
            "name": .string(name),
            "currentVersion": .string(current.id),
            "versions": .array(versions.map(\.summary)),
        ])
    }
}

extension FileVersion {
    var size: Int { content.utf8.count }

    var summary: ContentValue {
        var fields: [String: ContentValue] = [
            "id": .string(id),
            "modified": modified.map(ContentValue.string) ?? .null,
            "modifiedBy": .string(modifiedBy),
            "size": .int(size),
        ]
        if let restoredFrom { fields["restoredFrom"] = .string(restoredFrom) }
        if let requestId { fields["requestId"] = .string(requestId) }
        if let auditRecord { fields["auditRecord"] = .int(auditRecord) }
        return .object(fields)
    }

    func content(file: String) -> ContentValue {
        guard case .object(var fields) = summary else { return summary }
        fields["file"] = .string(file)
        fields["content"] = .string(content)
        return .object(fields)
    }
}
