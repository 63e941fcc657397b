import Foundation
import LockboxPostgres

/// A database login allowed to read one tenant's rows in the auditor report views.
public struct AuditorGrant: Sendable, Codable, Hashable {
    public var login: String
    public var tenant: String
}

extension Broker {
    /// Lets database login `login` read tenant `tenant`'s rows through the report
    /// views (`lockbox.auditor_tenants`). Audited. Refuses a malformed login, an
    /// unknown tenant and a grant that already exists.
    public func grantAuditor(login: String, tenant name: String) async throws -> AuditorGrant {
        let login = try Validate.login(login)
        let now = try now()
        return try await transaction { connection in
            let tenant = try await lockTenant(name, on: connection)
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
            return AuditorGrant(login: login, tenant: tenant.name)
        }
    }

    /// Withdraws a grant made by ``grantAuditor(login:tenant:)``. Audited.
    public func revokeAuditor(login: String, tenant name: String) async throws {
        let login = try Validate.login(login)
        let now = try now()
        try await transaction { connection in
            let tenant = try await lockTenant(name, on: connection)
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
        }
    }

    /// The auditor grants, of one tenant or all, by login.
    public func auditorGrants(tenant name: String? = nil) async throws -> [AuditorGrant] {
        var query: PGQuery = """
            SELECT a.login, t.name FROM lockbox.auditor_tenants a JOIN lockbox.tenants t ON t.tenant_id = a.tenant_id
            """
        if let name {
            _ = try await tenant(named: name)
            query += " WHERE t.name = \(name)"
        }
        return try await read(query + " ORDER BY a.login, t.name").map { row in
            let (login, tenant) = try row.decode((String, String).self)
            return AuditorGrant(login: login, tenant: tenant)
        }
    }
}
