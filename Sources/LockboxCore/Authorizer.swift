import Foundation
import LockboxPostgres
import LockboxSQL
import Synchronization

/// One operator content operation to check and record.
struct AuthorizeCall: Sendable {
    var operatorAlias: String
    var tenant: String
    var workload: String
    var operation: String
    var resource: String
    var clientIP: String?
    var arguments: PGJSON
    /// nil when the clock could not be read (the database then refuses).
    var now: Date?
    /// A refusal decided before the database (e.g. not in the catalogue).
    var denial: String?
}

/// The database's answer for one call.
struct AuthorizeOutcome: Sendable {
    var allowed: Bool
    var auditID: Int64
    var requestID: UUID?
    var reason: String?
    var accessEndsAt: Date?
}

/// Runs the authorization statement — check and audit in one statement — with group commit.
///
/// Calls queue up; a few dedicated writer threads (``writers``, not tasks: each
/// blocks in libpq, so none of this runs on Swift's cooperative pool) each take
/// every call queued so far (up to ``maxBatch``), run them as one statement on
/// its own connection, and let the transaction commit; only then does every
/// caller in the batch get its answer. While one writer's batch is with the
/// server, the next calls gather for the other (see ``gather``). If the batch
/// fails, every caller in it gets the error (fail closed); a refusal is a row,
/// not an error, so it never affects the others. A lone call costs one statement
/// and one thread hand-off, as a plain query would.
///
/// Writer threads start when calls arrive and end after ``idleTimeout`` without
/// work, so an idle broker holds no thread and no connection.
final class Authorizer: Sendable {
    let pool: PGPool
    let groupCommit: Bool
    /// The most calls in one batch.
    static let maxBatch = 256
    /// The most batches committing at once, each by its own writer thread.
    /// Two: one commits (waiting for the WAL flush) while the other executes.
    let writers: Int
    /// How long a writer thread waits for work before it ends.
    static let idleTimeout: TimeInterval = 2
    /// How long a lone writer keeps looking for the next call before it sleeps.
    /// A sequential caller is back within that (its connector work), and a
    /// thread woken from sleep costs ~25 µs on these machines; with more than one
    /// writer running, calls are frequent and a writer never spins.
    static let spin: UInt64 = 150_000
    /// A spin step that takes longer than this (nanoseconds, 1 ms) means the
    /// spinning writer was descheduled behind other busy threads (a yield to the
    /// caller's own thread takes far less): it then stops spinning and does not
    /// spin again for ``spinPause``. On a saturated machine a spinning writer is
    /// often off the CPU when the call arrives, and nothing wakes it: with 4 busy
    /// loops on 2 cores a lone caller waited ~10 ms per call, against ~4 ms for
    /// raw; it now waits about as long as raw.
    static let contended: UInt64 = 1_000_000
    static let spinPause: UInt64 = 50_000_000
    /// How long a writer waits for its callers to come back while another
    /// writer's batch is with the server.
    ///
    /// A statement and its commit cost the server little more for many calls than
    /// for few (pgbench, 2 connections: 3,200 batches/s of 5 calls, 2,600 of 16),
    /// so throughput is about batch size × batches per second. A writer that has
    /// just answered n calls therefore waits until n calls are queued again (at
    /// least two) before it sends, up to this long, and only while the other
    /// writer keeps the server busy: the server is never left idle for it. At 16
    /// operators batches grew from ~5 to ~7.5 calls and throughput by ~25 %
    /// (`lockbox bench`, against the previous rule of waiting 200 µs for a second
    /// call). A lone writer never waits.
    static let gather: TimeInterval = 0.001
    /// How long an authorization may take in the database. The writers' connections
    /// set it as their `statement_timeout`, so that the server itself gives up on a
    /// batch held up (by a lock, or a server that stalls) and rolls it back, and they
    /// wait for the server's answer until ``clientDeadline`` after it, so that a
    /// server that no longer answers at all (a network partition) fails the batch
    /// too. A lone call without group commit waits ``timeout``, then cancels its
    /// statement. Either way every caller gets a refusal naming the wait, not an
    /// answer that never comes.
    let timeout: Duration
    /// How much longer than ``timeout`` a writer waits for the server's answer
    /// before it gives up on the connection (the server's own timeout answers first).
    static let clientGrace: Duration = .milliseconds(500)
    private let queue: CallQueue

    /// `sql/statements/authorize_batch.sql`: the check and the audit inserts of a
    /// batch, one statement.
    static let batchStatement = PGQuery(stringLiteral: LockboxSQL.statements["authorize_batch"]!)
    /// `sql/statements/authorize_one.sql`: the same for a lone call, without arrays.
    static let oneStatement = PGQuery(stringLiteral: LockboxSQL.statements["authorize_one"]!)

    init(pool: PGPool, groupCommit: Bool, timeout: Duration) {
        precondition(
            timeout >= .milliseconds(1) && timeout <= .seconds(3600), "an authorization timeout of 1 ms to 1 hour")
        self.pool = pool
        self.groupCommit = groupCommit
        self.timeout = timeout
        writers = min(2, pool.maxConnections)
        queue = CallQueue()
    }

    func authorize(_ call: AuthorizeCall) async throws -> AuthorizeOutcome {
        guard groupCommit else {
            // Each call commits on its own, on a pooled connection (waited for no longer either).
            let calls = [call]
            let rows = try await pool.withConnection(timeout: timeout) { [timeout] in
                try await $0.query(Self.query(calls), prepared: true, timeout: timeout)
            }
            return try Self.outcomes(rows, for: calls)[0].get()
        }
        return try await withCheckedThrowingContinuation { continuation in
            if queue.enqueue(Waiter(call: call, continuation: continuation), writers: writers) {
                let thread = Thread { [self] in writerLoop() }
                thread.name = "lockbox.authorizer"
                thread.start()
            }
        }
    }

    /// A writer thread: runs batches until no call arrives for ``idleTimeout``.
    ///
    /// Each batch is answered as soon as it has committed; the writer then
    /// gathers its next batch (``gather``). (Sending the calls already waiting
    /// before answering the finished batch was tried: it splits the callers into
    /// smaller batches and measured slower.)
    private func writerLoop() {
        var connection: PGConnection?
        var answered = 0
        while let batch = queue.nextBatch(
            limit: Self.maxBatch, spin: Self.spin, target: max(2, answered), gather: Self.gather,
            idleTimeout: Self.idleTimeout)
        {
            let calls = batch.map(\.call)
            let result = send(calls, on: &connection).flatMap { deadline in
                receive(calls, on: connection, deadline: deadline)
            }
            queue.received()
            Self.answer(batch, result)
            answered = batch.count
        }
    }

    typealias BatchResult = Result<[Result<AuthorizeOutcome, any Error>], any Error>

    private static func answer(_ batch: [Waiter], _ result: BatchResult) {
        for (index, waiter) in batch.enumerated() {
            switch result {
            case .success(let outcomes): waiter.continuation.resume(with: outcomes[index])
            case .failure(let error): waiter.continuation.resume(throwing: error)
            }
        }
    }

    /// Sends one batch as one statement (one transaction) on the writer's own
    /// connection: opened on first use (to the pool's database) and again after a
    /// failure, or after a request to cancel (which could reach the server late and
    /// cancel the next batch instead). Refused once the broker's pool is closed: a
    /// broker that was shut down authorizes nothing. Returns until when to wait for the answer: the
    /// connection's set-up, bounded as well, does not eat into it.
    private func send(_ calls: [AuthorizeCall], on connection: inout PGConnection?) -> Result<PGDeadline, any Error> {
        Result {
            guard !pool.isClosed else { throw PostgresError(kind: .client, message: "the connection pool is closed") }
            if connection?.isUsable != true || connection?.hasSentCancel == true {
                connection = nil
                let opened = try PGConnection.connectBlocking(pool.conninfo, database: pool.database)
                // A server that stops answering now must not hold the writer, and its batch, for ever.
                let setUp = PGDeadline(after: timeout + Self.clientGrace)
                // One plan for every batch size: planning this statement anew costs more than running it.
                try opened.queryBlocking("SET plan_cache_mode = force_generic_plan", deadline: setUp)
                try opened.queryBlocking(
                    "SELECT set_config('statement_timeout', \(PGDeadline.setting(timeout)), false)", deadline: setUp)
                connection = opened
            }
            let deadline = PGDeadline(after: timeout + Self.clientGrace)
            try connection!.sendBlocking(Self.query(calls), prepared: true, deadline: deadline)
            return deadline
        }
    }

    /// Waits for the batch's statement to finish and commit: each call's outcome.
    private func receive(_ calls: [AuthorizeCall], on connection: PGConnection?, deadline: PGDeadline)
        -> BatchResult
    {
        Result {
            guard let connection else { throw PostgresError(kind: .client, message: "no connection") }
            return try Self.outcomes(try connection.receiveBlocking(deadline: deadline), for: calls)
        }
    }

    /// Each call's outcome, by the position (`ord`, from 1) the statement returns.
    static func outcomes(_ rows: PGRows, for calls: [AuthorizeCall]) throws -> [Result<AuthorizeOutcome, any Error>] {
        guard rows.count == calls.count else {
            throw PostgresError(kind: .server, message: "authorize_batch returned \(rows.count) rows for \(calls.count)")
        }
        var outcomes = [Result<AuthorizeOutcome, any Error>](
            repeating: .failure(PostgresError(kind: .server, message: "authorize_batch returned no row for a call")),
            count: calls.count)
        for row in rows {
            let (ord, allowed, auditID, requestID, reason, ends) = try row.decode(
                (Int, Bool, Int64, UUID?, String?, Date?).self)
            guard (1...calls.count).contains(ord) else {
                throw PostgresError(kind: .server, message: "authorize_batch returned position \(ord) of \(calls.count)")
            }
            outcomes[ord - 1] = .success(
                AuthorizeOutcome(allowed: allowed, auditID: auditID, requestID: requestID, reason: reason, accessEndsAt: ends))
        }
        return outcomes
    }

    /// The statement for `calls`: the one-call statement for a lone call, else the batch statement.
    static func query(_ calls: [AuthorizeCall]) -> PGQuery {
        if calls.count == 1 {
            let call = calls[0]
            var query = oneStatement
            query.binds = [
                call.operatorAlias.pgBind, call.tenant.pgBind, call.workload.pgBind, call.operation.pgBind,
                call.resource.pgBind, call.clientIP.map(PGInet.init).pgBind, call.arguments.pgBind, call.now.pgBind,
                call.denial.pgBind,
            ]
            return query
        }
        var query = batchStatement
        query.binds = [
            PGArray(calls.map(\.operatorAlias)), PGArray(calls.map(\.tenant)), PGArray(calls.map(\.workload)),
            PGArray(calls.map(\.operation)), PGArray(calls.map(\.resource)), PGArray(calls.map(\.clientIP)),
            PGArray(calls.map(\.arguments.text)), PGArray(calls.map { $0.now.map(PGTimestamp.format) }),
            PGArray(calls.map(\.denial)),
        ].map(\.pgBind)
        return query
    }

    struct Waiter: Sendable {
        var call: AuthorizeCall
        var continuation: CheckedContinuation<AuthorizeOutcome, any Error>
    }

    /// The calls waiting for a writer, and the writers, behind one lock with a
    /// condition the idle writers wait on.
    private final class CallQueue: @unchecked Sendable {
        // Guarded by `condition`.
        private let condition = NSCondition()
        private var pending: [Waiter] = []
        /// Writer threads alive, how many of them are waiting for work, and how many
        /// hold a batch not yet answered by the server (the rest will look at the
        /// queue without being woken).
        private var running = 0
        private var idle = 0
        private var busy = 0
        /// How many idle writers are gathering a batch, and the fewest calls any
        /// of them waits for.
        private var gathering = 0
        private var gatherTarget = Int.max
        /// `pending.count`, readable without the lock by a spinning writer.
        private let queued = Atomic<Int>(0)
        /// Until when (uptime nanoseconds) a lone writer sleeps instead of spinning.
        private var spinPausedUntil: UInt64 = 0

        /// Queues a call and wakes an idle writer. Returns true when the caller
        /// must start a new writer thread: every running writer waits for the
        /// server, and fewer than `writers` run. (A writer that is not waiting for
        /// the server is about to look at the queue: starting another then would
        /// only split the calls between two threads that must both be woken.)
        func enqueue(_ waiter: Waiter, writers: Int) -> Bool {
            condition.lock()
            defer { condition.unlock() }
            pending.append(waiter)
            queued.store(pending.count, ordering: .releasing)
            if idle > 0 {
                // A writer gathering its batch needs waking only once the batch is
                // complete (not for every call on the way); one waiting for any
                // call, at once.
                if idle > gathering {
                    if gathering > 0 { condition.broadcast() } else { condition.signal() }
                } else if pending.count >= gatherTarget {
                    condition.signal()
                }
                return false
            }
            guard running == busy, running < writers else { return false }
            running += 1
            return true
        }

        /// The next batch for a writer, waiting for one; nil when the writer should
        /// end (no call for `idleTimeout`). A lone writer first spins for up to
        /// `spin` nanoseconds. While another writer's batch is with the server, a
        /// writer waits up to `gather` until `target` calls are queued.
        func nextBatch(
            limit: Int, spin: UInt64, target: Int, gather: TimeInterval, idleTimeout: TimeInterval
        ) -> [Waiter]? {
            condition.lock()
            defer { condition.unlock() }
            if pending.isEmpty && running == 1 && spin > 0
                && DispatchTime.now().uptimeNanoseconds >= spinPausedUntil
            {
                condition.unlock()
                var now = DispatchTime.now().uptimeNanoseconds
                let end = now + spin
                var contended = false
                while queued.load(ordering: .acquiring) == 0 && now < end {
                    sched_yield()
                    let before = now
                    now = DispatchTime.now().uptimeNanoseconds
                    contended = now - before > Authorizer.contended
                    if contended { break }
                }
                condition.lock()
                // Other threads wanted the CPU: a spinning writer only delays them, and
                // is itself descheduled when the call comes; sleep (to be woken by the
                // call) for a while instead.
                if contended { spinPausedUntil = now + Authorizer.spinPause }
            }
            idle += 1
            defer { idle -= 1 }
            let deadline = Date(timeIntervalSinceNow: idleTimeout)
            while true {
                while pending.isEmpty {
                    if !condition.wait(until: deadline) && pending.isEmpty {
                        running -= 1
                        return nil
                    }
                }
                if pending.count < target && busy > 0 {
                    gathering += 1
                    gatherTarget = min(gatherTarget, target)
                    let until = Date(timeIntervalSinceNow: gather)
                    while pending.count < target && condition.wait(until: until) {}
                    gathering -= 1
                    if gathering == 0 { gatherTarget = .max }
                }
                // Another writer may have taken the calls meanwhile: then wait again.
                if !pending.isEmpty { return take(limit: limit) }
            }
        }

        /// The writer's batch has its answer (or failed): it looks at the queue next.
        func received() {
            condition.lock()
            defer { condition.unlock() }
            busy -= 1
        }

        /// Takes up to `limit` waiting calls, oldest first, for a writer that
        /// sends them next. Call with the lock held.
        private func take(limit: Int) -> [Waiter] {
            let batch = Array(pending.prefix(limit))
            pending.removeFirst(batch.count)
            queued.store(pending.count, ordering: .releasing)
            busy += 1
            return batch
        }
    }
}
