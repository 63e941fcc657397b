/// An error reported by PostgreSQL or by libpq.
///
/// `description` is one line a person can act on; the SQLSTATE, detail and
/// constraint are kept as fields (and in `debugDescription`) so callers can
/// branch on them, e.g. `23505` for a unique violation.
public struct PostgresError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What went wrong, in broad terms.
    public enum Kind: String, Sendable {
        /// Could not connect, or the connection was lost.
        case connection
        /// The server rejected a statement.
        case server
        /// A result could not be decoded into the requested Swift type.
        case decoding
        /// The client was misused (e.g. a closed pool).
        case client
    }

    public var kind: Kind
    /// The primary message.
    public var message: String
    /// The five-character SQLSTATE, when the server sent one.
    public var sqlState: String?
    /// The server's DETAIL line.
    public var detail: String?
    /// The server's HINT line.
    public var hint: String?
    /// The constraint that was violated, for integrity errors.
    public var constraint: String?
    /// The table involved, when the server names it.
    public var table: String?
    /// The column involved, when the server names it.
    public var column: String?
    /// True when whether a COMMIT took effect is unknown: its connection was lost
    /// after it was sent and before its answer, or the server answered it with a
    /// warning (it cut short the wait for a synchronous standby, asked to cancel:
    /// committed locally, maybe not on the standby). It may or may not have been made.
    public var commitOutcomeUnknown = false
    /// Set when the error is a wait that ran past its bound (see ``TimedOut``).
    public var timedOut: TimedOut?

    /// What ran past its bound.
    public enum TimedOut: Sendable, Equatable {
        /// The server did not answer a statement within this timeout: it was cancelled
        /// (by the server's own `statement_timeout` or at the client's request), or, with
        /// no answer to that either, its connection was closed.
        case answer(after: Duration)
        /// No pooled connection became free within this timeout: nothing was sent.
        case lease(after: Duration)

        /// The bound that was passed.
        public var limit: Duration {
            switch self {
            case .answer(let limit), .lease(let limit): limit
            }
        }
    }

    public init(
        kind: Kind, message: String, sqlState: String? = nil, detail: String? = nil, hint: String? = nil,
        constraint: String? = nil, table: String? = nil, column: String? = nil
    ) {
        self.kind = kind
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.hint = hint
        self.constraint = constraint
        self.table = table
        self.column = column
    }

    /// True for SQLSTATE class 08 (connection exceptions) and libpq connection failures.
    public var isConnectionFailure: Bool {
        kind == .connection || (sqlState?.hasPrefix("08") ?? false) || sqlState == "57P01"
    }

    public var description: String {
        var text = message
        if let detail, !detail.isEmpty { text += " (\(detail))" }
        return text
    }

    public var debugDescription: String {
        var parts = ["PostgresError(\(kind.rawValue)", "message: \(message)"]
        if let sqlState { parts.append("sqlstate: \(sqlState)") }
        if let detail { parts.append("detail: \(detail)") }
        if let hint { parts.append("hint: \(hint)") }
        if let constraint { parts.append("constraint: \(constraint)") }
        if let table { parts.append("table: \(table)") }
        if let column { parts.append("column: \(column)") }
        if commitOutcomeUnknown { parts.append("commit outcome unknown") }
        if let timedOut { parts.append("timed out: \(timedOut)") }
        return parts.joined(separator: ", ") + ")"
    }
}
