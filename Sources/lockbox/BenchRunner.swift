import Foundation
import Histogram
import LockboxConnectors
import LockboxCore
import LockboxPostgres

/// The dataset `lockbox bench` loads before measuring.
struct BenchDataset: Sendable, Codable {
    var tenants = 100
    var operators = 1000
    /// Requests in all, the active grants among them.
    var requests = 100_000
    /// Approved requests whose window is open, one per operator (operators 1…activeGrants).
    var activeGrants = 1000
    var auditRows = 1_000_000
}

/// One measured phase: a mode at a concurrency level.
struct BenchPhase: Sendable, Codable {
    var mode: String
    var operators: Int
    var operations: Int
    var allowed: Int
    var refused: Int
    var errors: Int
    var seconds: Double
    var operationsPerSecond: Double
    var p50Micros: UInt64
    var p95Micros: UInt64
    var p99Micros: UInt64
    var maxMicros: UInt64
    var cpuSeconds: Double
    var peakMemoryMB: Double
    var auditRowsAdded: Int
    /// What the audit check found wrong in this phase's records (empty: every
    /// operation's record is there, once, with the outcome its caller was told).
    var auditProblems: [String]
}

/// Raw and gateway at one level, and the ratio of their throughputs.
struct BenchLevel: Sendable, Codable {
    var operators: Int
    var raw: BenchPhase
    var gateway: BenchPhase
    var ratio: Double
}

struct BenchReport: Sendable, Codable {
    var dataset: BenchDataset
    var durationSeconds: Double
    var rounds: Int
    var levels: [BenchLevel]
    var auditCheck: String
    /// The phases in which operations failed (an error, neither allowed nor refused), each
    /// with its count and one of the errors; the benchmark fails unless this is empty, since
    /// failed operations make its rates and ratios meaningless.
    var failures: [String]
}

/// Loads the dataset and measures, for each concurrency level, the raw
/// one-statement check-and-insert through libpq against real operations
/// through the connectors and the broker (group commit), on the same data.
struct BenchRunner {
    let conninfo: String?
    let database: String?
    let dataset: BenchDataset
    let levels: [Int]
    let duration: Duration
    /// How many turns raw and gateway take at each level.
    var rounds = 1
    let progress: @Sendable (String, Double) -> Void

    /// The grants the gateway phase uses: tenant and workload per active operator.
    struct Grant: Sendable {
        var alias: String
        var tenant: String
        var workload: Workload
    }

    func run() async throws -> BenchReport {
        let pool = PGPool(conninfo: conninfo, database: database, maxConnections: 16)
        defer { Task { await pool.close() } }
        let grants = try await load(pool)
        var results: [BenchLevel] = []
        var failures: [String] = []
        for level in levels {
            // Raw and gateway take turns (`rounds` times each, duration ÷ rounds a turn), so
            // that drift over the run (the growing table, background writes) hits both alike.
            let rawOperation = try await rawOperation(level: level, grants: grants)
            let gatewayOperation = gatewayOperation(level: level, grants: grants)
            var rawSample = Sample()
            var gatewaySample = Sample()
            for round in 1...rounds {
                let label = rounds > 1 ? " (\(round)/\(rounds))" : ""
                rawSample.add(try await measure(label: "raw × \(level)\(label)", level: level, pool: pool, rawOperation.run))
                gatewaySample.add(
                    try await measure(label: "gateway × \(level)\(label)", level: level, pool: pool, gatewayOperation.run))
            }
            await rawOperation.close()
            await gatewayOperation.close()
            let raw = rawSample.phase(mode: "raw", level: level)
            let gateway = gatewaySample.phase(mode: "gateway", level: level)
            for (sample, phase) in [(rawSample, raw), (gatewaySample, gateway)] where phase.errors > 0 {
                failures.append(
                    "\(phase.mode) at \(level) operators: \(phase.errors) of \(phase.errors + phase.operations) "
                        + "operations failed, e.g. \(sample.work.lastError ?? "?")")
            }
            // The ~5 % refused is by design (every 20th operation): any other refusal, or an
            // allowed operation that was meant to be refused, means the grants did not hold as
            // loaded (a run that outlasts their window, a grant changed under the run).
            for (sample, phase) in [(rawSample, raw), (gatewaySample, gateway)] where sample.work.unintended > 0 {
                failures.append(
                    "\(phase.mode) at \(level) operators: \(sample.work.unintended) of \(phase.operations) operations "
                        + "were not refused or allowed as the benchmark meant (every 20th refused), so its "
                        + "\(phase.refused) refused are not the ~5 % it measures")
            }
            results.append(
                BenchLevel(
                    operators: level, raw: raw, gateway: gateway,
                    ratio: raw.operationsPerSecond > 0 ? gateway.operationsPerSecond / raw.operationsPerSecond : 0))
        }
        let wrong = results.flatMap { [$0.raw, $0.gateway] }.filter {
            $0.auditRowsAdded != $0.operations || !$0.auditProblems.isEmpty
        }
        let check: String
        if wrong.isEmpty {
            check =
                "ok: the audit log grew by exactly the number of operations performed in every phase, "
                + "one record for each operation, with the outcome its caller was told"
        } else {
            check = "FAILED: " + wrong.map {
                "\($0.mode) at \($0.operators): \($0.operations) operations, \($0.auditRowsAdded) audit rows"
                    + ($0.auditProblems.isEmpty ? "" : " (\($0.auditProblems.joined(separator: ", ")))")
            }.joined(separator: "; ")
        }
        return BenchReport(
            dataset: dataset, durationSeconds: Self.seconds(duration), rounds: rounds, levels: results, auditCheck: check,
            failures: failures)
    }

    // MARK: Loading

    /// Fills the database server-side (generate_series) and returns the active grants.
    func load(_ pool: PGPool) async throws -> [Grant] {
        let d = dataset
        let start = Date()
        let contentTenants = ["contoso", "fabrikam"]
        let workloads: [Workload] = [.exchange, .sharePoint, .oneDrive]
        progress("tenants and operators", 0)
        try await pool.withConnection { c in
            let count = try await c.query("SELECT count(*) FROM lockbox.requests")
            guard try count.first!.decode(Int.self, at: 0) == 0 else {
                throw LockboxError(
                    .invalidInput, "the benchmark database already has requests: bench needs an empty, migrated database",
                    field: "database-url")
            }
            try await c.query(
                """
                INSERT INTO lockbox.tenants (tenant_id, name, customer_lockbox, service_account, created_at)
                SELECT gen_random_uuid(), 'bench-' || lpad(i::text, 4, '0'), true,
                    'bench-' || lpad(i::text, 4, '0') || 'BOXServiceAccount@bench.prod.outlook.com', \(start)
                FROM generate_series(1, \(d.tenants)) i
                UNION ALL
                SELECT gen_random_uuid(), n, true, n || 'BOXServiceAccount@' || n || '.prod.outlook.com', \(start)
                FROM unnest(string_to_array(\(contentTenants.joined(separator: ",")), ',')) n
                """)
            try await c.query(
                """
                INSERT INTO lockbox.tenant_roles (tenant_id, upn, role, granted_at, granted_by)
                SELECT tenant_id, 'admin@' || lower(name) || '.example', 'GlobalAdministrator', \(start), 'System'
                FROM lockbox.tenants
                """)
            try await c.query(
                """
                INSERT INTO lockbox.operators (alias, is_manager, created_at)
                SELECT 'op' || lpad(i::text, 5, '0'), false, \(start) FROM generate_series(1, \(d.operators)) i
                UNION ALL
                SELECT 'mgr' || lpad(i::text, 3, '0'), true, \(start) FROM generate_series(1, 20) i
                """)
        }
        progress("historical requests", 0.05)
        // The active grants are among the requests: the rest are history.
        let historical = d.requests - d.activeGrants
        // History is loaded in its final states, which the lifecycle's rules (migration 0015)
        // refuse to insert: the owner turns them off for this one transaction.
        let grantCount = d.activeGrants
        try await pool.withTransaction { c in
            try await c.execute(script: "ALTER TABLE lockbox.requests DISABLE TRIGGER requests_rules")
            try await Self.inChunks(of: historical, size: 20_000) { offset, count in
                try await c.query(
                    Self.historicalRequests(
                        offset: offset, count: count, tenants: d.tenants, operators: d.operators, now: start))
                progress("historical requests", 0.05 + 0.25 * Double(offset + count) / Double(max(historical, 1)))
            }
            progress("active grants", 0.3)
            try await c.query(
                """
                INSERT INTO lockbox.requests (request_id, tenant_id, workload, ticket, reason, resource, requester,
                    duration, status, created_at, reviewed_at, internal_approver, notified_at, customer_deadline,
                    decided_at, decided_by, decision, access_starts_at, access_ends_at)
                SELECT gen_random_uuid(), t.tenant_id, (ARRAY['Exchange','SharePoint','OneDrive'])[1 + i % 3],
                    'SR-A' || i, 'benchmark grant', NULL, 'op' || lpad(i::text, 5, '0'), interval '4 hours',
                    'Approved', \(start) - interval '31 minutes', \(start) - interval '30 minutes', 'mgr001',
                    \(start) - interval '30 minutes', \(start) + interval '11 hours 30 minutes',
                    \(start) - interval '20 minutes', 'admin@' || t.name || '.example', 'Approve',
                    \(start) - interval '20 minutes', \(start) + interval '3 hours 40 minutes'
                FROM generate_series(1, \(grantCount)) i
                JOIN lockbox.tenants t ON t.name = (ARRAY['contoso','fabrikam'])[1 + (i / 3) % 2]
                """)
            try await c.execute(script: "ALTER TABLE lockbox.requests ENABLE TRIGGER requests_rules")
        }
        try await Self.inChunks(of: d.auditRows, size: 100_000) { offset, count in
            try await pool.query(
                Self.historicalAudit(
                    offset: offset, count: count, tenants: d.tenants, operators: d.operators,
                    requests: max(historical, 1), now: start))
            progress("audit log", 0.35 + 0.55 * Double(offset + count) / Double(max(d.auditRows, 1)))
        }
        progress("analyze", 0.92)
        try await pool.withConnection { try await $0.execute(script: "VACUUM ANALYZE") }
        // Write the loaded pages out now, so that no checkpoint triggered by the load
        // runs in the background of the first measured phases. (Needs superuser or
        // pg_checkpoint; without it the phases just start sooner.)
        progress("checkpoint", 0.96)
        try? await pool.withConnection { try await $0.execute(script: "CHECKPOINT") }
        progress("loaded", 1)
        return (1...grantCount).map { i in
            Grant(
                alias: "op" + String(repeating: "0", count: max(0, 5 - String(i).count)) + String(i),
                tenant: contentTenants[(i / 3) % 2], workload: workloads[i % 3])
        }
    }

    /// Runs `body(offset, count)` over `0..<total` in chunks of at most `size` rows, in order.
    static func inChunks(of total: Int, size: Int, _ body: (Int, Int) async throws -> Void) async throws {
        var offset = 0
        while offset < total {
            let count = min(size, total - offset)
            try await body(offset, count)
            offset += count
        }
    }

    static func historicalRequests(offset: Int, count: Int, tenants: Int, operators: Int, now: Date) -> PGQuery {
        """
        INSERT INTO lockbox.requests (request_id, tenant_id, workload, ticket, reason, resource, requester, duration,
            status, created_at, reviewed_at, internal_approver, notified_at, customer_deadline, decided_at,
            decided_by, decision, access_starts_at, access_ends_at, ended_at, ended_reason)
        SELECT md5('h' || s.i)::uuid, t.tenant_id, (ARRAY['Exchange','SharePoint','OneDrive'])[1 + s.i % 3],
            'SR-H' || s.i, 'historical request ' || s.i, NULL, 'op' || lpad((1 + s.i % \(operators))::text, 5, '0'),
            interval '2 hours', s.status, s.created, s.created + interval '5 minutes', 'mgr002',
            CASE WHEN s.status <> 'Rejected' THEN s.created + interval '5 minutes' END,
            CASE WHEN s.status <> 'Rejected' THEN s.created + interval '12 hours 5 minutes' END,
            CASE WHEN s.status IN ('Completed', 'Denied') THEN s.created + interval '1 hour' END,
            CASE WHEN s.status IN ('Completed', 'Denied') THEN 'admin@' || t.name || '.example' END,
            CASE WHEN s.status = 'Completed' THEN 'Approve' WHEN s.status = 'Denied' THEN 'Deny' END,
            CASE WHEN s.status = 'Completed' THEN s.created + interval '1 hour' END,
            CASE WHEN s.status = 'Completed' THEN s.created + interval '3 hours' END,
            s.created + interval '3 hours', 'historical'
        FROM (
            SELECT i, \(now) - (i || ' minutes')::interval - interval '1 day' AS created,
                (ARRAY['Completed','Completed','Completed','Denied','Expired','Rejected'])[1 + i % 6] AS status,
                1 + i % \(tenants) AS tenant_number
            FROM generate_series(\(offset + 1), \(offset + count)) i
        ) s
        JOIN lockbox.tenants t ON t.name = 'bench-' || lpad(s.tenant_number::text, 4, '0')
        """
    }

    /// Operator actions of the past, each under one of the historical requests.
    static func historicalAudit(
        offset: Int, count: Int, tenants: Int, operators: Int, requests: Int, now: Date
    ) -> PGQuery {
        """
        INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, client_ip, activity,
            item, request_id, workload, result, parameters)
        SELECT \(now) - (i || ' seconds')::interval - interval '1 day', t.tenant_id, 'OperatorAction',
            'Microsoft Operator', 'op' || lpad((1 + i % \(operators))::text, 5, '0'), '10.0.0.1',
            (ARRAY['Get-Mailbox','Get-MailboxMessage','Get-SiteDocument','Get-DriveFile'])[1 + i % 4], '',
            md5('h' || (1 + i % \(requests)))::uuid, (ARRAY['Exchange','Exchange','SharePoint','OneDrive'])[1 + i % 4],
            CASE WHEN i % 20 = 0 THEN 'Denied' ELSE 'Succeeded' END,
            jsonb_build_object('operation', 'historical', 'n', i)
        FROM generate_series(\(offset + 1), \(offset + count)) i
        JOIN lockbox.tenants t ON t.name = 'bench-' || lpad((1 + i % \(tenants))::text, 4, '0')
        """
    }

    // MARK: Measuring

    /// The raw reference: the same check-and-insert as one prepared statement per
    /// transaction, straight through libpq, no broker code. Like the broker's
    /// statements, it locks the grant FOR KEY SHARE (so that a revoke in flight is
    /// waited for: migration 0021), after its lock in the lock manager, shared (so that
    /// a revoke waiting for the operations in flight is not overtaken: migration 0025).
    static func rawQuery(_ grant: Grant, refused: Bool, now: Date) -> PGQuery {
        let workload = refused ? Workload("Teams").rawValue : grant.workload.rawValue
        let resource = "bench/resource"
        return """
            WITH g AS (
                SELECT r.request_id FROM lockbox.requests r JOIN lockbox.tenants t ON t.tenant_id = r.tenant_id
                WHERE r.requester = \(grant.alias) AND t.name = \(grant.tenant) AND r.workload = \(workload)
                  AND r.status = 'Approved' AND r.access_starts_at <= \(now) AND \(now) < r.access_ends_at
                  AND (r.resource IS NULL OR r.resource = \(resource) OR starts_with(\(resource), r.resource || '/'))
                  AND pg_advisory_xact_lock_shared(lockbox.grant_lock_key(r.request_id)) IS NOT NULL
                LIMIT 1
                FOR KEY SHARE OF r)
            INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, client_ip,
                activity, item, request_id, workload, result, parameters)
            SELECT \(now), t.tenant_id, 'OperatorAction', 'Microsoft Operator', \(grant.alias), \(PGInet("10.0.0.2")),
                'Get-Resource', '', g.request_id, \(workload),
                CASE WHEN g.request_id IS NULL THEN 'Denied' ELSE 'Succeeded' END,
                \(PGJSON(text: "{\"operation\":\"Get-Resource\"}"))
            FROM lockbox.tenants t LEFT JOIN g ON true WHERE t.name = \(grant.tenant)
            RETURNING result, id
            """
    }

    /// Whether a simulated operator's `iteration`-th operation is meant to be refused (every
    /// 20th: ~5 %), in both modes; the run fails unless exactly those were refused.
    static func refuses(_ iteration: Int) -> Bool { iteration % 20 == 19 }

    /// What one simulated operator does once: (worker, iteration) → outcome.
    struct PhaseWork: Sendable {
        let run: @Sendable (Int, Int) async throws -> Outcome
        let close: @Sendable () async -> Void
    }

    /// The raw reference on one libpq connection per simulated operator.
    func rawOperation(level: Int, grants: [Grant]) async throws -> PhaseWork {
        var opened: [PGConnection] = []
        for _ in 0..<level { opened.append(try await PGConnection.connect(conninfo, database: database)) }
        let connections = opened
        return PhaseWork(
            run: { worker, iteration in
                let grant = grants[(worker * 7919 + iteration) % grants.count]
                let refused = Self.refuses(iteration)
                let rows = try await connections[worker].query(
                    Self.rawQuery(grant, refused: refused, now: Date()), prepared: true)
                guard let row = rows.first else {
                    throw PostgresError(kind: .server, message: "the raw statement returned no row: nothing was recorded")
                }
                let (result, auditID) = try row.decode((String, Int64).self)
                return Outcome(result == "Succeeded" ? .allowed : .refused, auditID, actor: grant.alias)
            },
            close: { for connection in connections { await connection.close() } })
    }

    /// Real reads through the connectors, each authorized and audited by the broker (group commit).
    func gatewayOperation(level: Int, grants: [Grant]) -> PhaseWork {
        let registry = standardConnectors()
        let gatewayPool = PGPool(conninfo: conninfo, database: database, maxConnections: min(max(2, level), 16))
        let broker = Broker(pool: gatewayPool, workloads: registry.workloads, groupCommit: true)
        let samples = BenchSamples.reads
        return PhaseWork(
            run: { worker, iteration in
                let grant = grants[(worker * 7919 + iteration) % grants.count]
                let refused = Self.refuses(iteration)
                // A refused attempt: a workload this operator holds no grant for.
                let workload =
                    refused ? Workload.builtIn.subtracting([grant.workload]).sorted()[iteration % 2] : grant.workload
                let choices = samples[workload]!
                let sample = choices[iteration % choices.count]
                do {
                    let result = try await broker.invoke(
                        OperationAttempt(
                            operatorAlias: grant.alias, tenant: grant.tenant, workload: workload,
                            operation: sample.operation, arguments: sample.arguments(grant.tenant), clientIP: "10.0.0.3"),
                        registry: registry)
                    return Outcome(.allowed, result.access.auditID, actor: grant.alias)
                } catch let error as LockboxError where error.code == .accessDenied && error.auditID != nil {
                    return Outcome(.refused, error.auditID!, actor: grant.alias)
                } catch let error as LockboxError where error.code == .operationFailed && error.auditID != nil {
                    return Outcome(.failedAfterAudit, error.auditID!, actor: grant.alias)
                }
            },
            close: { await gatewayPool.close() })
    }

    /// How one operation ended, the audit record its caller was given, and the operator
    /// who made it (whom that record must name).
    struct Outcome {
        enum Kind { case allowed, refused, failedAfterAudit }
        var kind: Kind
        var auditID: Int64
        var actor: String
        init(_ kind: Kind, _ auditID: Int64, actor: String) {
            self.kind = kind
            self.auditID = auditID
            self.actor = actor
        }
    }

    /// Runs `operation` on `level` workers for one turn of `duration ÷ rounds`.
    private func measure(
        label: String, level: Int, pool: PGPool, _ operation: @escaping @Sendable (Int, Int) async throws -> Outcome
    ) async throws -> Sample {
        let lastBefore = try await Self.lastAuditID(pool)
        Self.resetPeakMemory()
        let usageBefore = Self.usage()
        let clock = ContinuousClock()
        let started = clock.now
        let deadline = started.advanced(by: duration / rounds)
        progress(label, 0)
        let partials = try await withThrowingTaskGroup(of: Partial.self) { group in
            for worker in 0..<level {
                group.addTask {
                    var partial = Partial()
                    var iteration = 0
                    while clock.now < deadline {
                        let begin = clock.now
                        do {
                            let outcome = try await operation(worker, iteration)
                            switch outcome.kind {
                            case .allowed: partial.allowed += 1
                            case .refused: partial.refused += 1
                            case .failedAfterAudit: partial.failedAfterAudit += 1
                            }
                            if (outcome.kind == .refused) != Self.refuses(iteration) { partial.unintended += 1 }
                            if outcome.kind == .refused {
                                partial.refusedIDs.append(outcome.auditID)
                                partial.refusedActors.append(outcome.actor)
                            } else {
                                partial.allowedIDs.append(outcome.auditID)
                                partial.allowedActors.append(outcome.actor)
                            }
                            let elapsed = begin.duration(to: clock.now)
                            _ = partial.histogram.record(UInt64(max(1, Self.seconds(elapsed) * 1_000_000)))
                        } catch {
                            partial.errors += 1
                            partial.lastError = partial.lastError ?? FailureLine.text(for: error) ?? "\(error)"
                        }
                        iteration += 1
                    }
                    return partial
                }
            }
            var all: [Partial] = []
            for try await partial in group { all.append(partial) }
            return all
        }
        var sample = Sample()
        sample.seconds = Self.seconds(started.duration(to: clock.now))
        let usageAfter = Self.usage()
        for partial in partials { sample.add(partial) }
        sample.cpuSeconds = usageAfter.cpu - usageBefore.cpu
        sample.peakMemoryMB = usageAfter.maxRSSMB
        let check = try await Self.checkAudit(
            pool, after: lastBefore,
            allowed: (partials.flatMap(\.allowedIDs), partials.flatMap(\.allowedActors)),
            refused: (partials.flatMap(\.refusedIDs), partials.flatMap(\.refusedActors)))
        sample.auditRowsAdded = check.added
        sample.auditProblems = check.problems
        return sample
    }

    /// What the workers of one or more turns did.
    struct Partial: Sendable {
        var allowed = 0
        var refused = 0
        var failedAfterAudit = 0
        /// The audit records the callers were given: of allowed operations (failed
        /// after audit included) and of refused ones; and, at the same positions, the
        /// operator who made each.
        var allowedIDs: [Int64] = []
        var refusedIDs: [Int64] = []
        var allowedActors: [String] = []
        var refusedActors: [String] = []
        /// Operations refused that were meant to be allowed, or allowed that were meant to be refused.
        var unintended = 0
        var errors = 0
        var lastError: String?
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    }

    /// The turns of one mode at one level, added up.
    struct Sample: Sendable {
        var work = Partial()
        var seconds = 0.0
        var cpuSeconds = 0.0
        var peakMemoryMB = 0.0
        var auditRowsAdded = 0
        var auditProblems: [String] = []

        mutating func add(_ partial: Partial) {
            work.allowed += partial.allowed
            work.refused += partial.refused
            work.failedAfterAudit += partial.failedAfterAudit
            work.errors += partial.errors
            work.unintended += partial.unintended
            work.lastError = work.lastError ?? partial.lastError
            work.histogram.add(partial.histogram)
        }

        mutating func add(_ other: Sample) {
            add(other.work)
            seconds += other.seconds
            cpuSeconds += other.cpuSeconds
            peakMemoryMB = max(peakMemoryMB, other.peakMemoryMB)
            auditRowsAdded += other.auditRowsAdded
            auditProblems += other.auditProblems
        }

        func phase(mode: String, level: Int) -> BenchPhase {
            let allowed = work.allowed + work.failedAfterAudit
            return BenchPhase(
                mode: mode, operators: level, operations: allowed + work.refused, allowed: allowed,
                refused: work.refused, errors: work.errors, seconds: seconds,
                operationsPerSecond: seconds > 0 ? Double(allowed + work.refused) / seconds : 0,
                p50Micros: work.histogram.valueAtPercentile(50), p95Micros: work.histogram.valueAtPercentile(95),
                p99Micros: work.histogram.valueAtPercentile(99), maxMicros: work.histogram.max,
                cpuSeconds: cpuSeconds, peakMemoryMB: peakMemoryMB, auditRowsAdded: auditRowsAdded,
                auditProblems: auditProblems)
        }
    }

    /// The newest audit record's id (0 when there is none). Operations are answered
    /// only once their record has committed, and turns do not overlap, so a turn's
    /// records are exactly those after the id read before it.
    static func lastAuditID(_ pool: PGPool) async throws -> Int64 {
        try await pool.query("SELECT coalesce(max(id), 0) FROM lockbox.audit_records").first!.decode(Int64.self, at: 0)
    }

    /// Compares the records added after `lastID` with the ids the callers were given
    /// (with, at the same positions, the operator who made each call): how many were
    /// added, and what is wrong, if anything: a record a caller was given that is not
    /// there (lost), one given to two callers, a record no caller was given (written
    /// twice, or by something else), one whose result is not what its caller was told,
    /// one that names another operator than its caller (that operation's record lost,
    /// another's doubled). The comparison runs in the server, so that this process holds
    /// no result set of a whole turn's records.
    static func checkAudit(
        _ pool: PGPool, after lastID: Int64, allowed: (ids: [Int64], actors: [String]),
        refused: (ids: [Int64], actors: [String])
    ) async throws -> (added: Int, problems: [String]) {
        let row = try await pool.query(
            """
            WITH given AS (
                SELECT id, true AS allowed, actor
                FROM unnest(\(PGArray(allowed.ids.map { String($0) }))::bigint[], \(PGArray(allowed.actors))::text[])
                    AS g(id, actor)
                UNION ALL
                SELECT id, false, actor
                FROM unnest(\(PGArray(refused.ids.map { String($0) }))::bigint[], \(PGArray(refused.actors))::text[])
                    AS g(id, actor)),
            added AS (
                SELECT id, result = 'Succeeded' AS allowed, actor FROM lockbox.audit_records WHERE id > \(lastID))
            SELECT (SELECT count(*) FROM added),
                (SELECT count(*) FROM given g WHERE NOT EXISTS (SELECT FROM added a WHERE a.id = g.id)),
                (SELECT count(*) - count(DISTINCT id) FROM given),
                (SELECT count(*) FROM added a WHERE NOT EXISTS (SELECT FROM given g WHERE g.id = a.id)),
                (SELECT count(*) FROM added a JOIN given g USING (id) WHERE a.allowed <> g.allowed),
                (SELECT count(*) FROM added a JOIN given g USING (id) WHERE a.actor IS DISTINCT FROM g.actor)
            """
        ).first!
        let (added, lost, shared, unclaimed, mismatched, misattributed) = try row.decode(
            (Int, Int, Int, Int, Int, Int).self)
        var problems: [String] = []
        if lost > 0 { problems.append("\(lost) records given to callers are missing") }
        if shared > 0 { problems.append("\(shared) records were given to more than one caller") }
        if unclaimed > 0 { problems.append("\(unclaimed) records were given to no caller") }
        if mismatched > 0 { problems.append("\(mismatched) records do not have the result their caller was told") }
        if misattributed > 0 {
            problems.append("\(misattributed) records name another operator than the caller given them")
        }
        return (added, problems)
    }

    /// The process's CPU time so far, and its peak resident memory since the last
    /// ``resetPeakMemory()`` (Linux: `VmHWM`; elsewhere, or if that cannot be read, the
    /// peak of the whole process life, `ru_maxrss`).
    static func usage() -> (cpu: Double, maxRSSMB: Double) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let cpu = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        return (cpu, peakSinceResetKB().map { Double($0) / 1024 } ?? Double(usage.ru_maxrss) / 1024)
    }

    /// Starts a new peak of resident memory, so that a phase reports its own and not
    /// the highest of every phase before it (Linux: writing 5 to `/proc/self/clear_refs`).
    static func resetPeakMemory() {
        try? Data("5".utf8).write(to: URL(fileURLWithPath: "/proc/self/clear_refs"))
    }

    /// `VmHWM` of `/proc/self/status`, in kB: the peak since the last reset.
    private static func peakSinceResetKB() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return nil }
        return Int(line.dropFirst("VmHWM:".count).split(separator: " ").first ?? "")
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
