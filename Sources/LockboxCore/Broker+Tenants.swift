import Foundation
import LockboxPostgres

extension Broker {
    // MARK: Tenants

    /// Creates a tenant (Customer Lockbox off, as in the source) with its first global administrator.
    public func createTenant(name: String, admin: String) async throws -> Tenant {
        let name = try Validate.tenantName(name, field: "name")
        let admin = try Validate.upn(admin, field: "admin")
        let now = try now()
        let tenant = Tenant(
            tenantId: UUID(), name: name, customerLockbox: false,
            serviceAccount: "\(name.lowercased())BOXServiceAccount@\(name.lowercased()).prod.outlook.com",
            createdAt: now)
        return try await transaction { connection in
            let inserted = try await connection.query(
                """
                INSERT INTO lockbox.tenants (tenant_id, name, customer_lockbox, service_account, created_at)
                VALUES (\(tenant.tenantId), \(name), false, \(tenant.serviceAccount), \(now))
                ON CONFLICT DO NOTHING
                """)
            guard inserted.affectedRows == 1 else {
                // Names are unique ignoring case (migration 0008): name the tenant that holds it.
                let existing = try await connection.query(
                    "SELECT name FROM lockbox.tenants WHERE lower(name) = lower(\(name))")
                let holder = try existing.first?.decode(String.self, at: 0) ?? name
                throw LockboxError(
                    .alreadyExists,
                    holder == name
                        ? "tenant \(name) already exists"
                        : "tenant \(name) would clash with the existing tenant \(holder): tenant names are unique "
                            + "ignoring case (both would have the service account \(tenant.serviceAccount))",
                    field: "name")
            }
            try await connection.query(
                """
                INSERT INTO lockbox.tenant_roles (tenant_id, upn, role, granted_at, granted_by)
                VALUES (\(tenant.tenantId), \(admin), 'GlobalAdministrator', \(now), 'System')
                """)
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: tenant.tenantId, recordType: "TenantSettings", user: "System",
                    actor: "System", activity: "New-Tenant", item: name,
                    parameters: ["Tenant": name, "GlobalAdministrator": admin, "CustomerLockbox": "Off"]),
                on: connection)
            return tenant
        }
    }

    /// All tenants, by name.
    public func tenants() async throws -> [Tenant] {
        let rows = try await read(
            "SELECT tenant_id, name, customer_lockbox, service_account, created_at FROM lockbox.tenants ORDER BY name")
        return try rows.map(Self.tenant)
    }

    /// One tenant; `notFound` if there is none of that name, `invalidInput` (naming the rule)
    /// if `name` could not be a tenant's.
    public func tenant(named name: String) async throws -> Tenant {
        let name = try Validate.tenantName(name)
        let rows = try await read(
            """
            SELECT tenant_id, name, customer_lockbox, service_account, created_at FROM lockbox.tenants
            WHERE lower(name) = lower(\(name))
            """)
        return try Self.exactTenant(named: name, in: rows)
    }

    /// The tenant `rows` (found ignoring case) hold, if its name is exactly `name`;
    /// otherwise `notFound`, naming the tenant meant when only the case differs.
    static func exactTenant(named name: String, in rows: PGRows) throws -> Tenant {
        guard let row = rows.first else { throw LockboxError(.notFound, "no tenant named \(name)", field: "tenant") }
        let tenant = try Self.tenant(row)
        guard tenant.name == name else {
            throw LockboxError(
                .notFound, "no tenant named \(name) (tenant names are exact: did you mean \(tenant.name)?)",
                field: "tenant")
        }
        return tenant
    }

    static func tenant(_ row: PGRow) throws -> Tenant {
        let (id, name, lockbox, account, created) = try row.decode((UUID, String, Bool, String, Date).self)
        return Tenant(tenantId: id, name: name, customerLockbox: lockbox, serviceAccount: account, createdAt: created)
    }

    /// Turns Customer Lockbox on or off. Only a global administrator of the tenant may;
    /// setting the value it already has is refused (nothing changes, nothing is recorded).
    @discardableResult
    public func setCustomerLockbox(tenant name: String, enabled: Bool, by upn: String, clientIP: String? = nil)
        async throws -> Tenant
    {
        let upn = try Validate.upn(upn, field: "as")
        let clientIP = try Validate.clientIP(clientIP)
        return try await transaction { connection in
            var tenant = try await lockTenant(name, on: connection)
            // Read once the tenant is ours (see ``lockTenant(_:on:)``): the change is dated when it
            // takes effect, after the reviews and decisions it waited for.
            let now = try await tenantTime(tenant.tenantId, name: tenant.name, on: connection)
            try await requireGlobalAdmin(upn, of: tenant, on: connection, action: "turn Customer Lockbox on or off")
            let old = tenant.customerLockbox
            guard old != enabled else {
                // Nothing to change, so nothing to record: said, as adding a role a user already holds is.
                throw LockboxError(
                    .alreadyExists,
                    "Customer Lockbox is already \(old ? "On" : "Off") for tenant \(tenant.name): nothing changed",
                    field: "customer-lockbox")
            }
            try await connection.query(
                "UPDATE lockbox.tenants SET customer_lockbox = \(enabled) WHERE tenant_id = \(tenant.tenantId)")
            tenant.customerLockbox = enabled
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: tenant.tenantId, recordType: "TenantSettings", user: upn, actor: upn,
                    clientIP: clientIP, activity: "Set-CustomerLockboxSetting", item: "CustomerLockbox",
                    parameters: ["OldValue": old ? "On" : "Off", "NewValue": enabled ? "On" : "Off"]),
                on: connection)
            return tenant
        }
    }

    // MARK: Roles

    /// Assigns a role. Only a global administrator of the tenant may; the provider never can.
    public func addRole(tenant name: String, upn: String, role: CustomerRole, by admin: String, clientIP: String? = nil)
        async throws -> RoleAssignment
    {
        let upn = try Validate.upn(upn, field: "upn")
        let admin = try Validate.upn(admin, field: "as")
        let clientIP = try Validate.clientIP(clientIP)
        return try await transaction { connection in
            let tenant = try await lockTenant(name, on: connection)
            let now = try await tenantTime(tenant.tenantId, name: tenant.name, on: connection)
            try await requireGlobalAdmin(admin, of: tenant, on: connection, action: "assign roles")
            let inserted = try await connection.query(
                """
                INSERT INTO lockbox.tenant_roles (tenant_id, upn, role, granted_at, granted_by)
                VALUES (\(tenant.tenantId), \(upn), \(role.rawValue), \(now), \(admin))
                ON CONFLICT DO NOTHING
                """)
            guard inserted.affectedRows == 1 else {
                throw LockboxError(.alreadyExists, "\(upn) already has the role \(role.rawValue) in \(tenant.name)")
            }
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: tenant.tenantId, recordType: "RoleManagement", user: admin, actor: admin,
                    clientIP: clientIP, activity: "Add-RoleGroupMember", item: role.rawValue,
                    parameters: ["Member": upn, "Role": role.rawValue, "Change": "none → \(role.rawValue)"]),
                on: connection)
            return RoleAssignment(tenant: tenant.name, upn: upn, role: role, grantedAt: now, grantedBy: admin)
        }
    }

    /// Removes a role. Only a global administrator may; the last global administrator stays.
    /// Returns the tenant's roles left, read in the change's transaction (so a failure to
    /// read them is a failure of the change, which then is not made).
    @discardableResult
    public func removeRole(tenant name: String, upn: String, role: CustomerRole, by admin: String, clientIP: String? = nil)
        async throws -> [RoleAssignment]
    {
        let upn = try Validate.upn(upn, field: "upn")
        let admin = try Validate.upn(admin, field: "as")
        let clientIP = try Validate.clientIP(clientIP)
        return try await transaction { connection in
            let tenant = try await lockTenant(name, on: connection)
            // Before the clock: one being delivered is waited for, and sent before the removal.
            try await lockQueuedNotifications(of: upn, in: tenant.tenantId, on: connection)
            let now = try await tenantTime(tenant.tenantId, name: tenant.name, on: connection)
            try await requireGlobalAdmin(admin, of: tenant, on: connection, action: "remove roles")
            if role == .globalAdministrator {
                let admins = try await connection.query(
                    """
                    SELECT count(*) FROM lockbox.tenant_roles
                    WHERE tenant_id = \(tenant.tenantId) AND role = 'GlobalAdministrator' AND upn <> \(upn)
                    """)
                if try admins.first!.decode(Int.self, at: 0) == 0 {
                    throw LockboxError(
                        .lastGlobalAdministrator,
                        "\(upn) is the last global administrator of \(tenant.name) and cannot be removed", field: "upn")
                }
            }
            // The deletion's trigger withdraws the notifications still queued for someone left with
            // no role in the tenant: at this removal's time, as its audit record says (migration 0024).
            try await connection.query(
                """
                SELECT set_config('lockbox.change_time',
                    to_char(\(now)::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), true)
                """)
            let deleted = try await connection.query(
                """
                DELETE FROM lockbox.tenant_roles
                WHERE tenant_id = \(tenant.tenantId) AND upn = \(upn) AND role = \(role.rawValue)
                """)
            guard deleted.affectedRows == 1 else {
                throw LockboxError(.notFound, "\(upn) does not have the role \(role.rawValue) in \(tenant.name)", field: "upn")
            }
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: tenant.tenantId, recordType: "RoleManagement", user: admin, actor: admin,
                    clientIP: clientIP, activity: "Remove-RoleGroupMember", item: role.rawValue,
                    parameters: ["Member": upn, "Role": role.rawValue, "Change": "\(role.rawValue) → none"]),
                on: connection)
            return try Self.roles(of: tenant, in: try await connection.query(Self.rolesQuery(of: tenant)))
        }
    }

    /// The role assignments of a tenant.
    public func roles(tenant name: String) async throws -> [RoleAssignment] {
        let tenant = try await tenant(named: name)
        return try Self.roles(of: tenant, in: try await read(Self.rolesQuery(of: tenant)))
    }

    private static func rolesQuery(of tenant: Tenant) -> PGQuery {
        """
        SELECT upn, role, granted_at, granted_by FROM lockbox.tenant_roles
        WHERE tenant_id = \(tenant.tenantId) ORDER BY role, upn
        """
    }

    private static func roles(of tenant: Tenant, in rows: PGRows) throws -> [RoleAssignment] {
        try rows.map { row in
            let (upn, role, at, by) = try row.decode((String, String, Date, String).self)
            return RoleAssignment(
                tenant: tenant.name, upn: upn, role: CustomerRole(rawValue: role) ?? .customerLockboxApprover,
                grantedAt: at, grantedBy: by)
        }
    }

    /// Locks the tenant row for the transaction (settings and roles change one at a time).
    /// Callers read the clock only once they hold it: a change that waited for a review or a
    /// customer decision holding the tenant `FOR SHARE` is dated after it, as it took effect.
    ///
    /// `FOR NO KEY UPDATE`, not `FOR UPDATE`: the tenant's key never changes here, and
    /// every audit insert takes `FOR KEY SHARE` on its tenant (migration 0004), which
    /// `FOR UPDATE` would block. With it, an administrator's open transaction held up
    /// every audited operation of the tenant, and a role removal (whose trigger then
    /// withdraws that person's queued notifications) deadlocked with a decision that
    /// had just withdrawn one of them and was writing its audit record.
    func lockTenant(_ name: String, on connection: PGConnection) async throws -> Tenant {
        // A name no tenant can have is refused by the rule it breaks, not as one that is not there
        // (`contoso\n` was `no tenant named contoso`, the newline shown as a space and dropped).
        let name = try Validate.tenantName(name)
        let rows = try await connection.query(
            """
            SELECT tenant_id, name, customer_lockbox, service_account, created_at FROM lockbox.tenants
            WHERE lower(name) = lower(\(name)) FOR NO KEY UPDATE
            """)
        return try Self.exactTenant(named: name, in: rows)
    }

    /// The time of a change, internal review or customer decision under the tenant `tenantId`
    /// (`name`), which the caller holds (``lockTenant(_:on:)``, ``lockTenantThenRequest(_:on:)``,
    /// or a review's `FOR SHARE`): the clock,
    /// refused as ambiguous when it reads before the tenant's latest recorded change or
    /// decision (any record but operator actions: migration 0022). Those hold the tenant
    /// too, so they happened before this one; dated before them by a clock that is behind,
    /// the audit log would show, say, an approver's decision after the removal of their role.
    ///
    /// The history is bounded before the clock is read: records written without holding the
    /// tenant against this change (request creations, cancels, sweeps, other decisions and
    /// reviews) may commit at any moment, and one whose clock was read after this one's,
    /// committing between the two reads, refused a change whose clock was right. Only records
    /// numbered up to the last one committed before the clock is read count (a record's clock
    /// is read before it is numbered, so any of them committing later still read its clock
    /// first).
    ///
    /// The latest of them within ``clockSpread`` after `now` decides, not the latest of all: a
    /// record far ahead (its clock wrong) is passed over, but not the changes recorded after it
    /// by right clocks, which a clock behind them by a few seconds would still be dated before.
    func tenantTime(_ tenantId: UUID, name: String, on connection: PGConnection) async throws -> Date {
        let bound = try await connection.query("SELECT max(id) FROM lockbox.audit_records")
        let lastId = try bound.first?.decode(Int64?.self, at: 0) ?? 0
        let now = try now()
        let rows = try await connection.query(
            """
            SELECT occurred_at FROM lockbox.audit_records
            WHERE tenant_id = \(tenantId) AND record_type <> 'OperatorAction' AND id <= \(lastId)
              AND occurred_at > \(now) AND occurred_at <= \(now.addingTimeInterval(Self.clockSpread))
            ORDER BY occurred_at DESC LIMIT 1
            """)
        let latest = try rows.first?.decode(Date.self, at: 0)
        if let latest, Self.isAmbiguouslyBefore(now, latest) {
            throw LockboxError(
                .clockUnavailable,
                "the time is ambiguous: the clock reads \(Broker.timestamp(now)), before tenant \(name)'s last "
                    + "recorded change or decision at \(Broker.timestamp(latest)); nothing was done")
        }
        return now
    }

    /// Whether `date` is before `recorded`, a time read back from the database, at the
    /// database's precision (whole microseconds): a time recorded at `date` is not after it.
    static func isBefore(_ date: Date, _ recorded: Date) -> Bool {
        PGTimestamp.microseconds(date) < PGTimestamp.microseconds(recorded)
    }

    /// How far apart two brokers' clocks can be while each agrees with the database server's
    /// (``ServerCheckedClock/tolerance`` either way).
    public static let clockSpread: TimeInterval = 2 * ServerCheckedClock.tolerance

    /// Whether a change at `date` that follows one recorded at `recorded` must be refused as
    /// ambiguous: `date` is before it by no more than ``clockSpread``. A record further ahead
    /// was stamped by a clock that was wrong (no broker within the tolerance could have written
    /// it, say one ahead before it was corrected, or a demo's): refusing everything after it
    /// would block the tenant or request, a customer's revoke included, until real time caught
    /// up with it, and would make its order no truer.
    static func isAmbiguouslyBefore(_ date: Date, _ recorded: Date) -> Bool {
        isBefore(date, recorded) && recorded.timeIntervalSince(date) <= clockSpread
    }

    func customerRoles(of upn: String, in tenantId: UUID, on connection: PGConnection) async throws -> Set<CustomerRole> {
        let rows = try await connection.query(
            "SELECT role FROM lockbox.tenant_roles WHERE tenant_id = \(tenantId) AND upn = \(upn)")
        return Set(try rows.compactMap { CustomerRole(rawValue: try $0.decode(String.self, at: 0)) })
    }

    func requireGlobalAdmin(_ upn: String, of tenant: Tenant, on connection: PGConnection, action: String) async throws {
        let roles = try await customerRoles(of: upn, in: tenant.tenantId, on: connection)
        guard roles.contains(.globalAdministrator) else {
            throw LockboxError(
                .notAuthorized, "only a global administrator of \(tenant.name) may \(action); \(upn) is not one",
                field: "as")
        }
    }

    // MARK: Operators

    /// Registers a provider support engineer.
    public func addOperator(alias: String, isManager: Bool) async throws -> SupportOperator {
        let alias = try Validate.alias(alias, field: "alias")
        guard alias != "system" else {
            throw LockboxError.invalid(
                "alias", "system is reserved: it is the User and actor of what the broker and the sweeper do themselves")
        }
        let now = try now()
        return try await transaction { connection in
            let inserted = try await connection.query(
                """
                INSERT INTO lockbox.operators (alias, is_manager, created_at) VALUES (\(alias), \(isManager), \(now))
                ON CONFLICT DO NOTHING
                """)
            guard inserted.affectedRows == 1 else {
                throw LockboxError(.alreadyExists, "operator \(alias) already exists", field: "alias")
            }
            try await audit(
                AuditEntry(
                    occurredAt: now, tenantId: nil, recordType: "OperatorManagement", user: "System", actor: "System",
                    activity: "New-SupportOperator", item: alias,
                    parameters: ["Alias": alias, "SupportManager": isManager ? "true" : "false"]),
                on: connection)
            return SupportOperator(alias: alias, isManager: isManager, createdAt: now)
        }
    }

    /// All operators, by alias.
    public func operators() async throws -> [SupportOperator] {
        let rows = try await read("SELECT alias, is_manager, created_at FROM lockbox.operators ORDER BY alias")
        return try rows.map { row in
            let (alias, manager, created) = try row.decode((String, Bool, Date).self)
            return SupportOperator(alias: alias, isManager: manager, createdAt: created)
        }
    }

    func requireOperator(_ alias: String, on connection: PGConnection, field: String) async throws -> SupportOperator {
        let rows = try await connection.query(
            "SELECT alias, is_manager, created_at FROM lockbox.operators WHERE alias = \(alias)")
        guard let row = rows.first else { throw LockboxError(.notFound, "no operator with alias \(alias)", field: field) }
        let (found, manager, created) = try row.decode((String, Bool, Date).self)
        return SupportOperator(alias: found, isManager: manager, createdAt: created)
    }
}
