import Foundation
import LockboxCore
import LockboxPostgres
import LockboxTestSupport
import Testing

extension TestDatabase {
    /// Runs `body` on a libpq connection of `login`'s own, closed afterwards.
    func withConnection<T: Sendable>(as login: Login, _ body: (PGConnection) async throws -> T) async throws -> T {
        let connection = try await connect(user: login.name, password: login.password)
        do {
            let value = try await body(connection)
            await connection.close()
            return value
        } catch {
            await connection.close()
            throw error
        }
    }

    /// Maps `login` to `tenant` as `lockbox auditor grant LOGIN --tenant NAME` does.
    func mapAuditor(_ login: Login, to tenant: Scenario.Tenant) async throws {
        try await pool.query("INSERT INTO lockbox.auditor_tenants (login, tenant_id) VALUES (\(login.name), \(tenant.id))")
    }
}

/// A statement built from SQL text (a view or table name of this file's own
/// lists), with `$n` values. Unlike `PGQuery("…\(x)")`, whose literal binds `x`
/// as a parameter, the text here is taken as is.
func sql(_ text: String, _ values: [any PGEncodable] = []) -> PGQuery {
    PGQuery(text, values)
}

/// Runs `statement` as the connection's role and requires it to be refused with one of `sqlStates`.
func expectRefused(
    _ statement: PGQuery, on connection: PGConnection, sqlStates: Set<String> = ["42501"],
    sourceLocation: SourceLocation = #_sourceLocation
) async {
    do {
        try await connection.query(statement)
        Issue.record("\(statement.sql) was allowed", sourceLocation: sourceLocation)
    } catch let error as PostgresError {
        #expect(
            sqlStates.contains(error.sqlState ?? ""), "\(statement.sql): \(error.debugDescription)",
            sourceLocation: sourceLocation)
    } catch {
        Issue.record(error, "\(statement.sql)", sourceLocation: sourceLocation)
    }
}

@Suite("database roles and tenant isolation")
struct RoleTests {
    static let views = [
        "lockbox.audit_log", "lockbox.access_requests", "lockbox.operator_actions", "lockbox.customer_tenants",
    ]
    static let baseTables = [
        "lockbox.tenants", "lockbox.tenant_roles", "lockbox.operators", "lockbox.requests", "lockbox.audit_records",
        "lockbox.notifications", "lockbox.auditor_tenants",
    ]

    @Test("both roles exist without LOGIN, and migrating another database of the cluster reuses them")
    func rolesAreIdempotent() async throws {
        try await TestDatabase.with { db in
            let roles = try await db.pool.query(
                "SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname IN ('lockbox_app', 'lockbox_auditor') ORDER BY 1")
            #expect(try roles.decode((String, Bool).self).map { "\($0.0)=\($0.1)" }
                == ["lockbox_app=false", "lockbox_auditor=false"])

            // A database migrated from scratch while the roles already exist.
            let other = db.name + "_again"
            let admin = try await PGConnection.connect(db.conninfo)
            try await admin.execute(script: "CREATE DATABASE \(quoteIdentifier(other))")
            do {
                let connection = try await PGConnection.connect(db.conninfo, database: other)
                let applied = try await Migrator(migrations: TestCluster.migrationScripts).migrate(on: connection)
                #expect(applied == TestCluster.migrationScripts.map(\.version))
                let grants = try await connection.query(
                    """
                    SELECT has_table_privilege('lockbox_auditor', 'lockbox.audit_log', 'SELECT'),
                           has_table_privilege('lockbox_auditor', 'lockbox.audit_records', 'SELECT'),
                           has_table_privilege('lockbox_app', 'lockbox.audit_records', 'INSERT'),
                           has_table_privilege('lockbox_app', 'lockbox.audit_records', 'UPDATE')
                    """)
                let (auditorViews, auditorTables, appInsert, appUpdate) = try grants.first!.decode(
                    (Bool, Bool, Bool, Bool).self)
                #expect(auditorViews && !auditorTables && appInsert && !appUpdate)
                await connection.close()
            } catch {
                try? await admin.execute(script: "DROP DATABASE IF EXISTS \(quoteIdentifier(other)) WITH (FORCE)")
                await admin.close()
                throw error
            }
            try await admin.execute(script: "DROP DATABASE IF EXISTS \(quoteIdentifier(other)) WITH (FORCE)")
            await admin.close()
        }
    }

    @Test("an auditor login sees only the rows of its tenants in every view and report; unmapped, nothing")
    func tenantIsolation() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            try await db.withLogins([("aud_a", "lockbox_auditor"), ("aud_none", "lockbox_auditor")]) { logins in
                let (mapped, unmapped) = (logins[0], logins[1])
                try await db.mapAuditor(mapped, to: scenario.contoso)
                for view in Self.views {
                    let all = try await db.pool.query(
                        sql("SELECT count(*), count(*) FILTER (WHERE tenant_id = $1) FROM \(view)", [scenario.contoso.id]))
                    let (total, contosoRows) = try all.first!.decode((Int, Int).self)
                    #expect(contosoRows > 0 && total > contosoRows, "\(view) has rows of several tenants")
                    let (seen, foreign) = try await db.withConnection(as: mapped) { auditor in
                        try await auditor.query(
                            sql(
                                "SELECT count(*), count(*) FILTER (WHERE tenant_id IS DISTINCT FROM $1) FROM \(view)",
                                [scenario.contoso.id])
                        ).first!.decode((Int, Int).self)
                    }
                    #expect(seen == contosoRows, "\(view) as mapped auditor")
                    #expect(foreign == 0, "\(view) as mapped auditor")
                    let nothing = try await db.withConnection(as: unmapped) { auditor in
                        try await auditor.query(sql("SELECT count(*) FROM \(view)")).first!.decode(Int.self, at: 0)
                    }
                    #expect(nothing == 0, "\(view) as unmapped auditor")
                }

                // The reports, run by the auditor with psql, show only its tenant.
                let whole = scenario.wholePeriod
                let connection = db.connectionString(user: mapped.name, password: mapped.password)
                let latency = try await Psql.report(
                    "approval_latency", ReportParameters(tenant: "*", from: whole.from, to: whole.to),
                    connection: connection)
                #expect(try latency.map { try $0.string("tenant") } == ["contoso"])
                let history = try await Psql.report(
                    "request_history", ReportParameters(tenant: "fabrikam", from: whole.from, to: whole.to),
                    connection: connection)
                #expect(history.isEmpty)
                let denied = try await Psql.report(
                    "denied_attempts", ReportParameters(tenant: "*", from: whole.from, to: whole.to),
                    connection: connection)
                #expect(
                    try denied.map { try $0.int("audit_id") }
                        == scenario.actions.filter { $0.result == "Denied" && $0.tenant?.id == scenario.contoso.id }
                        .sorted { $0.at < $1.at }.map { Int($0.auditId) })
                let unmappedHistory = try await Psql.report(
                    "request_history", ReportParameters(tenant: "*", from: whole.from, to: whole.to),
                    connection: db.connectionString(user: unmapped.name, password: unmapped.password))
                #expect(unmappedHistory.isEmpty)

                // Moving the mapping moves what the auditor sees, at once.
                try await db.pool.query("DELETE FROM lockbox.auditor_tenants WHERE login = \(mapped.name)")
                try await db.mapAuditor(mapped, to: scenario.fabrikam)
                let tenants = try await db.withConnection(as: mapped) { auditor in
                    try await auditor.query("SELECT DISTINCT tenant FROM lockbox.access_requests").decode(String.self)
                }
                #expect(tenants == ["fabrikam"])
            }
        }
    }

    @Test("no function of schema lockbox is PUBLIC's to execute; an auditor executes reads_base_tables only")
    func functionPrivileges() async throws {
        try await TestDatabase.with { db in
            // From the catalogue, so that a function a later migration adds is covered too.
            // (No ACL at all means PostgreSQL's default: PUBLIC may execute.)
            let functions = try await db.pool.query(
                """
                SELECT p.proname::text,
                    p.proacl IS NULL OR EXISTS (
                        SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
                    has_function_privilege('lockbox_auditor', p.oid, 'EXECUTE'),
                    has_function_privilege('lockbox_app', p.oid, 'EXECUTE')
                FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'lockbox'
                ORDER BY 1
                """
            ).decode((String, Bool, Bool, Bool).self)
            #expect(functions.filter { $0.1 }.map(\.0) == [])
            #expect(functions.filter { $0.2 }.map(\.0) == ["reads_base_tables"])
            #expect(Set(functions.filter { $0.3 }.map(\.0)).isSuperset(of: ["authorize", "authorize_batch", "refusal_of"]))
        }
    }

    @Test("an auditor cannot read base tables, write anything, or leak other tenants' rows through its own function")
    func auditorIsReadOnly() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            try await db.withLogins([("aud_ro", "lockbox_auditor")]) { logins in
                let login = logins[0]
                try await db.mapAuditor(login, to: scenario.contoso)
                try await db.withConnection(as: login) { auditor in
                    for table in Self.baseTables {
                        await expectRefused(sql("SELECT count(*) FROM \(table)"), on: auditor)
                    }
                    await expectRefused(
                        """
                        INSERT INTO lockbox.audit_records (occurred_at, record_type, user_id, actor, activity, result)
                        VALUES (now(), 'TenantSettings', 'x', 'x', 'x', 'Succeeded')
                        """, on: auditor)
                    await expectRefused("UPDATE lockbox.requests SET reason = 'changed'", on: auditor)
                    await expectRefused("DELETE FROM lockbox.audit_records", on: auditor)
                    await expectRefused("TRUNCATE lockbox.audit_records", on: auditor)
                    await expectRefused(
                        "INSERT INTO lockbox.auditor_tenants (login, tenant_id) VALUES (\(login.name), \(scenario.fabrikam.id))",
                        on: auditor)
                    await expectRefused("DELETE FROM lockbox.auditor_tenants", on: auditor)
                    await expectRefused(
                        """
                        SELECT * FROM lockbox.authorize('alex', 'contoso', 'Exchange', 'Get-MailboxFolder',
                            'user@contoso.com/Inbox', NULL, '{}', now(), NULL)
                        """, on: auditor)
                    await expectRefused("CREATE TABLE lockbox.mine (v int)", on: auditor)
                    await expectRefused("CREATE VIEW lockbox.mine AS SELECT 1", on: auditor)
                    // The views are read-only to it: refused by privileges, or before them because a
                    // joined view is not updatable (55000); either way nothing changes.
                    for view in Self.views {
                        await expectRefused(
                            sql("DELETE FROM \(view)"), on: auditor, sqlStates: ["42501", "55000"])
                        await expectRefused(
                            sql("UPDATE \(view) SET tenant_id = NULL"), on: auditor,
                            sqlStates: ["42501", "55000"])
                        await expectRefused(
                            sql("INSERT INTO \(view) (tenant_id) VALUES (NULL)"), on: auditor,
                            sqlStates: ["42501", "55000"])
                    }
                    let counts = try await db.pool.query(
                        "SELECT (SELECT count(*) FROM lockbox.audit_records), (SELECT count(*) FROM lockbox.auditor_tenants)")
                    let otherRecords = scenario.otherRecords.values.reduce(0, +)
                    let (records, mappings) = try counts.first!.decode((Int, Int).self)
                    #expect(records == otherRecords + scenario.actions.count)
                    #expect(mappings == 1)

                    // A cheap function of its own in a WHERE clause must only ever see the
                    // auditor's own rows (the views are security barriers).
                    try await auditor.withTransaction { connection in
                        try await connection.execute(
                            script: """
                                CREATE TEMP TABLE seen (tenant_id uuid) ON COMMIT DROP;
                                CREATE FUNCTION pg_temp.peek(uuid) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS
                                    $$ BEGIN INSERT INTO pg_temp.seen VALUES ($1); RETURN true; END $$;
                                """)
                        for view in Self.views {
                            try await connection.query(
                                sql("SELECT count(*) FROM \(view) WHERE pg_temp.peek(tenant_id)"))
                        }
                        let seen = try await connection.query(
                            "SELECT count(*), count(*) FILTER (WHERE tenant_id IS DISTINCT FROM \(scenario.contoso.id)) FROM pg_temp.seen")
                        let (calls, leaked) = try seen.first!.decode((Int, Int).self)
                        #expect(calls > 0)
                        #expect(leaked == 0)
                        try await connection.execute(script: "DROP FUNCTION pg_temp.peek(uuid)")
                    }
                }
            }
        }
    }

    @Test("lockbox_app inserts and reads audit rows but can never update, delete or truncate them, nor change the schema")
    func appIsAppendOnly() async throws {
        try await TestDatabase.with { db in
            let scenario = try await Scenario.build(on: db.pool)
            try await db.withLogins([("app", "lockbox_app")]) { logins in
                try await db.withConnection(as: logins[0]) { app in
                    let inserted = try await app.query(
                        """
                        INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, activity, result)
                        VALUES (now(), \(scenario.contoso.id), 'TenantSettings', 'System', 'System', 'Test-AppInsert', 'Succeeded')
                        RETURNING id
                        """)
                    let id = try inserted.first!.decode(Int64.self, at: 0)
                    let back = try await app.query("SELECT activity FROM lockbox.audit_records WHERE id = \(id)")
                    #expect(try back.first?.decode(String.self, at: 0) == "Test-AppInsert")

                    await expectRefused("UPDATE lockbox.audit_records SET activity = 'changed' WHERE id = \(id)", on: app)
                    await expectRefused("DELETE FROM lockbox.audit_records WHERE id = \(id)", on: app)
                    await expectRefused("TRUNCATE lockbox.audit_records", on: app)
                    // Pretending to be a migration does not help: TRUNCATE needs a privilege it does not have
                    // (and the refusal rolls the transaction back, which withTransaction reports).
                    await #expect(throws: PostgresError.self) {
                        try await app.withTransaction { connection in
                            try await connection.execute(script: "SET LOCAL lockbox.migrating = 'on'")
                            await expectRefused("TRUNCATE lockbox.audit_records", on: connection)
                        }
                    }
                    await expectRefused("ALTER TABLE lockbox.audit_records DISABLE TRIGGER audit_records_append_only", on: app)
                    await expectRefused("DROP TRIGGER audit_records_no_truncate ON lockbox.audit_records", on: app)
                    await expectRefused("CREATE TABLE lockbox.scratch (v int)", on: app)
                    await expectRefused("DROP VIEW lockbox.audit_log", on: app)
                    await expectRefused("DELETE FROM lockbox.requests", on: app)
                    // Nor rename a tenant (its whole history would change name) or make an engineer a
                    // support manager; the one tenant column the broker updates stays open to it.
                    await expectRefused("UPDATE lockbox.tenants SET name = 'renamed'", on: app)
                    await expectRefused("UPDATE lockbox.tenants SET service_account = 'x@example.com'", on: app)
                    await expectRefused("UPDATE lockbox.operators SET is_manager = true", on: app)
                    try await app.execute(script: "BEGIN")
                    try await app.query(
                        "UPDATE lockbox.tenants SET customer_lockbox = NOT customer_lockbox WHERE tenant_id = \(scenario.contoso.id)")
                    _ = try await app.query("SELECT 1 FROM lockbox.tenants FOR NO KEY UPDATE")
                    try await app.execute(script: "ROLLBACK")

                    let count = try await db.pool.query("SELECT count(*) FROM lockbox.audit_records WHERE id = \(id)")
                    #expect(try count.first?.decode(Int.self, at: 0) == 1)
                    // It reads the report views whole: it can read the base tables anyway.
                    for view in Self.views {
                        let mine = try await app.query(sql("SELECT count(*) FROM \(view)"))
                        let all = try await db.pool.query(sql("SELECT count(*) FROM \(view)"))
                        #expect(try mine.first?.decode(Int.self, at: 0) == all.first?.decode(Int.self, at: 0), "\(view)")
                    }
                }
            }
        }
    }

    @Test("db migrate as lockbox_app: nothing to apply is not an error; a pending migration fails naming it, changing nothing")
    func migrateAsApp() async throws {
        try await TestDatabase.with { db in
            try await db.withLogins([("app", "lockbox_app")]) { logins in
                try await db.withConnection(as: logins[0]) { app in
                    #expect(try await Migrator(migrations: TestCluster.migrationScripts).migrate(on: app) == [])
                    let next = (TestCluster.migrationScripts.last?.version ?? 0) + 1
                    let pending = MigrationScript(version: next, name: "scratch", sql: "CREATE TABLE lockbox.scratch (v int)")
                    do {
                        _ = try await Migrator(migrations: TestCluster.migrationScripts + [pending]).migrate(on: app)
                        Issue.record("lockbox_app applied a migration")
                    } catch let error as MigrationError {
                        #expect(error.message.contains("migration \(next) (scratch) failed"), "\(error)")
                        #expect(error.message.contains("permission denied"), "\(error)")
                    }
                    let applied = try await Migrator(migrations: TestCluster.migrationScripts).applied(on: app)
                    #expect(applied.map(\.version) == TestCluster.migrationScripts.map(\.version))
                }
            }
        }
    }

    @Test("the owner cannot update, delete or truncate audit rows either; TRUNCATE only inside a migration")
    func ownerTruncateOnlyInMigration() async throws {
        try await TestDatabase.with { db in
            _ = try await Scenario.build(on: db.pool)
            let owner = try await db.connect()
            let before = try await owner.query("SELECT count(*) FROM lockbox.audit_records")
            await expectRefused("UPDATE lockbox.audit_records SET activity = 'changed'", on: owner)
            await expectRefused("DELETE FROM lockbox.audit_records", on: owner)
            do {
                try await owner.query("TRUNCATE lockbox.audit_records")
                Issue.record("the owner truncated the audit log outside a migration")
            } catch let error as PostgresError {
                #expect(error.sqlState == "42501")
                #expect(error.message.contains("append-only"))
            }
            // As the migrator runs a migration: allowed (then rolled back here).
            try await owner.execute(script: "BEGIN; SET LOCAL lockbox.migrating = 'on'")
            try await owner.query("TRUNCATE lockbox.audit_records")
            let during = try await owner.query("SELECT count(*) FROM lockbox.audit_records")
            #expect(try during.first?.decode(Int.self, at: 0) == 0)
            try await owner.execute(script: "ROLLBACK")
            let after = try await owner.query("SELECT count(*) FROM lockbox.audit_records")
            #expect(try after.first?.decode(Int.self, at: 0) == before.first?.decode(Int.self, at: 0))
            await owner.close()
        }
    }

    /// Delivery that drops notifications (the test only needs them marked sent).
    struct DiscardDelivery: NotificationDelivery {
        func deliver(_ notification: LockboxNotification) async throws {}
    }

    @Test("the broker and the auditor mapping commands work with lockbox_app's privileges alone")
    func brokerRunsAsApp() async throws {
        try await TestDatabase.with { db in
            try await db.withLogins([("broker", "lockbox_app")]) { logins in
                let pool = PGPool(conninfo: db.connectionString(user: logins[0].name, password: logins[0].password))
                let clock = ManualClock(Date(timeIntervalSince1970: 1_800_000_000))
                let broker = Broker(pool: pool, clock: clock)
                do {
                    try await pool.withConnection {
                        try await Migrator(migrations: TestCluster.migrationScripts).verify(on: $0)
                    }
                    let contoso = try await broker.createTenant(name: "contoso", admin: "admin@contoso.com")
                    try await broker.setCustomerLockbox(tenant: "contoso", enabled: true, by: "admin@contoso.com")
                    _ = try await broker.addRole(
                        tenant: "contoso", upn: "approver@contoso.com", role: .customerLockboxApprover,
                        by: "admin@contoso.com")
                    _ = try await broker.addRole(
                        tenant: "contoso", upn: "temp@contoso.com", role: .customerLockboxApprover,
                        by: "admin@contoso.com")
                    _ = try await broker.removeRole(
                        tenant: "contoso", upn: "temp@contoso.com", role: .customerLockboxApprover,
                        by: "admin@contoso.com")
                    _ = try await broker.addOperator(alias: "alex", isManager: false)
                    _ = try await broker.addOperator(alias: "morgan", isManager: true)

                    let request = try await broker.createRequest(
                        NewAccessRequest(
                            requester: "alex", tenant: "contoso", workload: .exchange, ticket: "SR-9",
                            reason: "Mailbox does not sync", duration: .seconds(3600)))
                    _ = try await broker.review(request.requestId, manager: "morgan", approve: true)
                    #expect(try await broker.deliverNotifications(using: DiscardDelivery()) == 2)
                    _ = try await broker.decide(request.requestId, decision: .approve, by: "approver@contoso.com")
                    let access = try await broker.authorize(
                        OperationAttempt(
                            operatorAlias: "alex", tenant: "contoso", workload: .exchange,
                            operation: "Get-MailboxFolder", arguments: ["resource": "user@contoso.com/Inbox"],
                            clientIP: "10.1.2.3"),
                        operation: "Get-MailboxFolder", resource: "user@contoso.com/Inbox")
                    #expect(access.requestID == request.requestId)

                    let stale = try await broker.createRequest(
                        NewAccessRequest(
                            requester: "alex", tenant: "contoso", workload: .oneDrive, ticket: "SR-10",
                            reason: "Files missing"))
                    _ = try await broker.review(stale.requestId, manager: "morgan", approve: true)
                    clock.advance(by: .seconds(13 * 3600))
                    let swept = try await broker.sweep()
                    #expect(swept == Broker.SweepResult(expired: [stale.requestId], completed: [request.requestId]))
                    #expect(try await broker.auditRecords(AuditFilter(tenant: "contoso")).count > 0)

                    // What `lockbox auditor grant` and `revoke` run.
                    try await pool.query(
                        "INSERT INTO lockbox.auditor_tenants (login, tenant_id) VALUES ('carol', \(contoso.tenantId))")
                    let removed = try await pool.query("DELETE FROM lockbox.auditor_tenants WHERE login = 'carol'")
                    #expect(removed.affectedRows == 1)
                } catch {
                    await pool.close()
                    throw error
                }
                await pool.close()
            }
        }
    }
}
