import Foundation

/// Input rules, each refusing with the field's name and the rule it broke.
enum Validate {
    static let maxReason = 2000
    static let maxTicket = 64
    static let maxResource = 512
    static let maxComment = 2000
    static let minDuration = Duration.seconds(60)
    static let maxDuration = Duration.seconds(4 * 3600)

    nonisolated(unsafe) static let tenantPattern = /^[A-Za-z0-9][A-Za-z0-9-]{0,62}$/
    nonisolated(unsafe) static let aliasPattern = /^[a-z][a-z0-9._-]{0,63}$/
    nonisolated(unsafe) static let upnPattern = /^[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$/
    nonisolated(unsafe) static let workloadPattern = /^[A-Za-z][A-Za-z0-9]{0,31}$/

    static func tenantName(_ value: String, field: String = "tenant") throws -> String {
        guard value.wholeMatch(of: tenantPattern) != nil else {
            throw LockboxError.invalid(
                field, "must be 1 to 63 letters, digits or hyphens, starting with a letter or digit (got \(quoted(value)))")
        }
        return value
    }

    static func alias(_ value: String, field: String = "operator") throws -> String {
        guard value.wholeMatch(of: aliasPattern) != nil else {
            throw LockboxError.invalid(
                field,
                "an operator alias is 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter "
                    + "(got \(quoted(value)))")
        }
        return value
    }

    /// UPNs compare case-insensitively; they are stored lower-cased.
    static func upn(_ value: String, field: String = "upn") throws -> String {
        let lowered = value.lowercased()
        guard lowered.wholeMatch(of: upnPattern) != nil else {
            throw LockboxError.invalid(field, "must be a user principal name like admin@contoso.com (got \(quoted(value)))")
        }
        return lowered
    }

    static func workload(_ value: Workload, known: Set<Workload>) throws -> Workload {
        guard known.contains(value) else {
            throw LockboxError.invalid(
                "workload",
                "must be one of \(known.sorted().map(\.rawValue).joined(separator: ", ")) (got \(quoted(value.rawValue)))")
        }
        return value
    }

    static func text(_ value: String, field: String, max: Int, required: Bool = true) throws -> String {
        if required && value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw LockboxError.invalid(field, "must not be empty or only whitespace")
        }
        // Counted as the database's length() does, in code points: "é" written as "e" and a
        // combining accent is one Character to Swift's count but two to the CHECK constraints.
        let length = value.unicodeScalars.count
        if length > max {
            throw LockboxError.invalid(field, "must be at most \(max) characters (got \(length))")
        }
        if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw LockboxError.invalid(field, "must not contain control characters (such as newlines or tabs)")
        }
        // They are not control characters, but a line separator breaks a line of output as a newline
        // does, and a bidirectional control (U+202E, right-to-left override) makes what follows it
        // display in another order than it is stored and read by the approver's tools.
        if let scalar = value.unicodeScalars.first(where: {
            $0.properties.isBidiControl || $0.properties.generalCategory == .lineSeparator
                || $0.properties.generalCategory == .paragraphSeparator
        }) {
            throw LockboxError.invalid(
                field,
                "must not contain line or paragraph separators or bidirectional text controls "
                    + "(got U+\(String(scalar.value, radix: 16, uppercase: true)))")
        }
        return value
    }

    static func optionalText(_ value: String?, field: String, max: Int) throws -> String? {
        guard let value else { return nil }
        return try text(value, field: field, max: max)
    }

    /// A request's scope: the path of what it covers (`alice@contoso.com`,
    /// `finance/Documents`). Resources are such paths, checked by the connectors
    /// (``ResourcePath``): segments joined by `/`, none empty, `.` or `..`, none
    /// starting or ending with a space, the first lower-cased. A scope is held to
    /// the same form, first segment lower-cased too, so that it can cover what it
    /// names: `Alice@Contoso.com` would otherwise be approved and then match nothing.
    static func scope(_ value: String?, field: String = "resource") throws -> String? {
        guard let value = try optionalText(value, field: field, max: maxResource) else { return nil }
        var segments = value.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        for segment in segments {
            if segment.isEmpty {
                throw LockboxError.invalid(
                    field, "must be a path like alice@contoso.com or finance/Documents, without an empty segment "
                        + "(a leading, trailing or double '/') (got \(quoted(value)))")
            }
            // A '/' followed by a combining mark is one Character (so not split on above),
            // but a '/' to the database, which compares scopes and resources byte by byte.
            if segment.unicodeScalars.contains("/") {
                throw LockboxError.invalid(
                    field, "must not have a '/' joined to a combining mark, which hides where a segment ends "
                        + "(got \(quoted(value)))")
            }
            if segment == "." || segment == ".." {
                throw LockboxError.invalid(field, "must not have a segment \(segment) (got \(quoted(value)))")
            }
            if segment.first!.isWhitespace || segment.last!.isWhitespace {
                throw LockboxError.invalid(
                    field, "must not have a segment that starts or ends with a space (got \(quoted(value)))")
            }
        }
        segments[0] = segments[0].lowercased()
        return segments.joined(separator: "/")
    }

    static func duration(_ value: Duration) throws -> Duration {
        guard value >= minDuration, value <= maxDuration else {
            throw LockboxError.invalid(
                "duration", "must be between 1 minute and 4 hours (got \(describe(value)))")
        }
        guard value.components.attoseconds == 0, value.components.seconds % 60 == 0 else {
            throw LockboxError.invalid("duration", "must be a whole number of minutes (got \(describe(value)))")
        }
        return value
    }

    static func clientIP(_ value: String?) throws -> String? {
        guard let value else { return nil }
        guard isIPAddress(value) else {
            throw LockboxError.invalid("ip", "must be an IPv4 or IPv6 address (got \(quoted(value)))")
        }
        return value
    }

    static func requestID(_ value: String, field: String = "request id") throws -> UUID {
        guard let id = UUID(uuidString: value) else {
            throw LockboxError.invalid(field, "must be a UUID like 3f2504e0-4f89-41d3-9a0c-0305e82c3301 (got \(quoted(value)))")
        }
        return id
    }

    /// A PostgreSQL login name: 1 to 63 bytes, no control characters.
    static func login(_ value: String) throws -> String {
        guard (1...63).contains(value.utf8.count),
            !value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw LockboxError.invalid("login", "must be a PostgreSQL login name of 1 to 63 bytes without control characters")
        }
        return value
    }

    static func quoted(_ value: String) -> String {
        let shown = value.count > 60 ? String(value.prefix(60)) + "…" : value
        return "\"" + shown.unicodeScalars.map { $0.properties.generalCategory == .control ? "?" : String($0) }.joined()
            + "\""
    }

    /// A duration as it would be typed: `4h`, `1h30m`, `4h1m`, `90s` → `1m30s`, `-5m`; zero is `0`,
    /// whatever unit it was typed in.
    static func describe(_ duration: Duration) -> String {
        let seconds = duration.components.seconds
        guard seconds != 0 else { return "0" }
        let magnitude = seconds.magnitude
        let parts = [(magnitude / 3600, "h"), (magnitude / 60 % 60, "m"), (magnitude % 60, "s")]
        return (seconds < 0 ? "-" : "") + parts.filter { $0.0 != 0 }.map { "\($0.0)\($0.1)" }.joined()
    }
}

/// Parses durations such as `4h`, `90m`, `1h30m`, `45s`. Refuses any other form, and a total
/// too long to count in seconds (such as `9999999999999999h`), instead of trapping on the overflow.
public func parseDuration(_ text: String) throws -> Duration {
    let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
    let malformed = LockboxError.invalid(
        "duration", "must look like 4h, 90m or 1h30m (got \(Validate.quoted(text)))")
    var total: Int64 = 0
    var number = ""
    var sawUnit = false
    var negative = false
    for (index, character) in trimmed.enumerated() {
        if character == "-" && index == 0 {
            negative = true
        } else if character.isASCII && character.isWholeNumber {
            number.append(character)
        } else if let unit = ["h": Int64(3600), "m": 60, "s": 1][String(character)], !number.isEmpty {
            guard let value = Int64(number),
                case let (seconds, overflow) = value.multipliedReportingOverflow(by: unit), !overflow,
                case let (sum, overflowSum) = total.addingReportingOverflow(seconds), !overflowSum
            else {
                throw LockboxError.invalid("duration", "is too long to count (got \(Validate.quoted(text)))")
            }
            total = sum
            number = ""
            sawUnit = true
        } else {
            throw malformed
        }
    }
    guard number.isEmpty, sawUnit else { throw malformed }
    return .seconds(negative ? -total : total)
}

/// Parses a request id, refusing anything that is not a UUID with a message naming the field.
public func parseRequestID(_ text: String, field: String = "request id") throws -> UUID {
    try Validate.requestID(text, field: field)
}

/// Whether `text` is an IPv4 or IPv6 address, the only client addresses the audit log records.
public func isIPAddress(_ text: String) -> Bool {
    // inet_pton reads a C string: it would accept "10.0.0.1\0anything" as 10.0.0.1.
    guard !text.utf8.contains(0) else { return false }
    var v4 = in_addr()
    var v6 = in6_addr()
    return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
}
