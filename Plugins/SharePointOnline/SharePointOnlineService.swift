import Foundation
import LockboxCore
import Synchronization

/// A mock SharePoint Online: the sites, document libraries, documents and
/// permissions of several tenants, in memory.
///
/// Every content method takes a ``ContentAccess``, which only the broker
/// creates after checking the operator's grant and writing the audit record,
/// and refuses with `accessDenied` unless that access was granted for exactly
/// this operation and this resource. A method reads only the tenant the access
/// names. Content that does not exist is refused with `notFound`.
public final class SharePointOnlineService: Sendable {
    private let tenants: Mutex<[String: SharePointTenant]>

    /// Loads the deterministic seed content built into the connector
    /// (`Fixtures/sharepoint.json`, embedded at build time: tenants `contoso` and `fabrikam`).
    /// Stops the program if it is malformed, which is a build bug.
    public convenience init() {
        do {
            try self.init(data: try embeddedFixture("sharepoint.json", in: embeddedFixtures), source: "sharepoint.json")
        } catch {
            preconditionFailure("the built-in SharePoint Online fixture Fixtures/sharepoint.json cannot be loaded: \(error)")
        }
    }

    /// Loads content from a fixture file shaped like `Fixtures/sharepoint.json`;
    /// throws if the file cannot be read or decoded.
    public convenience init(contentsOf url: URL) throws {
        try self.init(data: Data(contentsOf: url), source: url.lastPathComponent)
    }

    /// Loads content shaped like `Fixtures/sharepoint.json`; `source` names it in errors.
    init(data: Data, source: String) throws {
        let seed = try JSONDecoder().decode(SharePointSeed.self, from: data)
        tenants = Mutex(seed.tenants)
    }

    // MARK: Reads

    /// `Get-Site`: a site's properties and its document libraries with item counts.
    /// Refuses an access for any other operation or resource than `site`.
    public func site(_ access: ContentAccess, site name: String) throws -> ContentValue {
        try access.require(workload: .sharePoint, operation: SharePointOperation.getSite.rawValue, resource: name)
        return try site(name, in: access).content
    }

    /// `Get-SiteDocumentLibrary`: the documents of one library (no content).
    /// Refuses an access for any other operation or resource than `site/library`.
    public func library(_ access: ContentAccess, site name: String, library: String) throws -> ContentValue {
        try access.require(
            workload: .sharePoint, operation: SharePointOperation.getSiteDocumentLibrary.rawValue,
            resource: "\(name)/\(library)")
        return try self.library(library, of: site(name, in: access)).content(site: name)
    }

    /// `Get-SiteDocument`: one document with its content and effective permissions.
    /// Refuses an access for any other operation or resource than `site/library/document`.
    public func document(_ access: ContentAccess, site name: String, library: String, document: String) throws
        -> ContentValue
    {
        try access.require(
            workload: .sharePoint, operation: SharePointOperation.getSiteDocument.rawValue,
            resource: "\(name)/\(library)/\(document)")
        let site = try site(name, in: access)
        return try self.document(document, in: self.library(library, of: site), of: site)
            .content(site: site, library: library)
    }

    /// `Get-SitePermission`: the site's permissions and the documents that no
    /// longer inherit them. Refuses an access for any other operation or resource than `site`.
    public func permissions(_ access: ContentAccess, site name: String) throws -> ContentValue {
        try access.require(
            workload: .sharePoint, operation: SharePointOperation.getSitePermission.rawValue, resource: name)
        return try site(name, in: access).permissionContent
    }

    // MARK: Changes

    /// `Repair-SiteDocumentPermission`: removes a document's unique permissions
    /// so that it inherits the site's again (a no-op, reported as unchanged, when
    /// it already does). Refuses an access for any other operation or resource
    /// than `site/library/document`. Safe to call concurrently.
    public func repairDocumentPermission(
        _ access: ContentAccess, site name: String, library: String, document: String
    ) throws -> ContentValue {
        try access.require(
            workload: .sharePoint, operation: SharePointOperation.repairSiteDocumentPermission.rawValue,
            resource: "\(name)/\(library)/\(document)")
        return try tenants.withLock { tenants in
            guard var tenant = tenants[access.tenant] else { throw Self.noTenant(access.tenant) }
            guard let s = tenant.sites.firstIndex(where: { $0.name.lowercased().sameSegment(as: name) }) else {
                throw Self.noSite(name, access.tenant)
            }
            guard let l = tenant.sites[s].libraries.firstIndex(where: { $0.name.sameSegment(as: library) }) else {
                throw Self.noLibrary(library, name)
            }
            guard
                let d = tenant.sites[s].libraries[l].documents.firstIndex(where: { $0.name.sameSegment(as: document) })
            else {
                throw Self.noDocument(document, library, name)
            }
            let removed = tenant.sites[s].libraries[l].documents[d].permissions ?? []
            let changed = tenant.sites[s].libraries[l].documents[d].permissions != nil
            tenant.sites[s].libraries[l].documents[d].permissions = nil
            tenants[access.tenant] = tenant
            return .object([
                "site": .string(name),
                "library": .string(library),
                "document": .string(document),
                "changed": .bool(changed),
                "inheritsPermissions": .bool(true),
                "removedPermissions": .array(removed.map(\.content)),
                "permissions": .array(tenant.sites[s].permissions.map(\.content)),
                "requestId": .string(access.requestID.uuidString.lowercased()),
                "auditRecord": .int(Int(access.auditID)),
            ])
        }
    }

    // MARK: Lookups

    private func site(_ name: String, in access: ContentAccess) throws -> Site {
        guard let tenant = tenants.withLock({ $0[access.tenant] }) else { throw Self.noTenant(access.tenant) }
        guard let site = tenant.sites.first(where: { $0.name.lowercased().sameSegment(as: name) }) else {
            throw Self.noSite(name, access.tenant)
        }
        return site
    }

    private func library(_ name: String, of site: Site) throws -> DocumentLibrary {
        guard let library = site.libraries.first(where: { $0.name.sameSegment(as: name) }) else {
            throw Self.noLibrary(name, site.name)
        }
        return library
    }

    private func document(_ name: String, in library: DocumentLibrary, of site: Site) throws -> SiteDocument {
        guard let document = library.documents.first(where: { $0.name.sameSegment(as: name) }) else {
            throw Self.noDocument(name, library.name, site.name)
        }
        return document
    }

    private static func noTenant(_ tenant: String) -> LockboxError {
        LockboxError(.notFound, "tenant \(tenant) has no SharePoint Online sites", field: "tenant")
    }

    private static func noSite(_ site: String, _ tenant: String) -> LockboxError {
        LockboxError(.notFound, "tenant \(tenant) has no site named \(site)", field: "site")
    }

    private static func noLibrary(_ library: String, _ site: String) -> LockboxError {
        LockboxError(.notFound, "site \(site) has no document library named \(library)", field: "library")
    }

    private static func noDocument(_ document: String, _ library: String, _ site: String) -> LockboxError {
        LockboxError(
            .notFound, "library \(library) of site \(site) has no document named \(document)", field: "document")
    }
}
