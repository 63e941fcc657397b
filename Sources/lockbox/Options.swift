import ArgumentParser
import Foundation
import LockboxConnectors
import LockboxCore

/// Where the data lives; every command that touches the database takes it.
struct DatabaseOptions: ParsableArguments {
    @Option(
        name: .customLong("database-url"),
        help: ArgumentHelp(
            "PostgreSQL URL or conninfo string. Default: $LOCKBOX_DATABASE_URL; else libpq's environment when "
                + "any PG* variable is set (not empty); else the embedded cluster in $LOCKBOX_HOME (~/.lockbox).",
            valueName: "url"))
    var databaseURL: String?
}

/// How data is printed.
struct FormatOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Output format.", valueName: "table|json|csv"))
    var format: OutputFormat = .table

    var printer: Printer { Printer(format: format) }
}

/// The options shared by every command that reads or changes the database and prints data.
struct GlobalOptions: ParsableArguments {
    @OptionGroup var database: DatabaseOptions
    @Option(
        name: .customLong("database-timeout"),
        help: ArgumentHelp(
            "How long each statement waits for the database's answer (and the command for a connection) "
                + "before the command is refused, naming the wait, e.g. 30s or 2m (1s to 1h). Default: 30s. An "
                + "invoke's check and audit record has its own 10 s.",
            valueName: "duration"),
        transform: GlobalOptions.timeout)
    var databaseTimeout: Duration?
    @OptionGroup var output: FormatOptions

    var printer: Printer { output.printer }

    /// `--database-timeout`, else the broker's default.
    var timeout: Duration { databaseTimeout ?? Broker.defaultStatementTimeout }

    /// For `transform:`: a duration from 1s to 1h, else a usage error stating the rule.
    static func timeout(_ text: String) throws -> Duration {
        guard let value = try? parseDuration(text), value >= .seconds(1), value <= .seconds(3600) else {
            throw ValidationError("must be between 1s and 1h, like 30s or 2m")
        }
        return value
    }

    /// Runs `body` on an open, verified database (see ``DatabaseOptions/withSession(verify:timeout:_:)``).
    func withSession<T: Sendable>(verify: Bool = true, _ body: (Session) async throws -> T) async throws -> T {
        try await database.withSession(verify: verify, timeout: timeout, body)
    }

    /// Runs `body` with a broker on an open, verified database.
    func withBroker<T: Sendable>(_ body: (Broker, Session) async throws -> T) async throws -> T {
        try await withSession { session in try await body(session.broker(), session) }
    }
}

/// A point in time given on the command line: ISO 8601 with an offset
/// (`2026-03-01T09:30:00Z`, `2026-03-01T11:30:00+02:00`) or a date (`2026-03-01`, midnight UTC).
struct TimeArgument: Sendable {
    let date: Date

    /// For `transform:`: a malformed time, or one that does not exist (`2026-02-31`, `25:00:00`),
    /// is a usage error that states the rule; it is never moved to another day.
    static func parse(_ text: String) throws -> TimeArgument {
        do {
            return TimeArgument(date: try TimeText.parse(text))
        } catch {
            throw ValidationError(error.rule)
        }
    }
}

/// A client IP address to record in the audit log: IPv4 or IPv6.
struct IPAddressArgument: Sendable {
    let address: String

    /// For `transform:`: a malformed address is a usage error that states the rule.
    static func parse(_ text: String) throws -> IPAddressArgument {
        guard isIPAddress(text) else { throw ValidationError("must be an IPv4 or IPv6 address like 203.0.113.7") }
        return IPAddressArgument(address: text)
    }
}

/// A request id: a UUID.
struct RequestIDArgument: Sendable {
    let uuid: UUID

    /// For `transform:`: a malformed id is a usage error that states the rule.
    static func parse(_ text: String) throws -> RequestIDArgument {
        guard let uuid = try? parseRequestID(text) else {
            throw ValidationError("must be a UUID like 3f2504e0-4f89-41d3-9a0c-0305e82c3301")
        }
        return RequestIDArgument(uuid: uuid)
    }
}

/// `on` or `off`.
enum Switch: String, CaseIterable, ExpressibleByArgument, Sendable {
    case on
    case off

    init?(argument: String) { self.init(rawValue: argument.lowercased()) }
}

extension ApprovalDecision: ExpressibleByArgument {
    public init?(argument: String) {
        guard let match = Self.allCases.first(where: { $0.rawValue.lowercased() == argument.lowercased() }) else {
            return nil
        }
        self = match
    }
}

extension CustomerRole: ExpressibleByArgument {
    public init?(argument: String) {
        guard let match = Self.allCases.first(where: { $0.rawValue.lowercased() == argument.lowercased() }) else {
            return nil
        }
        self = match
    }
}

/// A workload a connector serves, spelt exactly as the connector names it.
extension Workload: ExpressibleByArgument {
    private static let served = standardConnectors().workloads.sorted()

    public init?(argument: String) {
        guard let match = Self.served.first(where: { $0.rawValue == argument }) else { return nil }
        self = match
    }

    public static var allValueStrings: [String] { served.map(\.rawValue) }
    public static var defaultCompletionKind: CompletionKind { .list(allValueStrings) }
}

extension RequestStatus: ExpressibleByArgument {
    public init?(argument: String) {
        guard let match = Self.allCases.first(where: { $0.rawValue.lowercased() == argument.lowercased() }) else {
            return nil
        }
        self = match
    }
}

/// Splits `KEY=VALUE` arguments, refusing a missing `=`, an empty key or a repeated key.
func parseKeyValues(_ pairs: [String], option: String) throws -> [String: String] {
    var result: [String: String] = [:]
    for pair in pairs {
        guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
            throw ValidationError("\(option) must look like KEY=VALUE (got \"\(pair)\")")
        }
        let key = String(pair[..<equals])
        guard result[key] == nil else { throw ValidationError("\(option) \(key) is given twice") }
        result[key] = String(pair[pair.index(after: equals)...])
    }
    return result
}

/// A help text section with examples, for `discussion:`. Long examples are
/// broken into shell continuation lines so the help never wraps them.
func examples(_ lines: String...) -> String {
    "Examples:\n" + lines.map(wrapExample).joined(separator: "\n")
}

private func wrapExample(_ command: String) -> String {
    // Words, keeping double-quoted strings whole.
    var words: [String] = []
    var current = ""
    var quoted = false
    for character in command {
        if character == "\"" { quoted.toggle() }
        if character == " " && !quoted {
            if !current.isEmpty { words.append(current) }
            current = ""
        } else {
            current.append(character)
        }
    }
    if !current.isEmpty { words.append(current) }
    var lines: [String] = []
    var line = "  "
    for word in words {
        if line.count + word.count + 3 > 78, line.trimmingCharacters(in: .whitespaces).count > 0 {
            lines.append(line + " \\")
            line = "      " + word
        } else {
            line += (line.hasSuffix(" ") ? "" : " ") + word
        }
    }
    lines.append(line)
    return lines.joined(separator: "\n")
}
