import Foundation
import LockboxPostgres
import Logging

/// The broker: owns tenants, roles, operators, requests, decisions, grants,
/// notifications and the audit log, all in PostgreSQL.
///
/// Every state change and its audit record are written in one transaction;
/// decisions lock the request row so that concurrent decisions cannot both
/// win. If the database or the clock cannot be used, the answer is a refusal
/// with the reason (fail closed). Nothing waits for ever on the database: an
/// operation's check and record has ``authorizationTimeout``, every other statement
/// ``statementTimeout``.
public final class Broker: Sendable {
    public let pool: PGPool
    public let clock: any LockboxClock
    /// The workloads requests may name (those of the registered connectors).
    public let workloads: Set<Workload>
    /// Their resource paths, which a request's scope must fit (``ResourcePath/checkScope(_:workload:)``).
    public let scopePaths: [Workload: ResourcePath]
    /// How long each statement of every command but an operation's authorization (requests,
    /// decisions, the sweep, tenants, roles, operators, auditors, notifications, reads and
    /// searches), its transaction's BEGIN, COMMIT and ROLLBACK included, may wait for the
    /// database's answer, and how long a command may wait for a pooled connection.
    public let statementTimeout: Duration
    /// How long an operation's check and audit record may take in the database.
    public var authorizationTimeout: Duration { authorizer.timeout }
    /// ``statementTimeout`` unless one is given.
    public static let defaultStatementTimeout: Duration = .seconds(30)
    let logger: Logger
    let authorizer: Authorizer

    /// - Parameters:
    ///   - groupCommit: coalesce concurrent authorizations into one transaction
    ///     (see ``Authorizer``); off, each authorization commits on its own.
    ///   - authorizationTimeout: how long an operation's check and audit record may
    ///     take in the database before the operation is refused, naming the wait (a
    ///     lock held that long, a server that stalls or no longer answers); 1 ms to 1 hour.
    ///   - statementTimeout: how long any other statement may wait for the database's
    ///     answer, and a command for a pooled connection (``statementTimeout``), before the
    ///     command is refused naming the wait, with nothing done (a change's transaction
    ///     is rolled back, or its connection closed before COMMIT, which the server rolls
    ///     back), unless it was its COMMIT that did not answer: then it may or may not have
    ///     been made, and the refusal says so; 1 ms to 1 hour.
    public init(
        pool: PGPool,
        clock: any LockboxClock = SystemClock(),
        workloads: Set<Workload> = Workload.builtIn,
        scopePaths: [Workload: ResourcePath] = [:],
        groupCommit: Bool = true,
        authorizationTimeout: Duration = .seconds(10),
        statementTimeout: Duration = Broker.defaultStatementTimeout,
        logger: Logger = Logger(label: "lockbox.broker")
    ) {
        precondition(
            statementTimeout >= .milliseconds(1) && statementTimeout <= .seconds(3600),
            "a statement timeout of 1 ms to 1 hour")
        self.statementTimeout = statementTimeout
        self.pool = pool
        self.clock = clock
        self.workloads = workloads
        self.scopePaths = scopePaths
        self.logger = logger
        self.authorizer = Authorizer(pool: pool, groupCommit: groupCommit, timeout: authorizationTimeout)
    }

    // MARK: Plumbing

    /// The clock's time, rounded to the microsecond as PostgreSQL stores it, so that
    /// a comparison here and the same comparison in the database always agree.
    func now() throws -> Date {
        do {
            return PGTimestamp.date(microseconds: PGTimestamp.microseconds(try clock.now()))
        } catch let error as LockboxError {
            throw error
        } catch {
            throw LockboxError(.clockUnavailable, "the broker clock is unavailable: \(error)")
        }
    }

    /// Runs `body` in a transaction, turning database failures into `databaseUnavailable`.
    ///
    /// Each statement waits ``statementTimeout`` for its answer, and the server applies it
    /// too (`statement_timeout`), and ends the session if the broker goes silent in the
    /// transaction for as long (`idle_in_transaction_session_timeout`), releasing its locks
    /// when the broker is cut off from it.
    func transaction<T: Sendable>(_ body: (PGConnection) async throws -> T) async throws -> T {
        do {
            return try await pool.withTransaction(timeout: statementTimeout, idleTimeout: statementTimeout, body)
        } catch let error as LockboxError {
            throw error
        } catch let error as PostgresError {
            throw Self.translate(error)
        }
    }

    /// Runs one statement outside an explicit transaction.
    func read(_ query: PGQuery) async throws -> PGRows {
        do {
            return try await pool.query(query, timeout: statementTimeout)
        } catch let error as PostgresError {
            throw Self.translate(error, reading: true)
        }
    }

    /// Runs `body` on a leased connection, for reads of several statements.
    func reading<T: Sendable>(_ body: (PGConnection) async throws -> T) async throws -> T {
        do {
            return try await pool.withConnection(timeout: statementTimeout, body)
        } catch let error as PostgresError {
            throw Self.translate(error, reading: true)
        }
    }

    /// The refusal a database failure of a change, or of a read (`reading`), becomes:
    /// `databaseUnavailable`, saying what was done (nothing, or, when a COMMIT's outcome
    /// is unknown, maybe the change) and naming the wait that ran out, if one did.
    public static func translate(_ error: PostgresError, reading: Bool = false) -> LockboxError {
        if error.commitOutcomeUnknown {
            let what =
                if let timedOut = error.timedOut {
                    "the lockbox database did not answer the commit of the change within "
                        + PGDeadline.describe(timedOut.limit)
                } else if error.isConnectionFailure {
                    "the connection to the lockbox database was lost while the change was being committed"
                } else {
                    "the lockbox database could not confirm the commit of the change (\(error.message))"
                }
            return LockboxError(
                .databaseUnavailable,
                "\(what): it may or may not have been made; look (e.g. request show, audit search) before trying again",
                detail: error.debugDescription)
        }
        if let timedOut = error.timedOut {
            let wait: String
            let outcome: String
            switch timedOut {
            case .lease(let limit):
                wait = "no connection to the lockbox database became free within \(PGDeadline.describe(limit))"
                outcome = reading ? ": the read did not complete" : ", so nothing was done"
            case .answer(let limit):
                wait = "the lockbox database did not answer within \(PGDeadline.describe(limit))"
                outcome =
                    reading
                    ? ": the read did not complete"
                    : error.isConnectionFailure
                        ? ", so nothing was done: the connection was closed before the change was committed"
                        : ", so nothing was done: the change was cancelled and rolled back"
            }
            return LockboxError(.databaseUnavailable, wait + outcome, detail: error.debugDescription)
        }
        if error.isConnectionFailure {
            return LockboxError(
                .databaseUnavailable, "the lockbox database is unavailable, nothing was done: \(error.message)",
                detail: error.debugDescription)
        }
        return LockboxError(
            .databaseUnavailable, "the lockbox database refused the change, nothing was done: \(error.message)",
            detail: error.debugDescription)
    }

    // MARK: Audit

    /// One audit record to write in the current transaction.
    struct AuditEntry {
        var occurredAt: Date
        var tenantId: UUID?
        var recordType: String
        var user: String
        var actor: String
        var clientIP: String?
        var activity: String
        var item: String = ""
        var requestId: UUID?
        var workload: String?
        var result = "Succeeded"
        var parameters: [String: String]
    }

    func audit(_ entry: AuditEntry, on connection: PGConnection) async throws {
        let parameters = try PGJSON(encoding: entry.parameters)
        try await connection.query(
            """
            INSERT INTO lockbox.audit_records (occurred_at, tenant_id, record_type, user_id, actor, client_ip,
                activity, item, request_id, workload, result, parameters)
            VALUES (\(entry.occurredAt), \(entry.tenantId), \(entry.recordType), \(entry.user), \(entry.actor),
                \(entry.clientIP.map(PGInet.init)), \(entry.activity), \(entry.item), \(entry.requestId),
                \(entry.workload), \(entry.result), \(parameters))
            """, prepared: true)
    }

    /// A time as the broker's messages and the CLI print it: ISO 8601 in UTC with
    /// milliseconds (truncated), e.g. `2026-03-01T09:30:00.125Z`. One format, so
    /// that a deadline in a refusal reads the same as in `request show`, and as PostgreSQL's
    /// `to_char(…, 'MS')` reads it. The milliseconds are counted on the whole microseconds the
    /// database holds, not on the `Double` a `Date` is: `.001` is a hair below 0.001 s as a
    /// `Double`, and a formatter truncating that printed `.000`.
    public static func timestamp(_ date: Date) -> String {
        let (seconds, micros) = floorDivision(PGTimestamp.microseconds(date), by: 1_000_000)
        let whole = secondsStyle.format(Date(timeIntervalSince1970: Double(seconds)))
        let milliseconds = String(micros / 1000)
        return whole.dropLast() + "." + String(repeating: "0", count: 3 - milliseconds.count) + milliseconds + "Z"
    }
    /// Whole seconds: `2026-03-01T09:30:00Z`.
    private static let secondsStyle = Date.ISO8601FormatStyle()

    /// The quotient rounded down and a remainder in `0..<divisor` (times before 1970 included).
    private static func floorDivision(_ value: Int64, by divisor: Int64) -> (Int64, Int64) {
        let (quotient, remainder) = value.quotientAndRemainder(dividingBy: divisor)
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }
}

