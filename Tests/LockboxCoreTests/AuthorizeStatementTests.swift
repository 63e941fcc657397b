import Foundation
import LockboxCore
import LockboxPostgres
import LockboxSQL
import LockboxTestSupport
import Testing

/// The broker authorizes a lone call with `sql/statements/authorize_one.sql` and a
/// group-commit batch with `authorize_batch.sql`; SQL tools call the database
/// function `lockbox.authorize_batch`. All three must decide and record every
/// kind of attempt identically.
@Suite("authorization statements")
struct AuthorizeStatementTests {
    /// One attempt as the statements take it.
    struct Attempt {
        var operatorAlias: String
        var tenant = "contoso"
        var workload = "Exchange"
        var operation = "Get-MailboxFolder"
        var resource: String
        var clientIP: String? = "10.9.8.7"
        var arguments: String? = #"{"folder": "Inbox"}"#
        var now: Date?
        var denial: String?
    }

    /// What a statement answered for one attempt, and the audit record it wrote.
    struct Decision: Equatable {
        var allowed: Bool
        var requestID: UUID?
        var reason: String?
        var accessEndsAt: Date?
        var record: [String?]
    }

    static func one(_ attempt: Attempt) -> PGQuery {
        var query = PGQuery(stringLiteral: LockboxSQL.statements["authorize_one"]!)
        query.binds = [
            attempt.operatorAlias.pgBind, attempt.tenant.pgBind, attempt.workload.pgBind, attempt.operation.pgBind,
            attempt.resource.pgBind, attempt.clientIP.map(PGInet.init).pgBind,
            attempt.arguments.map { PGJSON(text: $0) }.pgBind, attempt.now.pgBind, attempt.denial.pgBind,
        ]
        return query
    }

    /// The same attempts through lockbox.authorize_batch, the database function SQL tools call.
    static func viaFunction(_ attempts: [Attempt]) -> PGQuery {
        var query = batch(attempts)
        query.sql = """
            SELECT ord, allowed, audit_id, request_id, reason, access_ends_at
            FROM lockbox.authorize_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)
            """
        return query
    }

    static func batch(_ attempts: [Attempt]) -> PGQuery {
        var query = PGQuery(stringLiteral: LockboxSQL.statements["authorize_batch"]!)
        query.binds = [
            PGArray(attempts.map(\.operatorAlias)), PGArray(attempts.map(\.tenant)), PGArray(attempts.map(\.workload)),
            PGArray(attempts.map(\.operation)), PGArray(attempts.map(\.resource)), PGArray(attempts.map(\.clientIP)),
            PGArray(attempts.map(\.arguments)), PGArray(attempts.map { $0.now.map(PGTimestamp.format) }),
            PGArray(attempts.map(\.denial)),
        ].map(\.pgBind)
        return query
    }

    /// Runs the rows a statement returned back to decisions, with the record each names.
    static func decisions(_ rows: PGRows, count: Int, world: World) async throws -> [Decision] {
        var decisions = [Decision?](repeating: nil, count: count)
        for row in rows {
            let (ord, allowed, auditID, requestID, reason, ends) = try row.decode(
                (Int, Bool, Int64, UUID?, String?, Date?).self)
            let record = try await world.db.pool.query(
                """
                SELECT tenant_id::text, record_type, user_id, actor, host(client_ip), activity, item,
                    request_id::text, workload, result, parameters::text,
                    CASE WHEN occurred_at BETWEEN now() - interval '1 hour' AND now() + interval '1 minute'
                         THEN 'server clock' ELSE occurred_at::text END
                FROM lockbox.audit_records WHERE id = \(auditID)
                """)
            let fields = try #require(record.first)
            decisions[ord - 1] = Decision(
                allowed: allowed, requestID: requestID, reason: reason, accessEndsAt: ends,
                record: try (0..<12).map { try fields.decode(String?.self, at: $0) })
        }
        return try decisions.map { try #require($0) }
    }

    @Test("one attempt at a time, one batch, and the database function decide and record every case alike")
    func statementsAgree() async throws {
        try await World.with { world in
            let grant = try await world.approved(resource: "user@contoso.com")
            let pending = try await world.pendingCustomer(by: "blake")
            let now = try world.clock.now()
            let later = now.addingTimeInterval(5 * 3600)
            let attempts = [
                Attempt(operatorAlias: "alex", resource: "user@contoso.com/Inbox", now: now),
                Attempt(operatorAlias: "alex", resource: "other@contoso.com/Inbox", now: now),
                Attempt(operatorAlias: "alex", resource: "user@contoso.comx/Inbox", now: now),
                Attempt(operatorAlias: "blake", resource: "user@contoso.com/Inbox", now: now),
                Attempt(operatorAlias: "alex", tenant: "fabrikam", resource: "user@fabrikam.com", now: now),
                Attempt(operatorAlias: "alex", tenant: "nowhere", resource: "user@contoso.com", now: now),
                Attempt(operatorAlias: "alex", workload: "SharePoint", resource: "sites/x", now: now),
                Attempt(
                    operatorAlias: "alex", operation: "Remove-Mailbox", resource: "user@contoso.com", now: now,
                    denial: "operation Remove-Mailbox is not in the pre-approved catalogue"),
                Attempt(operatorAlias: "alex", resource: "user@contoso.com/Inbox", now: nil),
                Attempt(operatorAlias: "alex", resource: "user@contoso.com/Inbox", now: later),
                Attempt(operatorAlias: "alex", resource: "user@contoso.com", clientIP: nil, arguments: nil, now: now),
                Attempt(operatorAlias: "alex", tenant: "CONTOSO", resource: "user@contoso.com/Inbox", now: now),
            ]
            var lone: [Decision] = []
            for attempt in attempts {
                let rows = try await world.db.pool.query(Self.one(attempt), prepared: true)
                lone += try await Self.decisions(rows, count: 1, world: world)
            }
            let batched = try await Self.decisions(
                try await world.db.pool.query(Self.batch(attempts), prepared: true), count: attempts.count,
                world: world)
            #expect(lone == batched)
            // The database function SQL tools call applies the same rule.
            let function = Self.viaFunction(attempts)
            let viaFunction = try await Self.decisions(
                try await world.db.pool.query(function), count: attempts.count, world: world)
            #expect(viaFunction == lone)

            // And what they agree on is right.
            #expect(
                lone.map(\.allowed) == [true, false, false, false, false, false, false, false, false, false, true, false])
            #expect(lone[0].requestID == grant.requestId && lone[0].accessEndsAt != nil && lone[0].reason == nil)
            #expect(lone[0].record[9] == "Succeeded" && lone[1].record[9] == "Denied")
            #expect(lone[1].reason?.contains("outside the scope user@contoso.com") == true)
            #expect(lone[2].reason?.contains("outside the scope") == true)
            #expect(lone[3].requestID == pending.requestId && lone[3].reason?.contains("PendingCustomer") == true)
            #expect(lone[4].reason?.contains("no access request of operator alex for Exchange in tenant fabrikam") == true)
            #expect(lone[5].reason == "unknown tenant nowhere" && lone[5].record[0] == nil)
            #expect(lone[6].reason?.contains("for SharePoint") == true)
            #expect(lone[7].reason?.contains("not in the pre-approved catalogue") == true)
            #expect(lone[7].requestID == grant.requestId)
            #expect(lone[8].reason == "the broker clock is unavailable" && lone[8].record[11] == "server clock")
            #expect(lone[0].record[11] != "server clock", "stamped with the broker's time")
            #expect(lone[9].reason?.contains("access window of request \(grant.requestId.uuidString.lowercased()) ended") == true)
            #expect(lone[10].record[4] == nil && lone[10].record[10]?.contains(#""arguments": {}"#) == true)
            // Another letter case names the same tenant (names are unique ignoring case): the attempt
            // is recorded under it, where its auditors see it, but only the exact name is granted.
            #expect(lone[11].reason == "unknown tenant CONTOSO (tenant names are exact: did you mean contoso?)")
            #expect(lone[11].record[0] == lone[0].record[0] && lone[11].record[0] != nil && lone[11].requestID == nil)
            for decision in lone where !decision.allowed {
                #expect(decision.accessEndsAt == nil)
                #expect(decision.record[10]?.contains(#""reason": "#) == true)
            }
        }
    }

    /// Runs `attempts` one at a time, as one batch and through the database function, requires
    /// the three to agree, and returns what they agreed on.
    static func decidedAlike(
        _ attempts: [Attempt], world: World, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> [Decision] {
        var lone: [Decision] = []
        for attempt in attempts {
            let rows = try await world.db.pool.query(Self.one(attempt), prepared: true)
            lone += try await Self.decisions(rows, count: 1, world: world)
        }
        let batched = try await Self.decisions(
            try await world.db.pool.query(Self.batch(attempts), prepared: true), count: attempts.count, world: world)
        let function = Self.viaFunction(attempts)
        let viaFunction = try await Self.decisions(
            try await world.db.pool.query(function), count: attempts.count, world: world)
        #expect(batched == lone, sourceLocation: sourceLocation)
        #expect(viaFunction == lone, sourceLocation: sourceLocation)
        return lone
    }

    @Test("each of the three paths holds the grant's queue lock shared until it commits, so a waiting revoke goes first")
    func grantQueueLockOnEveryPath() async throws {
        try await World.with { world in
            let grant = try await world.approved(resource: "user@contoso.com")
            let attempt = Attempt(operatorAlias: "alex", resource: "user@contoso.com/Inbox", now: try world.clock.now())
            let function = Self.viaFunction([attempt])
            for (path, query) in [("one", Self.one(attempt)), ("batch", Self.batch([attempt])), ("function", function)] {
                let connection = try await world.db.connect()
                try await connection.execute(script: "BEGIN")
                try await connection.query(query)
                // A bigint advisory key is held as its high and low 32 bits, objsubid 1.
                let held = try await connection.query(
                    """
                    SELECT count(*) FROM pg_locks l, lockbox.grant_lock_key(\(grant.requestId)) AS k
                    WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
                      AND l.mode = 'ShareLock' AND l.objsubid = 1
                      AND l.classid::bigint = (k >> 32) & 4294967295 AND l.objid::bigint = k & 4294967295
                    """)
                #expect(try held.first?.decode(Int.self, at: 0) == 1, "\(path)")
                try await connection.execute(script: "ROLLBACK")
                await connection.close()
            }
        }
    }

    @Test("an alias no support engineer has is refused as an unknown operator, not as one without a request")
    func unknownOperator() async throws {
        try await World.with { world in
            _ = try await world.approved(resource: "user@contoso.com")
            let now = try world.clock.now()
            let decided = try await Self.decidedAlike(
                [
                    Attempt(operatorAlias: "nobody", resource: "user@contoso.com/Inbox", now: now),
                    // A registered engineer (blake) without a request keeps the reason it had.
                    Attempt(operatorAlias: "blake", resource: "user@contoso.com/Inbox", now: now),
                ], world: world)
            // Auditors read only the views, never the operators table: the reason is all they have.
            #expect(decided[0].reason == "unknown operator nobody (no support engineer has that alias)")
            #expect(!decided[0].allowed && decided[0].requestID == nil && decided[0].record[9] == "Denied")
            #expect(decided[0].record[3] == "nobody" && decided[0].record[0] != nil)
            #expect(decided[1].reason == "no access request of operator blake for Exchange in tenant contoso")
            // Through the broker, as `lockbox invoke --operator nobody` asks.
            let refused = try await #require(throws: LockboxError.self) { _ = try await world.authorize("nobody") }
            #expect(refused.code == .accessDenied)
            #expect(refused.message == "access denied: unknown operator nobody (no support engineer has that alias)")
            let auditID = try #require(refused.auditID)
            let seen = try await world.db.pool.query(
                "SELECT reason FROM lockbox.operator_actions WHERE audit_id = \(auditID)")
            #expect(try seen.first?.decode(String.self, at: 0) == "unknown operator nobody (no support engineer has that alias)")
        }
    }

    @Test("an operator action's record names the tenant as the attempt gave it, also one no tenant has")
    func tenantAsNamed() async throws {
        try await World.with { world in
            let grant = try await world.approved(resource: "user@contoso.com")
            let now = try world.clock.now()
            let catalogue = "operation Remove-Mailbox is not in the pre-approved catalogue"
            let decided = try await Self.decidedAlike(
                [
                    // Refused before the database looks at the tenant: the name was recorded nowhere.
                    Attempt(
                        operatorAlias: "alex", tenant: "northwind", operation: "Remove-Mailbox",
                        resource: "user@contoso.com", now: now, denial: catalogue),
                    Attempt(operatorAlias: "alex", tenant: "northwind", resource: "user@contoso.com/Inbox", now: now),
                    Attempt(
                        operatorAlias: "alex", tenant: "CONTOSO", operation: "Remove-Mailbox",
                        resource: "user@contoso.com", now: now, denial: catalogue),
                    Attempt(operatorAlias: "alex", resource: "user@contoso.com/Inbox", now: now),
                ], world: world)
            let named = try decided.map { decision -> String? in
                let parameters = try #require(decision.record[10])
                let object = try #require(
                    try JSONSerialization.jsonObject(with: Data(parameters.utf8)) as? [String: Any])
                return object["tenant"] as? String
            }
            #expect(named == ["northwind", "northwind", "CONTOSO", "contoso"])
            #expect(decided[0].reason == catalogue && decided[0].record[0] == nil)
            #expect(decided[1].reason == "unknown tenant northwind" && decided[1].record[0] == nil)
            #expect(decided[2].record[0] == decided[3].record[0] && decided[3].record[0] != nil)
            #expect(decided[3].allowed && decided[3].requestID == grant.requestId)
            // Through the broker, as `lockbox invoke --tenant northwind --operation Remove-Mailbox` asks.
            let refused = try await #require(throws: LockboxError.self) {
                _ = try await world.broker.authorize(
                    OperationAttempt(
                        operatorAlias: "alex", tenant: "northwind", workload: .exchange, operation: "Remove-Mailbox",
                        arguments: ["mailbox": "user@contoso.com"]),
                    operation: "Remove-Mailbox", resource: "user@contoso.com", denial: catalogue)
            }
            let auditID = try #require(refused.auditID)
            let seen = try await world.db.pool.query(
                "SELECT tenant_id IS NULL, parameters ->> 'tenant' FROM lockbox.audit_records WHERE id = \(auditID)")
            let (noTenant, tenantNamed) = try #require(seen.first).decode((Bool, String?).self)
            #expect(noTenant && tenantNamed == "northwind")
        }
    }

    @Test("a writer whose connection died fails the next call, records nothing, then reconnects")
    func writerReconnects() async throws {
        try await World.with { world in
            _ = try await world.approved(resource: "user@contoso.com")
            _ = try await world.authorize()
            let before = try await world.auditCount()
            // End the server process behind the writer's connection, and wait until it is gone.
            let writer = try await world.db.pool.query(
                """
                SELECT pid FROM pg_stat_activity
                WHERE datname = current_database() AND query LIKE '-- Checks and records ONE%'
                """)
            let pid = try #require(writer.first).decode(Int32.self, at: 0)
            try await world.db.pool.query("SELECT pg_terminate_backend(\(pid))")
            while try await world.db.pool.query("SELECT 1 FROM pg_stat_activity WHERE pid = \(pid)").count > 0 {
                await Task.yield()
            }
            let error = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            #expect(error.code == .databaseUnavailable)
            #expect(try await world.auditCount() == before)
            let access = try await world.authorize()
            #expect(try await world.auditCount() == before + 1)
            #expect(access.resource == "user@contoso.com/Inbox")
        }
    }

    @Test("one caller at a time is served by one writer: one server connection, every call recorded")
    func sequentialCallerUsesOneWriter() async throws {
        try await World.with { world in
            _ = try await world.approved(resource: "user@contoso.com")
            let before = try await world.auditCount()
            // Each call is made when the previous one has its answer, so the writer that
            // answered is never busy when the next arrives: a second writer (and its
            // connection) would only split the calls between two threads to wake.
            for index in 0..<100 {
                _ = try await world.authorize(resource: "user@contoso.com/Inbox/\(index)")
            }
            #expect(try await world.auditCount() == before + 100)
            let writers = try await world.db.pool.query(
                """
                SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND query LIKE '-- Checks and records%'
                """)
            #expect(try writers.first!.decode(Int.self, at: 0) == 1)
        }
    }

    @Test("a batch that cannot be written fails every caller in it, and nothing is recorded")
    func failedBatchFailsEveryone() async throws {
        try await World.with { world in
            _ = try await world.approved(resource: "user@contoso.com")
            _ = try await world.authorize()
            let before = try await world.auditCount()
            try await world.db.pool.query(
                "ALTER TABLE lockbox.audit_records ADD CONSTRAINT audit_down CHECK (false) NOT VALID")
            let outcomes = await concurrentOutcomes(60) { index in
                _ = try await world.authorize(resource: "user@contoso.com/Inbox/\(index)")
            }
            #expect(outcomes.count == 60)
            #expect(outcomes.allSatisfy { $0 == .databaseUnavailable })
            try await world.db.pool.query("ALTER TABLE lockbox.audit_records DROP CONSTRAINT audit_down")
            #expect(try await world.auditCount() == before)
        }
    }
}
