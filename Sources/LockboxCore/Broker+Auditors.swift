import Foundation
import LockboxPostgres

/// A database login allowed to read one tenant's rows in the auditor report views.
public struct AuditorGrant: Sendable, Codable, Hashable {
    public var login: String
    public var tenant: String
    /// Whether the grant takes effect, as of now (PostgreSQL roles can change after the grant):
    public var status: Status

    public enum Status: String, Sendable, Codable, Hashable {
        /// The login exists and is a member of `lockbox_auditor`: it reads the tenant's rows.
        case active
        /// The login exists but is not a member of `lockbox_auditor`, so it cannot query the
        /// report views until someone runs `GRANT lockbox_auditor TO login`.
        case notAnAuditor = "not in lockbox_auditor"
        /// The role can no longer log in (ALTER ROLE … NOLOGIN since the grant): a group role,
        /// whose grant reaches every member that sets it as its role. Revoke the grant.
        case notALogin = "not a login"
        /// Other roles became members of the login since the grant: each of them can set it as
        /// its role and read the tenant. Revoke the grant or the memberships.
        case hasMembers = "has members"
        /// No role has this name any more (dropped or renamed since the grant). A role created
        /// later under this name would read the tenant's rows: revoke the grant.
        case noSuchRole = "no such role"
    }
}

extension Broker {
    /// Lets database login `login` read tenant `tenant`'s rows through the report
    /// views (`lockbox.auditor_tenants`). Audited. Refuses a malformed login, an
    /// unknown tenant, a login no PostgreSQL role has (a typo would otherwise grant
    /// nothing now and everything to whoever later gets that name) and a grant that
    /// already exists. Returns the tenant's grants, this one among them, as the change
    /// committed them (read in its transaction, so a failure to read them is a failure
    /// of the change, which then is not made).
    @discardableResult
    public func grantAuditor(login: String, tenant name: String) async throws -> [AuditorGrant] {
        let login = try Validate.login(login)
        return try await transaction { connection in
            let tenant = try await lockTenant(name, on: connection)
            // Read once the tenant is held, as for role changes: a grant that waited behind
            // another change of the tenant is not dated before it.
            let now = try await tenantTime(tenant.tenantId, name: tenant.name, on: connection)
            let role = try await connection.query(
                """
                SELECT r.rolcanlogin, EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.roleid = r.oid)
                FROM pg_catalog.pg_roles r WHERE r.rolname = \(login)
                """)
            guard let (canLogin, hasMembers) = try role.first?.decode((Bool, Bool).self) else {
                throw LockboxError(
                    .notFound,
                    "no PostgreSQL role is named \(login): create the login first, e.g. "
                        + "CREATE ROLE \(quoteIdentifier(login)) LOGIN IN ROLE lockbox_auditor",
                    field: "login")
            }
            // A group role would reach every member that sets it as its role (the views also
            // match current_user): granting lockbox_auditor would open the tenant to every auditor.
            guard canLogin else {
                throw LockboxError(
                    .invalidInput,
                    "\(login) is a group role (NOLOGIN), not a login: a tenant is granted to one auditor's login",
                    field: "login")
            }
            guard !hasMembers else {
                throw LockboxError(
                    .invalidInput,
                    "\(login) has member roles, which could SET ROLE \(login) and read the tenant: a tenant is "
                        + "granted to one auditor's login, of which no other role is a member",
                    field: "login")
            }
            let inserted = try await connection.query(
                """
                INSERT INTO lockbox.auditor_tenants (login, tenant_id) VALUES (\(login), \(tenant.tenantId))
                ON CONFLICT DO NOTHING
                """)
            guard inserted.affectedRows == 1 else {
                throw LockboxError(.alreadyExists, "\(login) already audits tenant \(tenant.name)", field: "login")
            }
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: tenant.tenantId, recordType: "RoleManagement", user: "System",
                    actor: "System", activity: "Add-AuditorTenant", item: login,
                    parameters: ["Login": login, "Tenant": tenant.name]),
                on: connection)
            return try Self.auditorGrants(try await connection.query(Self.auditorGrantsQuery(tenant: tenant.name)))
        }
    }

    /// Withdraws a grant made by ``grantAuditor(login:tenant:)``. Audited. Returns the
    /// tenant's grants left, read in the change's transaction.
    @discardableResult
    public func revokeAuditor(login: String, tenant name: String) async throws -> [AuditorGrant] {
        let login = try Validate.login(login)
        return try await transaction { connection in
            let tenant = try await lockTenant(name, on: connection)
            let now = try await tenantTime(tenant.tenantId, name: tenant.name, on: connection)  // as above
            let deleted = try await connection.query(
                "DELETE FROM lockbox.auditor_tenants WHERE login = \(login) AND tenant_id = \(tenant.tenantId)")
            guard deleted.affectedRows == 1 else {
                throw LockboxError(.notFound, "\(login) does not audit tenant \(tenant.name)", field: "login")
            }
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: tenant.tenantId, recordType: "RoleManagement", user: "System",
                    actor: "System", activity: "Remove-AuditorTenant", item: login,
                    parameters: ["Login": login, "Tenant": tenant.name]),
                on: connection)
            return try Self.auditorGrants(try await connection.query(Self.auditorGrantsQuery(tenant: tenant.name)))
        }
    }

    /// The auditor grants, of one tenant or all, by login, each with its ``AuditorGrant/Status``.
    public func auditorGrants(tenant name: String? = nil) async throws -> [AuditorGrant] {
        if let name { _ = try await tenant(named: name) }
        return try Self.auditorGrants(try await read(Self.auditorGrantsQuery(tenant: name)))
    }

    private static func auditorGrantsQuery(tenant name: String?) -> PGQuery {
        var query: PGQuery = """
            SELECT a.login, t.name,
                CASE WHEN r.oid IS NULL THEN \(AuditorGrant.Status.noSuchRole.rawValue)
                     WHEN NOT r.rolcanlogin THEN \(AuditorGrant.Status.notALogin.rawValue)
                     WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.roleid = r.oid)
                         THEN \(AuditorGrant.Status.hasMembers.rawValue)
                     WHEN pg_catalog.pg_has_role(r.oid, 'lockbox_auditor', 'MEMBER')
                         THEN \(AuditorGrant.Status.active.rawValue)
                     ELSE \(AuditorGrant.Status.notAnAuditor.rawValue) END
            FROM lockbox.auditor_tenants a JOIN lockbox.tenants t ON t.tenant_id = a.tenant_id
            LEFT JOIN pg_catalog.pg_roles r ON r.rolname = a.login
            WHERE true
            """
        if let name { query += " AND t.name = \(name)" }
        return query + " ORDER BY a.login, t.name"
    }

    private static func auditorGrants(_ rows: PGRows) throws -> [AuditorGrant] {
        try rows.map { row in
            let (login, tenant, text) = try row.decode((String, String, String).self)
            guard let status = AuditorGrant.Status(rawValue: text) else {
                throw PostgresError(kind: .server, message: "unknown auditor grant status \(text)")
            }
            return AuditorGrant(login: login, tenant: tenant, status: status)
        }
    }
}
