import CLibPQ
import Dispatch
import Foundation
import Logging
import Synchronization

/// One libpq connection.
///
/// Every libpq call runs on the connection's own serial dispatch queue, never on
/// Swift's cooperative thread pool; the async methods suspend until it is done.
/// A connection serves one caller at a time: lease it from a ``PGPool`` or keep
/// it to yourself.
public final class PGConnection: @unchecked Sendable {
    // All mutable state below is touched only on `queue`.
    private let queue: DispatchQueue
    private var handle: OpaquePointer?
    private var preparedStatements: [String: String] = [:]
    /// The timeout the statement in flight ran past, if it did: it was asked to cancel, or
    /// its answer came once the deadline had passed (the server's own `statement_timeout`,
    /// set no shorter, may answer first).
    private var timedOutAfter: Duration?
    /// The last WARNING the server sent with the answer to the statement in flight, if any.
    private var warning: String?
    private let logger: Logger
    /// ``defaultTimeout``, readable and settable from any task.
    private let defaultTimeoutValue = Mutex<Duration?>(nil)
    /// Whether a request to cancel a statement was ever sent on this connection.
    private let cancelSent = Atomic<Bool>(false)
    /// libpq's status after the last call, readable without hopping onto `queue`.
    private let usable = Atomic<Bool>(true)
    /// libpq's transaction status after the last call (`PQtransactionStatus`), likewise.
    private let transactionStatus = Atomic<UInt32>(PQTRANS_IDLE.rawValue)

    /// Session settings every connection gets, so text results decode the same way,
    /// and so that a commit returns only once it is durable: a server, database or
    /// role that defaults `synchronous_commit` to `off` would let the broker hand out
    /// content before its audit record is on disk. Any other value (`local`, `on`,
    /// `remote_write`, `remote_apply`) flushes locally and is kept. Either way it is
    /// set for the session, so a later change of the server's configuration (a
    /// reload with `off`) does not reach connections already open.
    static let sessionSettings =
        "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601'; "
        + "SET extra_float_digits = 3; "
        + "SELECT set_config('synchronous_commit', CASE current_setting('synchronous_commit') "
        + "WHEN 'off' THEN 'on' ELSE current_setting('synchronous_commit') END, false)"

    /// Seconds libpq waits for a server to accept a connection (its `connect_timeout`)
    /// unless the conninfo or `PGCONNECT_TIMEOUT` says otherwise: libpq's own default is
    /// to wait for as long as the network does, and a server that never answers would
    /// leave every caller waiting instead of refused.
    public static let defaultConnectTimeout = 10

    private init(handle: OpaquePointer, logger: Logger) {
        self.handle = handle
        self.logger = logger
        self.queue = DispatchQueue(label: "lockbox.pg.connection")
    }

    /// A connection dropped without ``close()`` (a pool discarding it, say) is closed on a
    /// queue of its own: the last reference may go on a thread of Swift's cooperative pool,
    /// and closing sends the server a goodbye (not on Dispatch's global queue either, which is,
    /// on Linux, the pool Swift's tasks run on: see ``connect(_:database:connectTimeout:logger:)``).
    deinit {
        if let handle { Self.finishElsewhere(handle) }
    }

    /// Opens a connection.
    ///
    /// - Parameter conninfo: a `key=value` conninfo string or a `postgresql://` URL.
    ///   When nil or empty, libpq's environment (`PGHOST`, `PGDATABASE`, `.pgpass`, …)
    ///   applies, as it does for psql.
    /// - Throws: ``PostgresError`` of kind `.connection` with libpq's message.
    /// - Parameter database: when set, overrides the database named by `conninfo`.
    /// - Parameter connectTimeout: seconds to wait for the server to accept the
    ///   connection, unless the conninfo or `PGCONNECT_TIMEOUT` sets it (libpq takes at
    ///   least 2).
    public static func connect(
        _ conninfo: String? = nil, database: String? = nil, connectTimeout: Int = defaultConnectTimeout,
        logger: Logger = Logger(label: "lockbox.postgres")
    ) async throws -> PGConnection {
        try await withCheckedThrowingContinuation { continuation in
            // On a queue of its own, as every other libpq call: libpq waits for the server here (up
            // to the connect timeout), and Dispatch's global queue is, on Linux, the pool Swift's
            // tasks run on (as wide as the cores, grown by one thread a second while all of them
            // are blocked): two connections waiting there held up every task of the process.
            DispatchQueue(label: "lockbox.pg.connect").async {
                continuation.resume(
                    with: Result {
                        try connectBlocking(conninfo, database: database, connectTimeout: connectTimeout, logger: logger)
                    })
            }
        }
    }

    /// ``connect(_:database:connectTimeout:logger:)`` on the calling thread, which waits for the server.
    ///
    /// For dedicated threads only, never from a task (see ``queryBlocking(_:prepared:)``).
    public static func connectBlocking(
        _ conninfo: String? = nil, database: String? = nil, connectTimeout: Int = defaultConnectTimeout,
        logger: Logger = Logger(label: "lockbox.postgres")
    ) throws -> PGConnection {
        var keys: [String] = []
        var values: [String] = []
        // Before the conninfo, which may set its own.
        if appliesDefaultConnectTimeout(to: conninfo, environment: ProcessInfo.processInfo.environment) {
            keys.append("connect_timeout")
            values.append(String(connectTimeout))
        }
        if let conninfo, !conninfo.isEmpty {
            keys.append("dbname")
            values.append(conninfo)
        }
        if let database {
            keys.append("dbname")
            values.append(database)
        }
        keys.append("fallback_application_name")
        values.append("lockbox")
        // Last, so that it overrides the conninfo's and `PGCLIENTENCODING`: Swift sends and reads
        // text as UTF-8, and a server told the client uses another encoding converts it as such
        // (LATIN1: `Zoë` stored as `ZoÃ«`, read back the same way, so only other readers of the
        // audit log see it; WIN1252: refused).
        keys.append("client_encoding")
        values.append("UTF8")
        let handle: OpaquePointer? = withCStringArray(keys) { keyPointers in
            withCStringArray(values) { valuePointers in
                PQconnectdbParams(keyPointers, valuePointers, 1)
            }
        }
        guard let handle else {
            throw PostgresError(kind: .connection, message: "libpq could not allocate a connection")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(handle)).trimmingCharacters(in: .whitespacesAndNewlines)
            PQfinish(handle)
            throw PostgresError(kind: .connection, message: "cannot connect to PostgreSQL: \(message)")
        }
        let connection = PGConnection(handle: handle, logger: logger)
        // Notices are dropped, but for warnings, which ``commit()`` reads. The receiver runs
        // inside libpq calls, so on the connection's queue; `abandon` unhooks it before the
        // handle outlives the connection.
        PQsetNoticeReceiver(
            handle,
            { argument, result in
                guard let argument, let result,
                    let severity = PQresultErrorField(result, Int32(UInt8(ascii: "V"))),
                    String(cString: severity) == "WARNING"
                else { return }
                let connection = Unmanaged<PGConnection>.fromOpaque(argument).takeUnretainedValue()
                var text = String(cString: PQresultErrorField(result, Int32(UInt8(ascii: "M"))) ?? severity)
                if let detail = PQresultErrorField(result, Int32(UInt8(ascii: "D"))) {
                    text += " (\(String(cString: detail)))"
                }
                connection.warning = text
            }, Unmanaged.passUnretained(connection).toOpaque())
        // A server that lets the client in and then stops answering must not hold it here for ever.
        try connection.execBlocking(
            PGQuery(stringLiteral: sessionSettings), simple: true,
            deadline: PGDeadline(after: .seconds(max(2, connectTimeout))))
        return connection
    }

    /// Whether ``defaultConnectTimeout`` applies to a connection to `conninfo` under
    /// `environment`: not when `PGCONNECT_TIMEOUT` is set, nor when the settings come
    /// from a service file (`service=` in `conninfo`, or `PGSERVICE`), since libpq reads
    /// a service file only for what the caller does not set, and would ignore its
    /// `connect_timeout`. (A `connect_timeout` in `conninfo` itself wins anyway.)
    public static func appliesDefaultConnectTimeout(to conninfo: String?, environment: [String: String]) -> Bool {
        if !environment["PGCONNECT_TIMEOUT", default: ""].isEmpty || !environment["PGSERVICE", default: ""].isEmpty {
            return false
        }
        guard let conninfo, !conninfo.isEmpty else { return true }
        var message: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &message) else {
            // Not key=value pairs nor a URL: libpq will refuse it, or take it as a database name.
            if let message { PQfreemem(message) }
            return true
        }
        defer { PQconninfoFree(options) }
        var option = options
        while let keyword = option.pointee.keyword {
            if String(cString: keyword) == "service", let value = option.pointee.val, value.pointee != 0 { return false }
            option += 1
        }
        return true
    }

    /// The value libpq uses for the connection option `keyword` (e.g. `connect_timeout`),
    /// from the conninfo, the environment, a service file or its default; nil if unset.
    public func option(_ keyword: String) async -> String? {
        await withCheckedContinuation { continuation in
            queue.async {
                guard let handle = self.handle, let options = PQconninfo(handle) else {
                    return continuation.resume(returning: nil)
                }
                defer { PQconninfoFree(options) }
                var option = options
                while let name = option.pointee.keyword {
                    if String(cString: name) == keyword {
                        return continuation.resume(returning: option.pointee.val.map { String(cString: $0) })
                    }
                    option += 1
                }
                continuation.resume(returning: nil)
            }
        }
    }

    /// Closes the connection. Further calls fail with a connection error.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async {
                if let handle = self.handle { PQfinish(handle) }
                self.handle = nil
                self.usable.store(false, ordering: .releasing)
                continuation.resume()
            }
        }
    }

    /// False once the connection is closed or libpq reports it broken.
    public var isUsable: Bool {
        usable.load(ordering: .acquiring)
    }

    /// True while a transaction is open on the connection, one that a failed statement
    /// aborted included: whatever runs next on it joins that transaction.
    public var isInTransaction: Bool {
        let status = transactionStatus.load(ordering: .acquiring)
        return status != PQTRANS_IDLE.rawValue && status != PQTRANS_UNKNOWN.rawValue
    }

    /// True while the open transaction was aborted by a failed statement: the server
    /// ignores everything until it ends, and a COMMIT rolls it back.
    var isInFailedTransaction: Bool {
        transactionStatus.load(ordering: .acquiring) == PQTRANS_INERROR.rawValue
    }

    /// How long each statement sent without a timeout of its own (``query(_:prepared:timeout:)``,
    /// ``execute(script:)``, a transaction's BEGIN, COMMIT and ROLLBACK) waits for the
    /// server's answer, as a `timeout` does; nil (the default), for as long as the network
    /// does. ``PGPool/withConnection(timeout:_:)`` sets it for the lease.
    public var defaultTimeout: Duration? {
        get { defaultTimeoutValue.withLock { $0 } }
        set { defaultTimeoutValue.withLock { $0 = newValue } }
    }

    /// True once a request to cancel a statement was sent on this connection. Sent on a
    /// connection of its own, it may reach the server late and cancel a later statement
    /// instead: a pool does not hand such a connection out again.
    public var hasSentCancel: Bool {
        cancelSent.load(ordering: .acquiring)
    }

    // MARK: Queries

    /// Runs one parameterised statement and returns its rows.
    ///
    /// - Parameter prepared: when true, the statement is prepared once on this
    ///   connection (named after its SQL) and executed by name afterwards.
    /// - Parameter timeout: when set (by default ``defaultTimeout``), how long to wait for
    ///   the server's answer: past it the server is asked to cancel the statement and the
    ///   call reports how it ended (cancelled: SQLSTATE 57014, naming the timeout, with
    ///   ``PostgresError/timedOut`` set; or done, if it had finished or was committing); a
    ///   server that does not answer the cancel either within ``PGDeadline/grace`` has its
    ///   connection closed, and the call fails with a connection error (``PostgresError/timedOut``
    ///   set too), instead of waiting for as long as the network does.
    @discardableResult
    public func query(_ query: PGQuery, prepared: Bool = false, timeout: Duration? = nil) async throws -> PGRows {
        let deadline = (timeout ?? defaultTimeout).map { PGDeadline(after: $0) }
        return try await onQueue { try self.execBlocking(query, prepared: prepared, deadline: deadline) }
    }

    /// Runs one statement on the calling thread, which waits for the server's answer.
    ///
    /// For dedicated threads only (such as the broker's group-commit writers): never
    /// call it from a task, which would block a thread of Swift's cooperative pool;
    /// tasks use ``query(_:prepared:)``. Calls are still serialised with the
    /// connection's other work.
    /// - Parameter deadline: when set, how long to wait for the server's answer (see ``PGDeadline``).
    @discardableResult
    public func queryBlocking(_ query: PGQuery, prepared: Bool = false, deadline: PGDeadline? = nil) throws -> PGRows {
        try queue.sync {
            try self.tracked { try self.execBlocking(query, prepared: prepared, deadline: deadline) }.get()
        }
    }

    /// Sends one statement without waiting for its result, which
    /// ``receiveBlocking()`` then reads: the caller can do other work while the
    /// server runs it. Nothing else may use the connection in between.
    ///
    /// For dedicated threads only, like ``queryBlocking(_:prepared:)``.
    public func sendBlocking(_ query: PGQuery, prepared: Bool = false, deadline: PGDeadline? = nil) throws {
        try queue.sync {
            try self.tracked {
                let handle = try self.liveHandle()
                let name = prepared ? try self.prepareIfNeeded(query, handle: handle, deadline: deadline) : nil
                try self.send(handle, deadline: deadline, "cannot send the statement") {
                    try Self.send(query, name: name, handle: handle)
                }
            }.get()
        }
    }

    /// The result of the statement sent with ``sendBlocking(_:prepared:deadline:)``,
    /// waiting for it (until `deadline`, when set: see ``PGDeadline``).
    public func receiveBlocking(deadline: PGDeadline? = nil) throws -> PGRows {
        try queue.sync {
            try self.tracked {
                let handle = try self.liveHandle()
                return try self.consume(try self.statementResult(handle, deadline: deadline), handle: handle)
            }.get()
        }
    }

    /// Runs SQL without parameters, possibly several statements separated by `;`
    /// (simple query protocol). Used for migrations and session set-up. Waits for the
    /// answer for ``defaultTimeout``, when set (see ``query(_:prepared:timeout:)``).
    public func execute(script: String) async throws {
        let deadline = defaultTimeout.map { PGDeadline(after: $0) }
        try await onQueue {
            _ = try self.execBlocking(PGQuery(stringLiteral: script), simple: true, deadline: deadline)
        }
    }

    /// Sends all the statements in one round trip (libpq pipeline mode) and
    /// returns one result per statement. Statements after a failed one are
    /// reported as failed with the first error (the server skips them). Unless the
    /// statements manage their own transactions, they all run in one (the
    /// pipeline's implicit transaction, up to its end): a failure then also rolls
    /// back the statements before it, although their results are reported. So
    /// nothing of a pipeline with a failure is kept, unless a `COMMIT` among its
    /// statements ran before the failure. It waits for the answers for as long as the
    /// network does (``defaultTimeout`` does not apply).
    public func pipeline(_ queries: [PGQuery], prepared: Bool = false) async throws -> [Result<PGRows, PostgresError>] {
        try await onQueue { try self.pipelineBlocking(queries, prepared: prepared) }
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws.
    ///
    /// - Parameter timeout: when set, ``defaultTimeout`` while the transaction runs: how
    ///   long each of its statements, BEGIN, COMMIT and ROLLBACK included, waits for the
    ///   server's answer. Whichever applies is also set as the transaction's
    ///   `statement_timeout` (rounded up to the millisecond), so that the server gives up
    ///   on a statement held up (by a lock, say) by itself, even when the client can no
    ///   longer reach it.
    /// - Parameter idleTimeout: when set, the transaction's `idle_in_transaction_session_timeout`:
    ///   the server ends the session, and so the transaction and its locks, once the client
    ///   has sent nothing for that long, as when it is cut off. Leave it unset when `body`
    ///   does work of its own, between statements, that may take longer.
    /// - Throws: the error of `body`; or, when `body` returns but a statement in the
    ///   transaction failed (an error `body` handled), a ``PostgresError`` saying that
    ///   nothing was committed: the server rolls such a transaction back at COMMIT. When
    ///   the COMMIT's outcome is unknown (its connection lost before its answer, or
    ///   answered with a warning: see ``PostgresError/commitOutcomeUnknown``), an error saying so.
    @discardableResult
    public func withTransaction<T: Sendable>(
        isolation: String = "READ COMMITTED", timeout: Duration? = nil, idleTimeout: Duration? = nil,
        _ body: (PGConnection) async throws -> T
    ) async throws -> T {
        let previous = defaultTimeout
        if let timeout { defaultTimeout = timeout }
        defer { defaultTimeout = previous }
        try await execute(script: "BEGIN ISOLATION LEVEL \(isolation)")
        let value: T
        do {
            let limit = defaultTimeout
            if limit != nil || idleTimeout != nil {
                // NULL keeps the session's value.
                let statement = limit.map(PGDeadline.setting)
                let idle = idleTimeout.map(PGDeadline.setting)
                try await query(
                    """
                    SELECT set_config('statement_timeout', coalesce(\(statement), current_setting('statement_timeout')),
                            true),
                        set_config('idle_in_transaction_session_timeout',
                            coalesce(\(idle), current_setting('idle_in_transaction_session_timeout')), true)
                    """)
            }
            value = try await body(self)
        } catch {
            try? await execute(script: "ROLLBACK")
            throw error
        }
        if isInFailedTransaction {
            try? await execute(script: "ROLLBACK")
            throw PostgresError(
                kind: .server,
                message: "a statement in the transaction failed, so the transaction was rolled back: nothing in it was "
                    + "committed")
        }
        do {
            try await commit()
        } catch var error as PostgresError where error.isConnectionFailure && !error.commitOutcomeUnknown {
            // The server may have committed before the connection went: the caller must not be
            // told that nothing was done (it would do it again).
            error.commitOutcomeUnknown = true
            error.message = "the connection was lost during COMMIT, so whether it was committed is unknown: \(error.message)"
            throw error
        }
        return value
    }

    /// COMMIT, waiting for ``defaultTimeout`` when set. A COMMIT the server answers with a
    /// warning has an unknown outcome: asked to cancel by the client past the timeout while
    /// it waited for a synchronous standby (the server's own `statement_timeout` does not
    /// apply to a COMMIT's wait), the server stops waiting and warns that the transaction
    /// committed locally but may not have reached the standby.
    private func commit() async throws {
        let deadline = defaultTimeout.map { PGDeadline(after: $0) }
        try await onQueue {
            try self.execBlocking("COMMIT", simple: true, deadline: deadline)
            guard let warning = self.warning else { return }
            let late = self.timedOutAfter.map { "did not answer COMMIT within \(PGDeadline.describe($0)), then " } ?? ""
            var error = PostgresError(
                kind: .server,
                message: "the database \(late)answered COMMIT with a warning, so whether it was committed is unknown: "
                    + warning)
            error.commitOutcomeUnknown = true
            error.timedOut = self.timedOutAfter.map { .answer(after: $0) }
            throw error
        }
    }

    // MARK: Blocking core (runs on `queue`)

    private func onQueue<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: self.tracked(work)) }
        }
    }

    /// Runs `work` (on `queue`) and records whether the connection is still usable.
    private func tracked<T>(_ work: () throws -> T) -> Result<T, any Error> {
        let result = Result { try work() }
        usable.store(handle.map { PQstatus($0) == CONNECTION_OK } ?? false, ordering: .releasing)
        transactionStatus.store(
            (handle.map { PQtransactionStatus($0) } ?? PQTRANS_UNKNOWN).rawValue, ordering: .releasing)
        return result
    }

    private func liveHandle() throws -> OpaquePointer {
        guard let handle else { throw PostgresError(kind: .connection, message: "connection is closed") }
        return handle
    }

    @discardableResult
    func execBlocking(
        _ query: PGQuery, prepared: Bool = false, simple: Bool = false, deadline: PGDeadline? = nil
    ) throws -> PGRows {
        let handle = try liveHandle()
        timedOutAfter = nil
        warning = nil
        let result: OpaquePointer?
        if let deadline {
            if simple {
                try send(handle, deadline: deadline, "cannot send the statement") { PQsendQuery(handle, query.sql) == 1 }
            } else {
                let name = prepared ? try prepareIfNeeded(query, handle: handle, deadline: deadline) : nil
                try send(handle, deadline: deadline, "cannot send the statement") {
                    try Self.send(query, name: name, handle: handle)
                }
            }
            result = try statementResult(handle, deadline: deadline)
        } else if simple {
            result = PQexec(handle, query.sql)
        } else if prepared {
            let name = try prepareIfNeeded(query, handle: handle)
            result = try Self.withParameters(query.binds) { _, values, lengths, formats in
                PQexecPrepared(handle, name, Int32(query.binds.count), values, lengths, formats, 0)
            }
        } else {
            result = try Self.withParameters(query.binds) { types, values, lengths, formats in
                PQexecParams(handle, query.sql, Int32(query.binds.count), types, values, lengths, formats, 0)
            }
        }
        return try consume(result, handle: handle)
    }

    private func prepareIfNeeded(_ query: PGQuery, handle: OpaquePointer, deadline: PGDeadline? = nil) throws -> String {
        if let name = preparedStatements[query.sql] { return name }
        let name = "lockbox_\(preparedStatements.count + 1)"
        let types = query.binds.map { Oid($0.type) }
        let result: OpaquePointer?
        if let deadline {
            try send(handle, deadline: deadline, "cannot send the statement to prepare") {
                types.withUnsafeBufferPointer { typePointer in
                    PQsendPrepare(handle, name, query.sql, Int32(types.count), typePointer.baseAddress) == 1
                }
            }
            result = try statementResult(handle, deadline: deadline)
        } else {
            result = types.withUnsafeBufferPointer { typePointer in
                PQprepare(handle, name, query.sql, Int32(types.count), typePointer.baseAddress)
            }
        }
        _ = try consume(result, handle: handle)
        preparedStatements[query.sql] = name
        return name
    }

    private func pipelineBlocking(_ queries: [PGQuery], prepared: Bool) throws -> [Result<PGRows, PostgresError>] {
        let handle = try liveHandle()
        var names: [String?] = []
        for query in queries {
            names.append(prepared ? try prepareIfNeeded(query, handle: handle) : nil)
        }
        for query in queries { try Self.checkParameters(query.binds) }
        guard PQenterPipelineMode(handle) == 1 else { throw connectionError(handle, "cannot enter pipeline mode") }
        defer { PQexitPipelineMode(handle) }
        for (query, name) in zip(queries, names) {
            guard try Self.send(query, name: name, handle: handle) else {
                throw connectionError(handle, "cannot send pipelined statement")
            }
        }
        guard PQpipelineSync(handle) == 1 else { throw connectionError(handle, "cannot sync pipeline") }
        var results: [Result<PGRows, PostgresError>] = []
        var firstError: PostgresError?
        for _ in queries {
            guard let result = PQgetResult(handle) else { throw connectionError(handle, "pipeline ended early") }
            let status = PQresultStatus(result)
            if status == PGRES_PIPELINE_ABORTED {
                PQclear(result)
                results.append(.failure(firstError ?? PostgresError(kind: .server, message: "pipeline aborted")))
            } else {
                do {
                    results.append(.success(try rows(from: result, handle: handle)))
                } catch let error as PostgresError {
                    firstError = firstError ?? error
                    results.append(.failure(error))
                }
                PQclear(result)
            }
            // Each statement's results end with a NULL.
            while let extra = PQgetResult(handle) { PQclear(extra) }
        }
        // The sync point.
        while let result = PQgetResult(handle) {
            let status = PQresultStatus(result)
            PQclear(result)
            if status == PGRES_PIPELINE_SYNC { break }
        }
        return results
    }

    /// The result of the statement sent last (of several, as `PQexec` does: the first
    /// error, else the last), waiting for it (until `deadline`, when set), and then for
    /// the end of its results, so the connection is ready again.
    private func statementResult(_ handle: OpaquePointer, deadline: PGDeadline?) throws -> OpaquePointer {
        timedOutAfter = nil
        try waitForResult(handle, deadline: deadline)
        guard var kept = PQgetResult(handle) else { throw connectionError(handle, "no statement was sent") }
        do {
            // A statement's results end with a NULL.
            while true {
                try waitForResult(handle, deadline: deadline)
                guard let extra = PQgetResult(handle) else { break }
                if Self.isError(kept) {
                    PQclear(extra)
                } else {
                    PQclear(kept)
                    kept = extra
                }
            }
        } catch {
            PQclear(kept)
            throw error
        }
        if let deadline, timedOutAfter == nil, ContinuousClock.now >= deadline.instant {
            timedOutAfter = deadline.timeout
        }
        return kept
    }

    private static func isError(_ result: OpaquePointer) -> Bool {
        let status = PQresultStatus(result)
        return status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE
    }

    /// Sends a statement with `send` (a `PQsend…` call; false if libpq refused), and, with a
    /// deadline, returns only once all of it is written, in nonblocking mode, waiting for
    /// the server to read it until the deadline: in blocking mode libpq waits for as long
    /// as the network does to write what the socket's buffers do not take at once (a
    /// statement of more than a few hundred kB, or any once a server stopped reading, as a
    /// stopped server process or a network that drops everything). Past the deadline the
    /// connection is closed (``abandon(_:)``), the statement incomplete: nothing of it can
    /// have been committed, since closing it rolls back whatever it began.
    private func send(
        _ handle: OpaquePointer, deadline: PGDeadline?, _ failure: String, _ send: () throws -> Bool
    ) throws {
        guard let deadline else {
            guard try send() else { throw connectionError(handle, failure) }
            return
        }
        guard PQsetnonblocking(handle, 1) == 0 else { throw connectionError(handle, failure) }
        // Back to blocking mode for the calls without a deadline; all is written by then.
        defer { if self.handle != nil { PQsetnonblocking(handle, 0) } }
        guard try send() else { throw connectionError(handle, failure) }
        while true {
            let flushed = PQflush(handle)
            if flushed == 0 { return }
            if flushed < 0 { throw connectionError(handle, failure) }
            let remaining = ContinuousClock.now.duration(to: deadline.instant)
            guard remaining > .zero else {
                abandon(handle)
                var error = PostgresError(
                    kind: .connection,
                    message: "the database did not take the statement within \(PGDeadline.describe(deadline.timeout)) "
                        + "(it stopped reading): the connection was closed before the statement was sent in full, so "
                        + "nothing of it was committed")
                error.timedOut = .answer(after: deadline.timeout)
                throw error
            }
            let ready = try waitForSocket(handle, Int16(POLLIN | POLLOUT), within: remaining)
            // The server may answer before it reads everything (an error, a shutdown): libpq reads it.
            if ready & Int16(POLLIN) != 0 && PQconsumeInput(handle) != 1 {
                throw connectionError(handle, failure)
            }
        }
    }

    /// Returns once libpq can hand over the next result without blocking, or at once
    /// without a deadline (PQgetResult then waits). Past the deadline the server is
    /// asked to cancel the statement, and its answer is awaited for the deadline's
    /// `grace`: the statement may have finished, or be committing, when the cancel
    /// reaches it, and the caller must learn which (a statement reported as failed
    /// must not have committed). With no answer by then the connection is closed
    /// (``abandon(_:)``) and this throws a connection error saying the outcome is unknown.
    private func waitForResult(_ handle: OpaquePointer, deadline: PGDeadline?) throws {
        guard let deadline else { return }
        while PQisBusy(handle) == 1 {
            let until = timedOutAfter == nil ? deadline.instant : deadline.instant + deadline.grace
            let remaining = ContinuousClock.now.duration(to: until)
            guard remaining > .zero else {
                if timedOutAfter == nil {
                    timedOutAfter = deadline.timeout
                    requestCancel(handle)
                    continue
                }
                abandon(handle)
                var error = PostgresError(
                    kind: .connection,
                    message: "the database did not answer within \(PGDeadline.describe(deadline.timeout)), nor "
                        + "within \(PGDeadline.describe(deadline.grace)) to a request to cancel the statement: the "
                        + "connection was closed, and whether the statement completed is unknown")
                error.timedOut = .answer(after: deadline.timeout)
                throw error
            }
            if try waitForSocket(handle, Int16(POLLIN), within: remaining) != 0 && PQconsumeInput(handle) != 1 {
                throw connectionError(handle, "lost the connection while waiting for the answer")
            }
        }
    }

    /// Waits up to `remaining` for the connection's socket to be ready for `events`: the
    /// events that are (`revents`: none at the timeout or on a signal). A failing `poll`
    /// closes the connection (``abandon(_:)``).
    private func waitForSocket(_ handle: OpaquePointer, _ events: Int16, within remaining: Duration) throws -> Int16 {
        let milliseconds = Int32(clamping: PGDeadline.milliseconds(remaining) + 1)
        var descriptor = pollfd(fd: PQsocket(handle), events: events, revents: 0)
        let ready = poll(&descriptor, 1, milliseconds)
        if ready < 0 && errno != EINTR {
            let reason = String(cString: strerror(errno))
            abandon(handle)
            throw PostgresError(kind: .connection, message: "cannot wait for the server: \(reason)")
        }
        return ready > 0 ? descriptor.revents : 0
    }

    /// Asks the server to cancel the statement in flight, on a thread of its own: the
    /// request opens a connection of its own and may wait as long as the network does.
    /// The cancel object is libpq's copy of what it needs, independent of the connection.
    private func requestCancel(_ handle: OpaquePointer) {
        cancelSent.store(true, ordering: .releasing)
        guard let cancel = PQgetCancel(handle) else { return }
        let request = CancelRequest(cancel: cancel)
        let thread = Thread {
            var message = [CChar](repeating: 0, count: 256)
            _ = PQcancel(request.cancel, &message, Int32(message.count))
            PQfreeCancel(request.cancel)
        }
        thread.name = "lockbox.pg.cancel"
        thread.start()
    }

    /// Gives up on a connection whose statement got no answer, even to a cancel
    /// request: closes it elsewhere (``finishElsewhere(_:)``);
    /// the connection is unusable from now on.
    private func abandon(_ handle: OpaquePointer) {
        self.handle = nil
        preparedStatements.removeAll()
        usable.store(false, ordering: .releasing)
        Self.finishElsewhere(handle)
    }

    /// Closes a connection nothing uses any more on a queue of its own (closing may wait for
    /// the network), after unhooking the notice receiver, which points at this object.
    private static func finishElsewhere(_ handle: OpaquePointer) {
        PQsetNoticeReceiver(handle, { _, _ in }, nil)
        let abandoned = Abandoned(handle: handle)
        DispatchQueue(label: "lockbox.pg.close").async { PQfinish(abandoned.handle) }
    }

    /// A cancel request handed to the thread that sends it.
    private struct CancelRequest: @unchecked Sendable {
        let cancel: OpaquePointer
    }

    /// A connection handed to the thread that closes it; nothing else uses it any more.
    private struct Abandoned: @unchecked Sendable {
        let handle: OpaquePointer
    }

    private func consume(_ result: OpaquePointer?, handle: OpaquePointer) throws -> PGRows {
        guard let result else { throw connectionError(handle, "no result") }
        defer { PQclear(result) }
        return try rows(from: result, handle: handle)
    }

    private func rows(from result: OpaquePointer, handle: OpaquePointer) throws -> PGRows {
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_SINGLE_TUPLE, PGRES_EMPTY_QUERY:
            let rowCount = Int(PQntuples(result))
            let columnCount = Int(PQnfields(result))
            let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
            var values: [[String?]] = []
            values.reserveCapacity(rowCount)
            for row in 0..<rowCount {
                var rowValues: [String?] = []
                rowValues.reserveCapacity(columnCount)
                for column in 0..<columnCount {
                    if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                        rowValues.append(nil)
                    } else {
                        rowValues.append(String(cString: PQgetvalue(result, Int32(row), Int32(column))))
                    }
                }
                values.append(rowValues)
            }
            let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
            return PGRows(columns: columns, values: values, affectedRows: affected)
        default:
            throw serverError(result, handle: handle)
        }
    }

    private func serverError(_ result: OpaquePointer, handle: OpaquePointer) -> PostgresError {
        func field(_ code: Character) -> String? {
            guard let pointer = PQresultErrorField(result, Int32(code.asciiValue!)) else { return nil }
            return String(cString: pointer)
        }
        let sqlState = field("C")
        var message =
            field("M") ?? String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        let timedOut = sqlState == "57014" ? timedOutAfter : nil
        if let timedOut {
            message =
                "the database did not answer within \(PGDeadline.describe(timedOut)): the statement was "
                + "cancelled (\(message))"
        }
        let broken = PQstatus(handle) != CONNECTION_OK
        var error = PostgresError(
            kind: broken || sqlState == nil ? .connection : .server,
            message: message.isEmpty ? String(cString: PQerrorMessage(handle)) : message,
            sqlState: sqlState,
            detail: field("D"),
            hint: field("H"),
            constraint: field("n"),
            table: field("t"),
            column: field("c")
        )
        error.timedOut = timedOut.map { .answer(after: $0) }
        return error
    }

    private func connectionError(_ handle: OpaquePointer, _ context: String) -> PostgresError {
        let message = String(cString: PQerrorMessage(handle)).trimmingCharacters(in: .whitespacesAndNewlines)
        return PostgresError(kind: .connection, message: message.isEmpty ? context : "\(context): \(message)")
    }

    /// Sends `query` without waiting (by prepared-statement `name` when given); false if libpq refused.
    private static func send(_ query: PGQuery, name: String?, handle: OpaquePointer) throws -> Bool {
        try withParameters(query.binds) { types, values, lengths, formats in
            if let name {
                PQsendQueryPrepared(handle, name, Int32(query.binds.count), values, lengths, formats, 0)
            } else {
                PQsendQueryParams(handle, query.sql, Int32(query.binds.count), types, values, lengths, formats, 0)
            }
        } == 1
    }

    /// Refuses a text parameter holding a NUL character: libpq sends text values as
    /// C strings, so it would be cut short there, silently (`alex\0x` sent as `alex`).
    /// PostgreSQL text cannot hold one anyway.
    private static func checkParameters(_ binds: [PGBind]) throws {
        for (index, bind) in binds.enumerated() {
            if case .text(let text) = bind.value, text.utf8.contains(0) {
                throw PostgresError(
                    kind: .client,
                    message: "parameter $\(index + 1) contains a NUL character, which PostgreSQL text cannot hold; "
                        + "nothing was sent")
            }
        }
    }

    /// Lays out parameters as the C arrays libpq wants, valid during `body`.
    private static func withParameters<R>(
        _ binds: [PGBind],
        _ body: (
            UnsafePointer<Oid>?, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?
        ) -> R
    ) throws -> R {
        try checkParameters(binds)
        var types: [Oid] = []
        var lengths: [Int32] = []
        var formats: [Int32] = []
        var buffers: [UnsafeMutablePointer<CChar>?] = []
        types.reserveCapacity(binds.count)
        for bind in binds {
            types.append(Oid(bind.type))
            switch bind.value {
            case .null:
                buffers.append(nil)
                lengths.append(0)
                formats.append(0)
            case .text(let text):
                buffers.append(strdup(text))
                lengths.append(0)
                formats.append(0)
            case .binary(let bytes):
                let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
                bytes.withUnsafeBufferPointer { source in
                    source.withMemoryRebound(to: CChar.self) { chars in
                        if let base = chars.baseAddress { buffer.initialize(from: base, count: bytes.count) }
                    }
                }
                buffers.append(buffer)
                lengths.append(Int32(bytes.count))
                formats.append(1)
            }
        }
        defer {
            for (buffer, bind) in zip(buffers, binds) {
                guard let buffer else { continue }
                if case .binary = bind.value { buffer.deallocate() } else { free(buffer) }
            }
        }
        let values = buffers.map { UnsafePointer($0) }
        return types.withUnsafeBufferPointer { typePointer in
            values.withUnsafeBufferPointer { valuePointer in
                lengths.withUnsafeBufferPointer { lengthPointer in
                    formats.withUnsafeBufferPointer { formatPointer in
                        body(
                            typePointer.baseAddress, valuePointer.baseAddress, lengthPointer.baseAddress,
                            formatPointer.baseAddress)
                    }
                }
            }
        }
    }
}

/// How long a statement may wait for the server's answer, and until when: see
/// ``PGConnection/query(_:prepared:timeout:)``.
public struct PGDeadline: Sendable {
    public let timeout: Duration
    /// How long, past the timeout, to wait for the server's answer to the request to
    /// cancel the statement before closing the connection.
    public let grace: Duration
    let instant: ContinuousClock.Instant

    /// `timeout` from now, then `grace` for the server to answer the cancel request.
    public init(after timeout: Duration, grace: Duration = .milliseconds(500)) {
        self.timeout = timeout
        self.grace = grace
        instant = .now + timeout
    }

    /// `duration` in whole milliseconds (rounded down).
    public static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// A timeout as a PostgreSQL setting (`statement_timeout`) takes it: whole milliseconds,
    /// rounded up (the server never gives up before the client's deadline), at least 1 (`"1500ms"`).
    public static func setting(_ timeout: Duration) -> String {
        let whole = milliseconds(timeout)
        return "\(max(1, whole + (timeout > .milliseconds(whole) ? 1 : 0)))ms"
    }

    /// A timeout as messages print it: `10 s`, `1.5 s`, `300 ms`.
    public static func describe(_ timeout: Duration) -> String {
        let milliseconds = milliseconds(timeout)
        return milliseconds % 1000 == 0
            ? "\(milliseconds / 1000) s"
            : milliseconds >= 1000 ? "\(Double(milliseconds) / 1000) s" : "\(milliseconds) ms"
    }
}

private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let pointers = strings.map { UnsafePointer(strdup($0)) } + [nil]
    defer { for pointer in pointers { free(UnsafeMutablePointer(mutating: pointer)) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// Quotes a value for a libpq conninfo string (`key='value'`).
public func conninfoQuote(_ value: String) -> String {
    "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
}

/// Double-quotes an SQL identifier (`"name"`, inner quotes doubled), for the few
/// statements that cannot take it as a parameter (CREATE DATABASE, roles).
public func quoteIdentifier(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
