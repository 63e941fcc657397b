import Logging

/// A pool of ``PGConnection``s shared by many tasks.
///
/// At most `maxConnections` are ever open at once; a caller that finds them all
/// leased waits for one to be returned. A connection that failed at the
/// connection level is discarded instead of being returned.
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
    private let state: State
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
        self.state = State(limit: maxConnections)
    }

    /// Leases a connection for the duration of `body`, opening one if needed.
    public func withConnection<T: Sendable>(_ body: (PGConnection) async throws -> T) async throws -> T {
        let connection = try await lease()
        do {
            let value = try await body(connection)
            await state.give(back: connection, usable: connection.isUsable)
            return value
        } catch {
            let usable = connection.isUsable && !((error as? PostgresError)?.isConnectionFailure ?? false)
            await state.give(back: connection, usable: usable)
            throw error
        }
    }

    /// Runs `body` in a transaction on a leased connection.
    @discardableResult
    public func withTransaction<T: Sendable>(
        isolation: String = "READ COMMITTED",
        _ body: (PGConnection) async throws -> T
    ) async throws -> T {
        try await withConnection { connection in
            try await connection.withTransaction(isolation: isolation, body)
        }
    }

    /// Runs one statement on a leased connection.
    @discardableResult
    public func query(_ query: PGQuery, prepared: Bool = false) async throws -> PGRows {
        try await withConnection { try await $0.query(query, prepared: prepared) }
    }

    /// Closes idle connections and refuses new leases.
    public func close() async {
        for connection in await state.shutDown() { await connection.close() }
    }

    public var statistics: Statistics {
        get async { await state.statistics }
    }

    private func lease() async throws -> PGConnection {
        switch try await state.reserve() {
        case .idle(let connection):
            return connection
        case .open:
            do {
                return try await PGConnection.connect(conninfo, database: database, logger: logger)
            } catch {
                await state.openFailed()
                throw error
            }
        }
    }

    private actor State {
        enum Reservation { case idle(PGConnection), open }

        let limit: Int
        var idle: [PGConnection] = []
        var open = 0
        var opened = 0
        var peakOpen = 0
        var closed = false
        var waiters: [CheckedContinuation<Reservation, any Error>] = []

        init(limit: Int) { self.limit = limit }

        var statistics: Statistics { Statistics(opened: opened, open: open, peakOpen: peakOpen) }

        func reserve() async throws -> Reservation {
            if closed { throw PostgresError(kind: .client, message: "the connection pool is closed") }
            if let connection = idle.popLast() { return .idle(connection) }
            if open < limit {
                open += 1
                opened += 1
                peakOpen = max(peakOpen, open)
                return .open
            }
            return try await withCheckedThrowingContinuation { waiters.append($0) }
        }

        func openFailed() {
            open -= 1
            handOver()
        }

        func give(back connection: PGConnection, usable: Bool) {
            if usable && !closed {
                if waiters.isEmpty {
                    idle.append(connection)
                } else {
                    waiters.removeFirst().resume(returning: .idle(connection))
                }
            } else {
                open -= 1
                handOver()
            }
        }

        /// A slot freed up: let the first waiter open a new connection in it.
        private func handOver() {
            guard !waiters.isEmpty, open < limit else { return }
            open += 1
            opened += 1
            peakOpen = max(peakOpen, open)
            waiters.removeFirst().resume(returning: .open)
        }

        func shutDown() -> [PGConnection] {
            closed = true
            for waiter in waiters {
                waiter.resume(throwing: PostgresError(kind: .client, message: "the connection pool is closed"))
            }
            waiters.removeAll()
            let connections = idle
            open -= idle.count
            idle.removeAll()
            return connections
        }
    }
}
