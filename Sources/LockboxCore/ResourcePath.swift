/// Builds the resource paths that grant scopes are checked against: segments
/// joined by `/`, most general first, so that the scope `S` covers `S/…`.
/// Connectors share it to turn operation arguments into resource paths.
public struct ResourcePath: Sendable {
    /// Compiled once: a regex literal in a function body is compiled on every call.
    nonisolated(unsafe) private static let addressPattern = /[^@\s]+@[^@\s.]+(\.[^@\s.]+)+/
    /// The argument naming each segment, in order (e.g. `mailbox`, `folder`).
    public let segmentArguments: [String]
    /// What the first segment is, for error messages (e.g. "a mailbox address").
    public let firstSegment: String
    /// Whether the first segment must look like `user@domain`.
    public let firstIsAddress: Bool

    /// A path whose segments are named by `segmentArguments`; the first one is lower-cased
    /// and, when `firstIsAddress`, must look like `user@domain`.
    public init(segmentArguments: [String], firstSegment: String, firstIsAddress: Bool) {
        self.segmentArguments = segmentArguments
        self.firstSegment = firstSegment
        self.firstIsAddress = firstIsAddress
    }

    /// The segments an operation addresses, from named arguments or from an
    /// explicit `resource` argument (`a/b/c`); both may be given only if they agree.
    /// Refuses a missing segment by naming its argument, a segment after a
    /// missing one, more segments than `depth` allows, and malformed segments.
    public func segments(
        for operation: String, depth: ClosedRange<Int>, arguments: [String: String]
    ) throws -> [String] {
        let names = Array(segmentArguments.prefix(depth.upperBound))
        for extra in segmentArguments.dropFirst(depth.upperBound) where arguments[extra] != nil {
            throw LockboxError(
                .invalidInput, "\(operation) does not take the argument \(extra)", field: extra)
        }
        var named: [String] = []
        var firstMissing: String?
        for name in names {
            if let value = arguments[name] {
                if let firstMissing {
                    throw LockboxError(
                        .invalidInput, "\(operation) needs the argument \(firstMissing)",
                        field: firstMissing)
                }
                named.append(try check(value, argument: name, position: named.count))
            } else if firstMissing == nil {
                firstMissing = name
            }
        }
        if let explicit = arguments["resource"] {
            let parts = explicit.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard depth.contains(parts.count) else {
                throw LockboxError(
                    .invalidInput,
                    "\(operation) addresses a resource of the form \(form(depth)), not \"\(explicit)\"",
                    field: "resource")
            }
            let checked = try parts.enumerated().map { try check($1, argument: "resource", position: $0) }
            if !named.isEmpty && named != checked {
                throw LockboxError(
                    .invalidInput,
                    "the resource \"\(explicit)\" disagrees with the named arguments (\(named.joined(separator: "/")))",
                    field: "resource")
            }
            return checked
        }
        guard named.count >= depth.lowerBound else {
            let missing = names[named.count]
            throw LockboxError(
                .invalidInput,
                "\(operation) needs the argument \(missing) (or a resource of the form \(form(depth)))",
                field: missing)
        }
        return named
    }

    /// Checks a request's scope (already shaped by the broker's general path rule: no
    /// empty, `.` or `..` segment, first segment lower-cased) against this path: at most
    /// as many segments as the path has, each well-formed, the first of the right kind
    /// (e.g. a mailbox address). A scope that breaks it could be approved and then
    /// cover nothing the workload's operations address.
    public func checkScope(_ scope: String, workload: Workload) throws -> String {
        let parts = scope.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let form = form(1...segmentArguments.count)
        guard parts.count <= segmentArguments.count else {
            throw LockboxError(
                .invalidInput,
                "resource: a scope for \(workload.rawValue) is a path \(form) (got \"\(scope)\")", field: "resource")
        }
        var checked: [String] = []
        for (position, part) in parts.enumerated() {
            do {
                checked.append(try check(part, argument: "resource", position: position))
            } catch let error as LockboxError {
                let first = position == 0
                    ? " whose first segment is \(firstSegment)" + (firstIsAddress ? " like alice@contoso.com" : "") : ""
                throw LockboxError(
                    .invalidInput,
                    "resource: a scope for \(workload.rawValue) is a path \(form)\(first) (\(error.message))",
                    field: "resource")
            }
        }
        return checked.joined(separator: "/")
    }

    /// Checks `value` by the rules of the segment the argument `argument` names (one of
    /// ``segmentArguments``), as ``segments(for:depth:arguments:)`` would, and returns it
    /// as a path would hold it. For an operation that addresses a container but names an
    /// item inside it by argument (a change that moves a message between two folders
    /// addresses the mailbox). Refuses a malformed value, and an argument that names no
    /// segment, naming the argument.
    public func segment(_ value: String, argument: String) throws -> String {
        guard let position = segmentArguments.firstIndex(of: argument) else {
            throw LockboxError(.invalidInput, "\(argument) is not a path segment argument", field: argument)
        }
        return try check(value, argument: argument, position: position)
    }

    /// Splits a path built by ``segments(for:depth:arguments:)`` and checks its depth.
    public func split(_ resource: String, for operation: String, depth: ClosedRange<Int>) throws -> [String] {
        let parts = resource.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard depth.contains(parts.count), !parts.contains(where: \.isEmpty) else {
            throw LockboxError(
                .accessDenied, "\(operation) addresses a resource of the form \(form(depth)), not \"\(resource)\"")
        }
        return parts
    }

    /// `mailbox/folder[/messageId]`-style description of the accepted paths.
    public func form(_ depth: ClosedRange<Int>) -> String {
        let names = segmentArguments.prefix(depth.upperBound)
        var text = names.prefix(depth.lowerBound).joined(separator: "/")
        for optional in names.dropFirst(depth.lowerBound) { text += "[/\(optional)" }
        return text + String(repeating: "]", count: depth.upperBound - depth.lowerBound)
    }

    /// `addressPattern` for printable ASCII without spaces: one `@`, a non-empty
    /// local part, and a domain of at least two non-empty dot-separated labels.
    static func isASCIIAddress(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
        guard let at = bytes.firstIndex(of: UInt8(ascii: "@")), at > 0,
            !bytes[(at + 1)...].contains(UInt8(ascii: "@"))
        else { return false }
        let labels = bytes[(at + 1)...].split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        return labels.count >= 2 && labels.allSatisfy { !$0.isEmpty }
    }

    private func check(_ value: String, argument: String, position: Int) throws -> String {
        // Fast path for the common case, printable ASCII without spaces or '/': every rule
        // below holds but the address form, which is then a plain scan. Anything else
        // (including an address that fails the scan) takes the general path and its message.
        if !value.isEmpty, value.utf8.count <= 256, value != ".", value != "..",
            value.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x2F })
        {
            guard position == 0 else { return value }
            let lowered = value.lowercased()
            if !firstIsAddress || Self.isASCIIAddress(lowered) { return lowered }
        }
        func refuse(_ rule: String) -> LockboxError {
            LockboxError(.invalidInput, "\(argument) \(rule) (got \"\(value.prefix(80))\")", field: argument)
        }
        if value.isEmpty || value.allSatisfy(\.isWhitespace) { throw refuse("must not be empty") }
        if value.first!.isWhitespace || value.last!.isWhitespace {
            throw refuse("must not start or end with a space")
        }
        // By scalars: a '/' followed by a combining mark is one Character, which a Character
        // search misses, but the database's scope check (a byte prefix) sees the '/'.
        if value.unicodeScalars.contains("/") { throw refuse("must not contain '/'") }
        if value == "." || value == ".." { throw refuse("must be a name, not \(value)") }
        if value.count > 256 { throw refuse("must be at most 256 characters") }
        if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw refuse("must not contain control characters")
        }
        guard position == 0 else { return value }
        let lowered = value.lowercased()
        if firstIsAddress && lowered.wholeMatch(of: Self.addressPattern) == nil {
            throw refuse("must be \(firstSegment) like alice@contoso.com")
        }
        return lowered
    }
}

extension String {
    /// Whether this names the same path segment (or path) as `other`: the same Unicode
    /// scalars, byte for byte, as the database compares a resource with a grant's scope.
    /// Swift's `==` also equates canonically equivalent names (`Café` with U+00E9 and
    /// `Café` with `e` U+0301), which are different items to the scope check, so a
    /// service that resolved a segment with `==` could reach a sibling outside the scope.
    public func sameSegment(as other: String) -> Bool { utf8.elementsEqual(other.utf8) }
}
