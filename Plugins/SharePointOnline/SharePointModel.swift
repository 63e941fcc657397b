import LockboxCore

/// The content of the mock SharePoint Online service, as the fixture file holds it.
struct SharePointSeed: Codable, Sendable {
    var tenants: [String: SharePointTenant]
}

/// One tenant's sites.
struct SharePointTenant: Codable, Sendable {
    var sites: [Site]
}

struct Site: Codable, Sendable {
    var name: String
    var title: String
    var description: String
    var owner: String
    var permissions: [SitePermission]
    var libraries: [DocumentLibrary]
}

struct SitePermission: Codable, Sendable, Equatable {
    var principal: String
    var role: String
}

struct DocumentLibrary: Codable, Sendable {
    var name: String
    var documents: [SiteDocument]
}

struct SiteDocument: Codable, Sendable {
    var name: String
    var author: String
    var modified: String
    var modifiedBy: String
    var content: String
    /// Unique permissions; nil when the document inherits the site's.
    var permissions: [SitePermission]?
}

// MARK: What operations return

extension SitePermission {
    var content: ContentValue { .object(["principal": .string(principal), "role": .string(role)]) }
}

extension Site {
    var content: ContentValue {
        .object([
            "name": .string(name),
            "title": .string(title),
            "description": .string(description),
            "owner": .string(owner),
            "libraries": .array(
                libraries.map { .object(["name": .string($0.name), "itemCount": .int($0.documents.count)]) }),
        ])
    }

    var permissionContent: ContentValue {
        let unique = libraries.flatMap { library in
            library.documents.filter { $0.permissions != nil }.map { ContentValue.string("\(library.name)/\($0.name)") }
        }
        return .object([
            "site": .string(name),
            "permissions": .array(permissions.map(\.content)),
            "documentsWithUniquePermissions": .array(unique),
        ])
    }
}

extension DocumentLibrary {
    func content(site: String) -> ContentValue {
        .object([
            "site": .string(site),
            "library": .string(name),
            "itemCount": .int(documents.count),
            "documents": .array(documents.map(\.summary)),
        ])
    }
}

extension SiteDocument {
    var summary: ContentValue {
        .object([
            "name": .string(name),
            "author": .string(author),
            "modified": .string(modified),
            "modifiedBy": .string(modifiedBy),
            "size": .int(content.utf8.count),
            "inheritsPermissions": .bool(permissions == nil),
        ])
    }

    func content(site: Site, library: String) -> ContentValue {
        .object([
            "site": .string(site.name),
            "library": .string(library),
            "name": .string(name),
            "author": .string(author),
            "modified": .string(modified),
            "modifiedBy": .string(modifiedBy),
            "size": .int(content.utf8.count),
            "content": .string(content),
            "inheritsPermissions": .bool(permissions == nil),
            "permissions": .array((permissions ?? site.permissions).map(\.content)),
        ])
    }
}
