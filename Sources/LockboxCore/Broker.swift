import Foundation
import LockboxPostgres
import Logging

/// The broker: owns tenants, roles, operators, requests, decisions, grants,
/// notifications and the audit log, all in PostgreSQL.
///
/// Every state change and its audit record are written in one transaction;
/// decisions lock the request row so that concurrent decisions cannot both
/// win. If the database or the clock cannot be used, the answer is a refusal
/// with the reason (fail closed).
public final class Broker: Sendable {
    public let pool: PGPool
    public let clock: any LockboxClock
    /// The workloads requests may name (those of the registered connectors).
    public let workloads: Set<Workload>
    /// Their resource paths, which a request's scope must fit (``ResourcePath/checkScope(_:workload:)``).
    public let scopePaths: [Workload: ResourcePath]
    let logger: Logger
    let authorizer: Authorizer

    /// - Parameters:
    ///   - groupCommit: coalesce concurrent authorizations into one transaction
    ///     (see ``Authorizer``); off, each authorization commits on its own.
    ///   - authorizationTimeout: how long an operation's check and audit record may
    ///     take in the database before the operation is refused, naming the wait (a
    ///     lock held that long, a server that stalls or no longer answers); 1 ms to 1 hour.
    public init(
        pool: PGPool,
        clock: any LockboxClock = SystemClock(),
        workloads: Set<Workload> = Workload.builtIn,
        scopePaths: [Workload: ResourcePath] = [:],
        groupCommit: Bool = true,
        authorizationTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "lockbox.broker")
    ) {
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
    func transaction<T: Sendable>(_ body: (PGConnection) async throws -> T) async throws -> T {
        do {
            return try await pool.withTransaction(body)
        } catch let error as LockboxError {
            throw error
        } catch let error as PostgresError {
            throw Self.translate(error)
        }
    }

    /// Runs one statement outside an explicit transaction.
    func read(_ query: PGQuery) async throws -> PGRows {
        do {
            return try await pool.query(query)
        } catch let error as PostgresError {
            throw Self.translate(error)
        }
    }

    static func translate(_ error: PostgresError) -> LockboxError {
        if error.commitOutcomeUnknown {
            return LockboxError(
                .databaseUnavailable,
                "the connection to the lockbox database was lost while the change was being committed: it may or "
                    + "may not have been made; look (e.g. request show, audit search) before trying again",
                detail: error.debugDescription)
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
    /// that a deadline in a refusal reads the same as in `request show`.
    public static func timestamp(_ date: Date) -> String { timestampStyle.format(date) }
    private static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
}

