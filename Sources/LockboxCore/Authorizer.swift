import Foundation
import LockboxPostgres

/// One operator content operation to check and record.
struct AuthorizeCall: Sendable {
    var operatorAlias: String
    var tenant: String
    var workload: String
    var operation: String
    var resource: String
    var clientIP: String?
    var arguments: PGJSON
    /// nil when the clock could not be read (the function then refuses).
    var now: Date?
    /// A refusal decided before the database (e.g. not in the catalogue).
    var denial: String?

    var query: PGQuery {
        """
        SELECT allowed, audit_id, request_id, reason, access_ends_at FROM lockbox.authorize(\(operatorAlias), \(tenant),
            \(workload), \(operation), \(resource), \(clientIP.map(PGInet.init)), \(arguments), \(now), \(denial))
        """
    }
}

/// The database's answer for one call.
struct AuthorizeOutcome: Sendable {
    var allowed: Bool
    var auditID: Int64
    var requestID: UUID?
    var reason: String?
    var accessEndsAt: Date?

    init(_ row: PGRow) throws {
        (allowed, auditID, requestID, reason, accessEndsAt) = try row.decode((Bool, Int64, UUID?, String?, Date?).self)
    }
}

/// Runs `lockbox.authorize` — check and audit in one statement — with group commit.
///
/// Calls that arrive while a batch is being committed wait and go together in
/// the next batch: one pipelined transaction (BEGIN, one prepared
/// `lockbox.authorize` per call, COMMIT) in one round trip and one commit.
/// Every caller gets its answer only after that commit. If the batch fails,
/// every caller in it gets the error (fail closed); a refusal is a row, not an
/// error, so it never affects the others. A lone call runs as a single
/// autocommitted statement.
final class Authorizer: Sendable {
    let pool: PGPool
    let groupCommit: Bool
    /// The most calls in one batch.
    let maxBatch = 256
    private let queue: Queue

    init(pool: PGPool, groupCommit: Bool) {
        self.pool = pool
        self.groupCommit = groupCommit
        // Leave connections for the rest of the broker.
        self.queue = Queue(maxInFlight: max(1, min(4, pool.maxConnections / 2)))
    }

    func authorize(_ call: AuthorizeCall) async throws -> AuthorizeOutcome {
        guard groupCommit else { return try await run([call])[0].get() }
        return try await withCheckedThrowingContinuation { continuation in
            Task { await queue.enqueue(call, continuation, authorizer: self) }
        }
    }

    /// Runs a batch; one result per call.
    func run(_ calls: [AuthorizeCall]) async throws -> [Result<AuthorizeOutcome, any Error>] {
        try await pool.withConnection { connection in
            if calls.count == 1 {
                let rows = try await connection.query(calls[0].query, prepared: true)
                return [Result { try AuthorizeOutcome(rows.first!) }]
            }
            let statements: [PGQuery] = ["BEGIN"] + calls.map(\.query) + ["COMMIT"]
            let results = try await connection.pipeline(statements, prepared: true)
            if case .failure(let error) = results.last! {
                if case .failure(let first) = results.first(where: { if case .failure = $0 { true } else { false } }) {
                    throw first
                }
                throw error
            }
            return results.dropFirst().dropLast().map { result in
                Result { try AuthorizeOutcome(try result.get().first!) }
            }
        }
    }

    private actor Queue {
        typealias Waiter = (call: AuthorizeCall, continuation: CheckedContinuation<AuthorizeOutcome, any Error>)
        let maxInFlight: Int
        var pending: [Waiter] = []
        var inFlight = 0

        init(maxInFlight: Int) { self.maxInFlight = maxInFlight }

        func enqueue(
            _ call: AuthorizeCall, _ continuation: CheckedContinuation<AuthorizeOutcome, any Error>,
            authorizer: Authorizer
        ) {
            pending.append((call, continuation))
            startBatches(authorizer)
        }

        private func startBatches(_ authorizer: Authorizer) {
            while inFlight < maxInFlight, !pending.isEmpty {
                let batch = Array(pending.prefix(authorizer.maxBatch))
                pending.removeFirst(batch.count)
                inFlight += 1
                Task {
                    let results = await Self.execute(batch, authorizer)
                    self.finish(batch, results: results, authorizer: authorizer)
                }
            }
        }

        private static func execute(_ batch: [Waiter], _ authorizer: Authorizer) async -> Result<
            [Result<AuthorizeOutcome, any Error>], any Error
        > {
            do {
                return .success(try await authorizer.run(batch.map(\.call)))
            } catch {
                return .failure(error)
            }
        }

        private func finish(
            _ batch: [Waiter], results: Result<[Result<AuthorizeOutcome, any Error>], any Error>,
            authorizer: Authorizer
        ) {
            inFlight -= 1
            switch results {
            case .success(let outcomes):
                for (waiter, outcome) in zip(batch, outcomes) { waiter.continuation.resume(with: outcome) }
            case .failure(let error):
                for waiter in batch { waiter.continuation.resume(throwing: error) }
            }
            startBatches(authorizer)
        }
    }
}
