import Logging
import Synchronization

/// A pool of ``PGConnection``s shared by many tasks.
///
/// At most `maxConnections` are ever open at once; a caller that finds them all
/// leased waits for one to be returned (for as long as its `timeout`, when it gives
/// one). A connection that failed at the connection level, that is still inside a
/// transaction, or on which a statement was asked to cancel (the request may reach the
/// server late, and cancel the next caller's statement), is discarded instead of being
/// returned (closing it rolls that transaction back).
public final class PGPool: Sendable {
    /// How many connections have been opened, and the most ever open at once.
    public struct Statistics: Sendable {
        public var opened: Int
        public var open: Int
        public var peakOpen: Int
    }

    /// Where the pool connects (a conninfo string or URL; nil for libpq's environment).
    public let conninfo: String?
    /// The database to use instead of the one `conninfo` names, if any.
    public let database: String?
    /// The most connections open at once.
    public let maxConnections: Int
    private let state: Mutex<State>
    private let logger: Logger

    public init(
        conninfo: String?, database: String? = nil, maxConnections: Int = 8,
        logger: Logger = Logger(label: "lockbox.postgres")
    ) {
        precondition(maxConnections > 0, "a pool needs at least one connection")
        self.conninfo = conninfo
        self.database = database
        self.maxConnections = maxConnections
        self.logger = logger
        self.state = Mutex(State(limit: maxConnections))
    }

    /// Leases a connection for the duration of `body`, opening one if needed.
    ///
    /// - Parameter timeout: when set, how long to wait for a connection to become free
    ///   (opening one is bounded by libpq's `connect_timeout`), and the connection's
    ///   ``PGConnection/defaultTimeout`` during the lease: how long each statement waits for
    ///   the server's answer. Nil: as long as it takes (migrations, bulk loads).
    /// - Throws: ``CancellationError`` when the task is cancelled while it waits for a
    ///   connection (nothing was run); a ``PostgresError`` when the pool is closed, or, with
    ///   ``PostgresError/timedOut`` set to `.lease`, when no connection became free in time
    ///   (nothing was run).
    public func withConnection<T: Sendable>(
        timeout: Duration? = nil, _ body: (PGConnection) async throws -> T
    ) async throws -> T {
        let connection = try await lease(timeout: timeout)
        connection.defaultTimeout = timeout
        do {
            let value = try await body(connection)
            giveBack(connection, usable: Self.reusable(connection))
            return value
        } catch {
            let usable = Self.reusable(connection) && !((error as? PostgresError)?.isConnectionFailure ?? false)
            giveBack(connection, usable: usable)
            throw error
        }
    }

    /// Whether a connection back from a lease may be handed out again.
    private static func reusable(_ connection: PGConnection) -> Bool {
        connection.isUsable && !connection.isInTransaction && !connection.hasSentCancel
    }

    /// Runs `body` in a transaction on a leased connection: see
    /// ``withConnection(timeout:_:)`` and ``PGConnection/withTransaction(isolation:timeout:idleTimeout:_:)``.
    @discardableResult
    public func withTransaction<T: Sendable>(
        isolation: String = "READ COMMITTED", timeout: Duration? = nil, idleTimeout: Duration? = nil,
        _ body: (PGConnection) async throws -> T
    ) async throws -> T {
        try await withConnection(timeout: timeout) { connection in
            try await connection.withTransaction(isolation: isolation, idleTimeout: idleTimeout, body)
        }
    }

    /// Runs one statement on a leased connection (see ``withConnection(timeout:_:)``).
    @discardableResult
    public func query(_ query: PGQuery, prepared: Bool = false, timeout: Duration? = nil) async throws -> PGRows {
        try await withConnection(timeout: timeout) { try await $0.query(query, prepared: prepared) }
    }

    /// Closes idle connections and refuses new leases.
    public func close() async {
        let (connections, waiters) = state.withLock { state -> ([PGConnection], [Waiter]) in
            state.closed = true
            let waiters = state.waiters.map(\.continuation)
            state.waiters.removeAll()
            let connections = state.idle
            state.open -= state.idle.count
            state.idle.removeAll()
            return (connections, waiters)
        }
        for waiter in waiters { waiter.resume(throwing: Self.closedError) }
        for connection in connections { await connection.close() }
    }

    /// True once ``close()`` was called: no lease is granted any more.
    public var isClosed: Bool { state.withLock { $0.closed } }

    public var statistics: Statistics {
        get async { state.withLock { Statistics(opened: $0.opened, open: $0.open, peakOpen: $0.peakOpen) } }
    }

    private static var closedError: PostgresError { PostgresError(kind: .client, message: "the connection pool is closed") }

    private enum Reservation { case idle(PGConnection), open }
    private typealias Waiter = CheckedContinuation<Reservation, any Error>

    /// The pool's book-keeping, behind a lock: leasing an idle connection is one
    /// uncontended lock, not an actor hop; only a caller that must wait suspends.
    private struct State: ~Copyable {
        let limit: Int
        var idle: [PGConnection] = []
        var open = 0
        var opened = 0
        var peakOpen = 0
        var closed = false
        var waiters: [(id: UInt64, continuation: Waiter)] = []
        var nextWaiter: UInt64 = 0

        init(limit: Int) { self.limit = limit }

        /// An idle connection, or the right to open one, or nil when the caller must wait.
        mutating func reserve() throws -> Reservation? {
            if closed { throw PGPool.closedError }
            if let connection = idle.popLast() { return .idle(connection) }
            if open < limit {
                open += 1
                opened += 1
                peakOpen = max(peakOpen, open)
                return .open
            }
            return nil
        }

        /// A slot freed up: the first waiter may open a new connection in it.
        mutating func handOver() -> Waiter? {
            guard !waiters.isEmpty, open < limit else { return nil }
            open += 1
            opened += 1
            peakOpen = max(peakOpen, open)
            return waiters.removeFirst().continuation
        }
    }

    /// An idle connection or the right to open one, waiting for it if all are leased
    /// (until `timeout`, when set).
    ///
    /// A task cancelled while it waits stops waiting (``CancellationError``), and one
    /// still waiting at its timeout too (``leaseTimedOut(_:)``): it is taken off the queue
    /// under the lock, so it is resumed once, by whichever of the cancellation, the
    /// timeout or a returned connection finds it there first.
    private func reserve(timeout: Duration?) async throws -> Reservation {
        if let reservation = try state.withLock({ try $0.reserve() }) { return reservation }
        let id = state.withLock { state in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let limit = timeout.map { (timeout: $0, deadline: ContinuousClock.now + $0) }
        // Past the deadline, takes the waiter off the queue if it is still there. A waiter that
        // queues only after the deadline (the timer found nothing) gives up by itself, below.
        let expiry = limit.map { limit in
            Task { [self] in
                guard (try? await Task.sleep(until: limit.deadline, clock: .continuous)) != nil else { return }
                resumeWaiter(id, throwing: leaseTimedOut(limit.timeout))
            }
        }
        defer { expiry?.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Waiter) in
                let ready = state.withLock { state -> Result<Reservation, any Error>? in
                    // Cancelled before it queued: the handler found nothing to take off.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    do {
                        if let reservation = try state.reserve() { return .success(reservation) }
                    } catch {
                        return .failure(error)
                    }
                    if let limit, ContinuousClock.now >= limit.deadline {
                        return .failure(leaseTimedOut(limit.timeout))
                    }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            resumeWaiter(id, throwing: CancellationError())
        }
    }

    /// Resumes the waiter `id` with `error`, if it still waits.
    private func resumeWaiter(_ id: UInt64, throwing error: any Error) {
        let waiter = state.withLock { state -> Waiter? in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index).continuation
        }
        waiter?.resume(throwing: error)
    }

    /// The error of a caller that waited `timeout` for a connection in vain.
    private func leaseTimedOut(_ timeout: Duration) -> PostgresError {
        var error = PostgresError(
            kind: .connection,
            message: "no connection to the database became free within \(PGDeadline.describe(timeout)) (all "
                + "\(maxConnections) in use), so nothing was sent")
        error.timedOut = .lease(after: timeout)
        return error
    }

    private func lease(timeout: Duration?) async throws -> PGConnection {
        switch try await reserve(timeout: timeout) {
        case .idle(let connection):
            return connection
        case .open:
            do {
                return try await PGConnection.connect(conninfo, database: database, logger: logger)
            } catch {
                let next = state.withLock { state -> Waiter? in
                    state.open -= 1
                    return state.handOver()
                }
                next?.resume(returning: .open)
                throw error
            }
        }
    }

    private func giveBack(_ connection: PGConnection, usable: Bool) {
        let handOff = state.withLock { state -> (Waiter, Reservation)? in
            if usable && !state.closed {
                if state.waiters.isEmpty {
                    state.idle.append(connection)
                    return nil
                }
                return (state.waiters.removeFirst().continuation, .idle(connection))
            }
            state.open -= 1
            return state.handOver().map { ($0, .open) }
        }
        if let (waiter, reservation) = handOff { waiter.resume(returning: reservation) }
    }
}
