import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Testing

@Suite("Rule 9: tenant settings and roles belong to the tenant's global administrators")
struct TenantAdministrationTests {
    @Test("only a global administrator of the tenant changes the setting or the roles")
    func onlyGlobalAdmins() async throws {
        try await World.with { world in
            try await world.expectRefusal(.notAuthorized, field: "as") {
                _ = try await world.broker.setCustomerLockbox(tenant: "contoso", enabled: false, by: "approver@contoso.com")
            }
            try await world.expectRefusal(.notAuthorized, field: "as") {
                _ = try await world.broker.setCustomerLockbox(tenant: "contoso", enabled: false, by: "admin@fabrikam.com")
            }
            try await world.expectRefusal(.notAuthorized, field: "as") {
                _ = try await world.broker.addRole(
                    tenant: "contoso", upn: "eve@contoso.com", role: .customerLockboxApprover, by: "approver@contoso.com")
            }
            try await world.expectRefusal(.notAuthorized, field: "as") {
                try await world.broker.removeRole(
                    tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover,
                    by: "admin@fabrikam.com")
            }
            try await world.expectRefusal(.notFound, field: "tenant") {
                _ = try await world.broker.setCustomerLockbox(tenant: "northwind", enabled: true, by: "admin@contoso.com")
            }
            try await world.expectRefusal(.alreadyExists) {
                _ = try await world.broker.addRole(
                    tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover, by: "admin@contoso.com")
            }
            try await world.expectRefusal(.alreadyExists, field: "name") {
                _ = try await world.broker.createTenant(name: "contoso", admin: "x@contoso.com")
            }
            try await world.expectRefusal(.invalidInput, field: "name") {
                _ = try await world.broker.createTenant(name: "bad name!", admin: "x@contoso.com")
            }
            try await world.expectRefusal(
                .alreadyExists, field: "customer-lockbox", containing: "already On for tenant contoso: nothing changed"
            ) {
                _ = try await world.broker.setCustomerLockbox(tenant: "contoso", enabled: true, by: "admin@contoso.com")
            }
            let off = try await world.broker.setCustomerLockbox(tenant: "contoso", enabled: false, by: "admin@contoso.com")
            #expect(off.customerLockbox == false)
            let change = try #require(
                try await world.broker.auditRecords(AuditFilter(tenant: "contoso", activity: "Set-CustomerLockboxSetting"))
                    .first)
            #expect(change.user == "admin@contoso.com")
            let parameters = try JSONDecoder().decode([String: String].self, from: Data(change.parameters.utf8))
            #expect(parameters == ["OldValue": "On", "NewValue": "Off"])
        }
    }

    @Test("tenant names are unique ignoring case: the broker names the holder, the database refuses the clash")
    func namesIgnoringCase() async throws {
        try await World.with { world in
            try await world.expectRefusal(
                .alreadyExists, field: "name", containing: "the existing tenant contoso: tenant names are unique ignoring case"
            ) {
                _ = try await world.broker.createTenant(name: "Contoso", admin: "x@contoso.com")
            }
            // Past the broker, the database itself: a name or a service account taken ignoring case.
            for (name, account) in [("CONTOSO", "other@x.example"), ("northwind", "contosoBOXServiceAccount@contoso.prod.outlook.com")] {
                let refused = try await #require(throws: PostgresError.self) {
                    try await world.db.pool.query(
                        """
                        INSERT INTO lockbox.tenants (tenant_id, name, service_account, created_at)
                        VALUES (gen_random_uuid(), \(name), \(account), now())
                        """)
                }
                #expect(refused.constraint == (name == "CONTOSO" ? "tenants_name_ignoring_case" : "tenants_service_account_unique"))
            }
        }
    }

    @Test("migration 0008 names the tenants that already differ only by case instead of half-applying")
    func migrationReportsClashes() async throws {
        try await World.with { world in
            let migration = try #require(TestCluster.migrationScripts.first { $0.version == 8 })
            // A database from before 0008, where two names could differ only by case.
            try await world.db.pool.withConnection { connection in
                try await connection.execute(
                    script: """
                        DROP INDEX lockbox.tenants_name_ignoring_case;
                        ALTER TABLE lockbox.tenants DROP CONSTRAINT tenants_service_account_unique;
                        INSERT INTO lockbox.tenants (tenant_id, name, service_account, created_at)
                        VALUES (gen_random_uuid(), 'Contoso', 'contosoBOXServiceAccount@contoso.prod.outlook.com', now());
                        """)
                let error = try await #require(throws: PostgresError.self) {
                    try await connection.execute(script: migration.sql)
                }
                #expect(error.message.contains("differ only by case: Contoso, contoso"), "\(error.message)")
                let index = try await connection.query("SELECT to_regclass('lockbox.tenants_name_ignoring_case') IS NULL")
                #expect(try index.first?.decode(Bool.self, at: 0) == true)
            }
        }
    }

    @Test("the last global administrator cannot be removed; role changes are audited")
    func lastGlobalAdmin() async throws {
        try await World.with { world in
            try await world.expectRefusal(.lastGlobalAdministrator, field: "upn") {
                try await world.broker.removeRole(
                    tenant: "contoso", upn: "admin@contoso.com", role: .globalAdministrator, by: "admin@contoso.com")
            }
            _ = try await world.broker.addRole(
                tenant: "contoso", upn: "second@contoso.com", role: .globalAdministrator, by: "admin@contoso.com")
            try await world.broker.removeRole(
                tenant: "contoso", upn: "admin@contoso.com", role: .globalAdministrator, by: "second@contoso.com")
            let roles = try await world.broker.roles(tenant: "contoso")
            #expect(Set(roles.map(\.upn)) == ["second@contoso.com", "approver@contoso.com"])
            try await world.expectRefusal(.notFound, field: "upn") {
                try await world.broker.removeRole(
                    tenant: "contoso", upn: "admin@contoso.com", role: .globalAdministrator, by: "second@contoso.com")
            }
            #expect(try await world.auditCount(activity: "Add-RoleGroupMember") == 3)
            #expect(try await world.auditCount(activity: "Remove-RoleGroupMember") == 1)
            // The database keeps one global administrator even if the broker's check were bypassed.
            try await world.refusedByDatabase(
                "DELETE FROM lockbox.tenant_roles WHERE upn = 'second@contoso.com' AND role = 'GlobalAdministrator'",
                constraint: "tenant_roles_last_global_admin")
            // Nor can the last one's row be turned into another role, person or tenant (migration 0016).
            for change in ["role = 'CustomerLockboxApprover'", "upn = 'someone@contoso.com'", "granted_by = 'x'"] {
                let changed = try await #require(throws: PostgresError.self, "\(change)") {
                    try await world.db.pool.withConnection {
                        try await $0.execute(
                            script: "UPDATE lockbox.tenant_roles SET \(change) WHERE upn = 'second@contoso.com'")
                    }
                }
                #expect(changed.constraint == "tenant_roles_fixed", "\(change)")
            }
            let kept = try await world.broker.roles(tenant: "contoso")
            #expect(Set(kept.map(\.upn)) == ["second@contoso.com", "approver@contoso.com"])
        }
    }

    @Test("no operator can be called system, the audit log's name for the broker and the sweeper")
    func reservedAlias() async throws {
        try await World.with { world in
            try await world.expectRefusal(.invalidInput, field: "alias", containing: "system is reserved") {
                _ = try await world.broker.addOperator(alias: "system", isManager: true)
            }
            try await world.refusedByDatabase(
                "INSERT INTO lockbox.operators (alias, is_manager, created_at) VALUES ('system', true, now())",
                constraint: "operators_alias_reserved")
            _ = try await world.broker.addOperator(alias: "systems", isManager: false)
        }
    }
}

@Suite("the audit log")
struct AuditLogTests {
    @Test("UPDATE, DELETE and TRUNCATE of audit records are refused by the database")
    func appendOnly() async throws {
        try await World.with { world in
            let count = try await world.auditCount()
            #expect(count > 0)
            for statement: PGQuery in [
                "UPDATE lockbox.audit_records SET activity = 'x'", "DELETE FROM lockbox.audit_records",
                "TRUNCATE lockbox.audit_records",
            ] {
                let error = try await #require(throws: PostgresError.self) { try await world.db.pool.query(statement) }
                #expect(error.sqlState == "42501", "\(error.debugDescription)")
                #expect(error.message.contains("append-only"))
            }
            #expect(try await world.auditCount() == count)
        }
    }

    @Test("audit records name existing tenants, and an audited tenant cannot be deleted")
    func tenantReference() async throws {
        try await World.with { world in
            let error = try await #require(throws: PostgresError.self) {
                try await world.db.pool.query(
                    """
                    INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, activity,
                        result)
                    VALUES (now(), \(UUID()), 'TenantSettings', 'System', 'System', 'x', 'Succeeded')
                    """)
            }
            #expect(error.sqlState == "23503", "\(error.debugDescription)")
            // A tenant with audit records and nothing else still cannot be deleted.
            let tenantID = UUID()
            try await world.db.pool.query(
                """
                INSERT INTO lockbox.tenants (tenant_id, name, service_account, created_at)
                VALUES (\(tenantID), 'northwind', 'svc', now())
                """)
            try await world.db.pool.query(
                """
                INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, activity, result)
                VALUES (now(), \(tenantID), 'TenantSettings', 'System', 'System', 'x', 'Succeeded')
                """)
            let delete = try await #require(throws: PostgresError.self) {
                try await world.db.pool.query("DELETE FROM lockbox.tenants WHERE tenant_id = \(tenantID)")
            }
            #expect(delete.sqlState == "23503", "\(delete.debugDescription)")
            #expect(delete.message.contains("audit_records"))
        }
    }

    @Test("every transition is in the request's timeline with who and when")
    func timeline() async throws {
        try await World.with { world in
            let request = try await world.newRequest()
            world.clock.advance(by: .seconds(60))
            _ = try await world.broker.review(request.requestId, manager: "morgan", approve: true)
            world.clock.advance(by: .seconds(60))
            _ = try await world.broker.decide(request.requestId, decision: .approve, by: "approver@contoso.com")
            _ = try await world.authorize()
            world.clock.advance(by: .seconds(4 * 3600))
            try await world.broker.sweep()
            let timeline = try await world.broker.timeline(request.requestId)
            #expect(timeline.map(\.activity) == [
                "New-AccessToCustomerDataRequest", "Approve-AccessToCustomerDataRequestInternally",
                "Set-AccessToCustomerDataRequest", "Get-MailboxFolder", "Complete-AccessToCustomerDataRequest",
            ])
            #expect(timeline.map(\.actor) == ["alex", "morgan", "approver@contoso.com", "alex", "System"])
            #expect(timeline[0].occurredAt == World.start)
            #expect(timeline[2].occurredAt == World.start.addingTimeInterval(120))
        }
    }

    @Test("a request's timeline holds every record naming it, also past 10,000 (none silently left out)")
    func longTimeline() async throws {
        try await World.with { world in
            let request = try await world.approved()
            // A busy 4-hour grant: 10,001 operations under it (written straight, as the authorization
            // statements write them, one millisecond apart), then the sweep's completion.
            try await world.db.pool.query(
                """
                INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, activity, item,
                    request_id, workload, result, parameters)
                SELECT r.access_starts_at + n * interval '1 millisecond', r.tenant_id, 'OperatorAction',
                    'Microsoft Operator', 'alex', 'Get-MailboxFolder', '', r.request_id, r.workload, 'Succeeded',
                    jsonb_build_object('operation', 'Get-MailboxFolder', 'resource', 'user@contoso.com/Inbox')
                FROM lockbox.requests r, generate_series(1, 10001) n
                WHERE r.request_id = \(request.requestId)
                """)
            world.clock.advance(by: .seconds(4 * 3600))
            try await world.broker.sweep()
            let timeline = try await world.broker.timeline(request.requestId)
            #expect(timeline.count == 3 + 10_001 + 1)
            #expect(timeline.first?.activity == "New-AccessToCustomerDataRequest")
            #expect(timeline.last?.activity == "Complete-AccessToCustomerDataRequest")
            #expect(try await world.auditCount(requestID: request.requestId) == 3 + 10_001 + 1)
        }
    }

    @Test("requests list by tenant, status, creation time and id, with the status as of now")
    func listing() async throws {
        try await World.with { world in
            let first = try await world.pendingCustomer()
            world.clock.advance(by: .seconds(60))
            let second = try await world.approved(duration: .seconds(60))
            let other = try await world.broker.createRequest(
                NewAccessRequest(requester: "blake", tenant: "fabrikam", workload: .oneDrive, ticket: "SR-9", reason: "r"))
            world.clock.advance(by: .seconds(60))
            #expect(try await world.broker.requests(.init(tenant: "contoso")).map(\.requestId) == [
                second.requestId, first.requestId,
            ])
            #expect(try await world.broker.requests(.init(status: .completed)).map(\.requestId) == [second.requestId])
            #expect(try await world.broker.requests(.init(createdAfter: World.start)).count == 2)
            #expect(try await world.broker.requests(.init(requestId: other.requestId)).map(\.tenant) == ["fabrikam"])
            await #expect(throws: LockboxError.self) { _ = try await world.broker.requests(.init(tenant: "nowhere")) }
        }
    }
}

@Suite("fail closed")
struct FailClosedTests {
    @Test("an unreadable clock refuses changes and denies access, recording why")
    func brokenClock() async throws {
        try await World.with { world in
            _ = try await world.approved()
            world.clock.breakClock()
            let before = try await world.auditCount()
            await #expect(throws: LockboxError.self) { _ = try await world.newRequest() }
            let error = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            #expect(error.code == .accessDenied)
            #expect(error.message.contains("clock"))
            world.clock.set(World.start)
            #expect(try await world.auditCount() == before + 1)
            let record = try #require(try await world.broker.auditRecords(AuditFilter(limit: 1)).first)
            #expect(record.result == "Denied" && record.parameters.contains("clock"))
        }
    }

    @Test("an unreachable database refuses with databaseUnavailable")
    func databaseDown() async throws {
        let pool = PGPool(conninfo: "host=/nonexistent-lockbox-socket port=5432 user=nobody dbname=none")
        let broker = Broker(pool: pool, clock: ManualClock(World.start))
        let error = try await #require(throws: LockboxError.self) {
            _ = try await broker.authorize(
                OperationAttempt(operatorAlias: "alex", tenant: "contoso", workload: .exchange, operation: "Get-Mailbox"),
                operation: "Get-Mailbox", resource: "user@contoso.com")
        }
        #expect(error.code == .databaseUnavailable)
        #expect(error.message.contains("nothing was returned"))
        let created = try await #require(throws: LockboxError.self) {
            _ = try await broker.createTenant(name: "contoso", admin: "admin@contoso.com")
        }
        #expect(created.code == .databaseUnavailable)
    }

    @Test("when the audit record cannot be written, no access is granted")
    func auditWriteFails() async throws {
        try await World.with { world in
            _ = try await world.approved()
            _ = try await world.authorize()
            try await world.db.pool.query(
                "ALTER TABLE lockbox.audit_records ADD CONSTRAINT audit_down CHECK (false) NOT VALID")
            let error = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            #expect(error.code == .databaseUnavailable)
        }
    }

    @Test("group commit: many concurrent authorizations each get their own answer and one record each")
    func groupCommit() async throws {
        try await World.with { world in
            _ = try await world.approved(resource: "user@contoso.com")
            let before = try await world.auditCount()
            let results = await withTaskGroup(of: Bool.self) { group in
                for index in 0..<200 {
                    group.addTask {
                        let resource = index % 5 == 0 ? "other@contoso.com/Inbox" : "user@contoso.com/Inbox/\(index)"
                        return (try? await world.authorize(resource: resource)) != nil
                    }
                }
                var allowed = 0
                for await ok in group where ok { allowed += 1 }
                return allowed
            }
            #expect(results == 160)
            #expect(try await world.auditCount() == before + 200)
            let denied = try await world.broker.auditRecords(AuditFilter(limit: 200)).filter { $0.result == "Denied" }
            #expect(denied.count == 40)
            #expect(denied.allSatisfy { $0.parameters.contains("other@contoso.com/Inbox") })
        }
    }
}
