import Foundation
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
