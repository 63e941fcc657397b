import Foundation
import LockboxPostgres
import Synchronization

/// Where the broker gets "now". Rules that depend on time (the 12-hour
/// customer deadline, the access window) read this clock, so tests move time
/// instead of sleeping. A clock that cannot tell the time throws, and the
/// broker refuses (fails closed).
public protocol LockboxClock: Sendable {
    func now() throws -> Date
}

/// The system's wall clock. Refuses to answer when the time is obviously
/// unset (before 2020), rather than make decisions on it.
public struct SystemClock: LockboxClock {
    public init() {}
    public func now() throws -> Date {
        let now = Date()
        guard now.timeIntervalSince1970 > 1_577_836_800 else {
            throw LockboxError(.clockUnavailable, "the system clock reads \(now), which cannot be right")
        }
        return now
    }
}

/// A clock that only moves when told to; for tests and the demo.
public final class ManualClock: LockboxClock {
    private let state: Mutex<Date?>

    public init(_ start: Date) { state = Mutex(start) }

    public func now() throws -> Date {
        guard let date = state.withLock({ $0 }) else {
            throw LockboxError(.clockUnavailable, "the clock is unavailable")
        }
        return date
    }

    /// Moves the clock forward (or back, with a negative duration).
    public func advance(by duration: Duration) {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        state.withLock { $0 = $0?.addingTimeInterval(seconds) }
    }

    /// Sets the clock.
    public func set(_ date: Date) { state.withLock { $0 = date } }

    /// Makes the clock unreadable (every `now()` throws) until `set` is called.
    public func breakClock() { state.withLock { $0 = nil } }
}

/// The system clock, trusted only while it agrees with the database server's.
///
/// Windows and deadlines are decided on the broker's clock, and the audit log
/// is stamped with it. A broker whose clock was set back (or forward) would let
/// an operator in after the window, approve an expired request, or end grants
/// early, with records dated to match. The server's clock is the witness: the
/// difference is measured once, when the broker's database is opened, and a
/// difference over ``tolerance`` makes the time ambiguous, so every decision
/// that needs it is refused and every operator attempt denied, with the reason.
public struct ServerCheckedClock: LockboxClock {
    /// The most the two clocks may differ, beyond the uncertainty of the measurement.
    public static let tolerance: TimeInterval = 5
    /// The server's clock minus this machine's, in seconds, when measured.
    public let offset: TimeInterval
    /// Half the round trip of the measurement: how far off `offset` may be.
    public let uncertainty: TimeInterval
    private let system: any LockboxClock

    public init(offset: TimeInterval, uncertainty: TimeInterval, system: any LockboxClock = SystemClock()) {
        self.offset = offset
        self.uncertainty = uncertainty
        self.system = system
    }

    /// Measures the difference between `system` and the server `pool` reaches, waiting for
    /// the server's answer (and a pooled connection) for `timeout`, when set.
    public static func measured(
        against pool: PGPool, system: any LockboxClock = SystemClock(), timeout: Duration? = nil
    ) async throws -> ServerCheckedClock {
        // A system clock that cannot be read says so itself, at each `now()`: commands that
        // need no time still run.
        guard let before = try? system.now() else {
            return ServerCheckedClock(offset: 0, uncertainty: 0, system: system)
        }
        let rows = try await pool.query("SELECT clock_timestamp()", timeout: timeout)
        let after = try system.now()
        guard let server = try rows.first?.decode(Date.self, at: 0) else {
            throw LockboxError(.databaseUnavailable, "the database server did not tell its time")
        }
        let local = before.addingTimeInterval(after.timeIntervalSince(before) / 2)
        return ServerCheckedClock(
            offset: server.timeIntervalSince(local), uncertainty: after.timeIntervalSince(before) / 2, system: system)
    }

    public func now() throws -> Date {
        let now = try system.now()
        guard abs(offset) <= Self.tolerance + uncertainty else {
            let server = now.addingTimeInterval(offset)
            throw LockboxError(
                .clockUnavailable,
                "the time is ambiguous: this machine's clock reads \(Broker.timestamp(now)) and the database "
                    + "server's \(Broker.timestamp(server)), \(Self.describe(abs(offset))) apart (at most "
                    + "\(Int(Self.tolerance)) s is allowed)")
        }
        return now
    }

    /// Under a minute to the tenth of a second (`40.0 s`), else as durations are written (`1h1m`).
    static func describe(_ seconds: TimeInterval) -> String {
        seconds < 60
            ? String(format: "%.1f s", seconds) : Validate.describe(.seconds(Int64(seconds.rounded(.down))))
    }
}
