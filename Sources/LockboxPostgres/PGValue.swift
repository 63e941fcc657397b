import Foundation

/// PostgreSQL type OIDs used when binding parameters.
public enum PGType {
    public static let unknown: UInt32 = 0
    public static let bool: UInt32 = 16
    public static let bytea: UInt32 = 17
    public static let int8: UInt32 = 20
    public static let int4: UInt32 = 23
    public static let text: UInt32 = 25
    public static let float8: UInt32 = 701
    public static let inet: UInt32 = 869
    public static let timestamptz: UInt32 = 1184
    public static let interval: UInt32 = 1186
    public static let uuid: UInt32 = 2950
    public static let jsonb: UInt32 = 3802
}

/// One bound parameter as it is sent to the server.
public struct PGBind: Sendable, Hashable {
    /// Text-format value, binary value, or SQL NULL.
    public enum Value: Sendable, Hashable {
        case text(String)
        case binary([UInt8])
        case null
    }
    public var value: Value
    public var type: UInt32

    public init(_ value: Value, type: UInt32) {
        self.value = value
        self.type = type
    }
}

/// A Swift value that can be sent as a query parameter.
public protocol PGEncodable: Sendable {
    /// The parameter as sent to the server.
    var pgBind: PGBind { get }
}

/// A Swift value that can be read from a result column (text format).
public protocol PGDecodable: Sendable {
    /// Decodes the column's text; `nil` is SQL NULL. Throws a message on failure.
    static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Self
    /// The PostgreSQL type name shown in decoding errors.
    static var pgTypeName: String { get }
}

/// Why a column's text could not become the requested Swift type.
public struct PGDecodeFailure: Error, Sendable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    static let unexpectedNull = PGDecodeFailure("unexpected NULL")
}

extension PGDecodable {
    static func nonNull(_ text: String?) throws(PGDecodeFailure) -> String {
        guard let text else { throw .unexpectedNull }
        return text
    }
}

// MARK: - Optional

extension Optional: PGEncodable where Wrapped: PGEncodable {
    public var pgBind: PGBind {
        switch self {
        case .some(let value): value.pgBind
        case .none: PGBind(.null, type: PGType.unknown)
        }
    }
}

extension Optional: PGDecodable where Wrapped: PGDecodable {
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Wrapped? {
        guard let text else { return nil }
        return try Wrapped.pgDecode(text)
    }
    public static var pgTypeName: String { Wrapped.pgTypeName + "?" }
}

// MARK: - Numbers, booleans, text

extension Int: PGEncodable, PGDecodable {
    public var pgBind: PGBind { PGBind(.text(String(self)), type: PGType.int8) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Int {
        let text = try nonNull(text)
        guard let value = Int(text) else { throw PGDecodeFailure("not an integer: \(text.prefix(40))") }
        return value
    }
    public static var pgTypeName: String { "Int" }
}

extension Int64: PGEncodable, PGDecodable {
    public var pgBind: PGBind { PGBind(.text(String(self)), type: PGType.int8) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Int64 {
        let text = try nonNull(text)
        guard let value = Int64(text) else { throw PGDecodeFailure("not an integer: \(text.prefix(40))") }
        return value
    }
    public static var pgTypeName: String { "Int64" }
}

extension Int32: PGEncodable, PGDecodable {
    public var pgBind: PGBind { PGBind(.text(String(self)), type: PGType.int4) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Int32 {
        let text = try nonNull(text)
        guard let value = Int32(text) else { throw PGDecodeFailure("not a 32-bit integer: \(text.prefix(40))") }
        return value
    }
    public static var pgTypeName: String { "Int32" }
}

extension Bool: PGEncodable, PGDecodable {
    public var pgBind: PGBind { PGBind(.text(self ? "t" : "f"), type: PGType.bool) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Bool {
        switch try nonNull(text) {
        case "t", "true": return true
        case "f", "false": return false
        case let other: throw PGDecodeFailure("not a boolean: \(other.prefix(40))")
        }
    }
    public static var pgTypeName: String { "Bool" }
}

extension Double: PGEncodable, PGDecodable {
    public var pgBind: PGBind {
        let text: String
        if isNaN { text = "NaN" } else if self == .infinity { text = "Infinity" } else if self == -.infinity {
            text = "-Infinity"
        } else { text = "\(self)" }
        return PGBind(.text(text), type: PGType.float8)
    }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Double {
        let text = try nonNull(text)
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default:
            guard let value = Double(text) else { throw PGDecodeFailure("not a number: \(text.prefix(40))") }
            return value
        }
    }
    public static var pgTypeName: String { "Double" }
}

extension String: PGEncodable, PGDecodable {
    /// Strings are sent untyped so the server can coerce them to the column's type (text, inet, …).
    public var pgBind: PGBind { PGBind(.text(self), type: PGType.unknown) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> String { try nonNull(text) }
    public static var pgTypeName: String { "String" }
}

extension UUID: PGEncodable, PGDecodable {
    public var pgBind: PGBind { PGBind(.text(uuidString.lowercased()), type: PGType.uuid) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> UUID {
        let text = try nonNull(text)
        guard let value = parse(text) else { throw PGDecodeFailure("not a UUID: \(text.prefix(40))") }
        return value
    }
    public static var pgTypeName: String { "UUID" }

    /// The server's form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits of
    /// either case) read directly; every authorization answer carries one, and
    /// Foundation's parser goes through `sscanf`. Nil for anything else.
    static func parse(_ text: String) -> UUID? {
        var text = text
        text.makeContiguousUTF8()
        return text.utf8.withContiguousStorageIfAvailable { chars -> UUID? in
            guard chars.count == 36 else { return nil }
            var bytes: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            let parsed = withUnsafeMutableBytes(of: &bytes) { out -> Bool in
                var index = 0
                for byte in 0..<16 {
                    if index == 8 || index == 13 || index == 18 || index == 23 {
                        guard chars[index] == UInt8(ascii: "-") else { return false }
                        index += 1
                    }
                    guard let high = hexValue(chars[index]), let low = hexValue(chars[index + 1]) else { return false }
                    out[byte] = high << 4 | low
                    index += 2
                }
                return true
            }
            return parsed ? UUID(uuid: bytes) : nil
        } ?? nil
    }

    private static func hexValue(_ char: UInt8) -> UInt8? {
        switch char {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): char - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): char - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): char - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

// MARK: - bytea

extension Data: PGEncodable, PGDecodable {
    public var pgBind: PGBind { PGBind(.binary([UInt8](self)), type: PGType.bytea) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Data {
        let text = try nonNull(text)
        guard text.hasPrefix("\\x") else { throw PGDecodeFailure("bytea not in hex format") }
        let hex = text.utf8.dropFirst(2)
        guard hex.count % 2 == 0 else { throw PGDecodeFailure("odd-length bytea hex") }
        var bytes = [UInt8]()
        bytes.reserveCapacity(hex.count / 2)
        var high: UInt8? = nil
        for char in hex {
            let nibble: UInt8
            switch char {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): nibble = char - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): nibble = char - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): nibble = char - UInt8(ascii: "A") + 10
            default: throw PGDecodeFailure("invalid bytea hex digit")
            }
            if let h = high {
                bytes.append(h << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
        }
        return Data(bytes)
    }
    public static var pgTypeName: String { "Data (bytea)" }
}

// MARK: - timestamptz

extension Date: PGEncodable, PGDecodable {
    /// Sent as UTC ISO 8601 with microseconds, so no precision is lost.
    public var pgBind: PGBind { PGBind(.text(PGTimestamp.format(self)), type: PGType.timestamptz) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Date {
        try PGTimestamp.parse(try nonNull(text))
    }
    public static var pgTypeName: String { "Date (timestamptz)" }
}

/// Conversions between `Date` and PostgreSQL's ISO timestamp text, exact to the microsecond.
public enum PGTimestamp {
    /// Whole microseconds since 1970-01-01 UTC, rounded to the nearest.
    public static func microseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
    }

    /// The date at a whole number of microseconds since 1970-01-01 UTC.
    public static func date(microseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(microseconds) / 1_000_000)
    }

    /// `2026-11-29 05:49:53.123456+00`.
    public static func format(_ date: Date) -> String {
        let micros = microseconds(date)
        var seconds = micros / 1_000_000
        var fraction = micros % 1_000_000
        if fraction < 0 {
            fraction += 1_000_000
            seconds -= 1
        }
        var days = seconds / 86_400
        var secondOfDay = seconds % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let (year, month, day) = civil(fromDays: days)
        let yearText: String
        let era: String
        if year <= 0 {
            yearText = pad(Int64(1 - year), 4)
            era = " BC"
        } else {
            yearText = pad(year, 4)
            era = ""
        }
        return "\(yearText)-\(pad(month, 2))-\(pad(day, 2)) \(pad(secondOfDay / 3600, 2)):"
            + "\(pad(secondOfDay % 3600 / 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(fraction, 6))+00\(era)"
    }

    /// Parses the server's ISO output (`DateStyle=ISO`), any UTC offset, optional fraction and ` BC`.
    public static func parse(_ text: String) throws(PGDecodeFailure) -> Date {
        switch text {
        case "infinity": return .distantFuture
        case "-infinity": return .distantPast
        default: break
        }
        var bytes = Array(text.utf8)
        var bc = false
        if bytes.count > 3, bytes.suffix(3) == Array(" BC".utf8) {
            bc = true
            bytes.removeLast(3)
        }
        var index = 0
        func number(_ minDigits: Int, _ maxDigits: Int) throws(PGDecodeFailure) -> Int64 {
            var value: Int64 = 0
            var count = 0
            while index < bytes.count, count < maxDigits, bytes[index] >= 48, bytes[index] <= 57 {
                value = value * 10 + Int64(bytes[index] - 48)
                index += 1
                count += 1
            }
            guard count >= minDigits else { throw PGDecodeFailure("not a timestamp: \(text.prefix(40))") }
            return value
        }
        func expect(_ char: UInt8) throws(PGDecodeFailure) {
            guard index < bytes.count, bytes[index] == char else {
                throw PGDecodeFailure("not a timestamp: \(text.prefix(40))")
            }
            index += 1
        }
        var year = try number(4, 9)
        if bc { year = 1 - year }
        try expect(UInt8(ascii: "-"))
        let month = try number(2, 2)
        try expect(UInt8(ascii: "-"))
        let day = try number(2, 2)
        guard index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "T") else {
            throw PGDecodeFailure("not a timestamp: \(text.prefix(40))")
        }
        index += 1
        let hour = try number(2, 2)
        try expect(UInt8(ascii: ":"))
        let minute = try number(2, 2)
        try expect(UInt8(ascii: ":"))
        let second = try number(2, 2)
        var micros: Int64 = 0
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            let start = index
            let digits = try number(1, 6)
            micros = digits * Int64(pow(10.0, Double(6 - (index - start))))
        }
        var offsetSeconds: Int64 = 0
        if index < bytes.count {
            let sign: Int64 = bytes[index] == UInt8(ascii: "-") ? -1 : 1
            guard bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") else {
                throw PGDecodeFailure("not a timestamp: \(text.prefix(40))")
            }
            index += 1
            var offset = try number(2, 2) * 3600
            if index < bytes.count, bytes[index] == UInt8(ascii: ":") {
                index += 1
                offset += try number(2, 2) * 60
                if index < bytes.count, bytes[index] == UInt8(ascii: ":") {
                    index += 1
                    offset += try number(2, 2)
                }
            }
            offsetSeconds = sign * offset
        }
        guard index == bytes.count else { throw PGDecodeFailure("not a timestamp: \(text.prefix(40))") }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        // PostgreSQL goes to the year 294276, past Int64 microseconds since 1970 (the year 294247):
        // refused, not trapped on.
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        let (total, overflowAgain) = scaled.addingReportingOverflow(micros)
        guard !overflow, !overflowAgain else {
            throw PGDecodeFailure("timestamp too far from 1970 to count in microseconds: \(text.prefix(40))")
        }
        return date(microseconds: total)
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let text = String(value)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }

    // Howard Hinnant's civil-from-days algorithms (proleptic Gregorian calendar).
    private static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    private static func civil(fromDays days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (month <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, month, day)
    }
}

// MARK: - interval

extension Duration: PGEncodable, PGDecodable {
    /// Sent as a whole number of microseconds.
    public var pgBind: PGBind {
        let micros = components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000
        return PGBind(.text("\(micros) microseconds"), type: PGType.interval)
    }
    /// Reads `IntervalStyle=iso_8601` output (`PT4H`, `P1DT2H30M`, `PT-0.5S`); a day is 24 h.
    /// Intervals with months or years are refused: they have no fixed length.
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> Duration {
        let text = try nonNull(text)
        var micros: Int64 = 0
        var inTime = false
        var number = ""
        guard text.hasPrefix("P") else { throw PGDecodeFailure("interval not in ISO 8601 style: \(text)") }
        for char in text.dropFirst() {
            switch char {
            case "T": inTime = true
            case "0"..."9", "-", ".": number.append(char)
            default:
                guard let value = Double(number) else { throw PGDecodeFailure("bad interval: \(text)") }
                number = ""
                let unit: Double
                switch (char, inTime) {
                case ("D", false): unit = 86_400_000_000
                case ("W", false): unit = 7 * 86_400_000_000
                case ("H", true): unit = 3_600_000_000
                case ("M", true): unit = 60_000_000
                case ("S", true): unit = 1_000_000
                case ("Y", false), ("M", false):
                    throw PGDecodeFailure("interval with months or years has no fixed length: \(text)")
                default: throw PGDecodeFailure("bad interval: \(text)")
                }
                // A part or a sum beyond Int64 microseconds (about 292,000 years) is refused, not trapped on.
                guard let part = Int64(exactly: (value * unit).rounded()),
                    case let (sum, overflow) = micros.addingReportingOverflow(part), !overflow
                else { throw PGDecodeFailure("interval too long to count in microseconds: \(text)") }
                micros = sum
            }
        }
        return .microseconds(micros)
    }
    public static var pgTypeName: String { "Duration (interval)" }
}

// MARK: - jsonb and inet

/// A `jsonb` value, kept as its JSON text.
public struct PGJSON: PGEncodable, PGDecodable, Hashable {
    /// The JSON text.
    public var text: String

    /// Wraps JSON text as-is (it is validated by the server when bound).
    public init(text: String) { self.text = text }

    /// Encodes a value with sorted keys.
    public init<T: Encodable>(encoding value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        self.text = String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// A flat object of strings, keys sorted: the same document as
    /// `PGJSON(encoding:)` gives for a `[String: String]`, without JSONEncoder's cost.
    /// Strings are escaped per RFC 8259 (quote, backslash and control characters).
    public init(object: [String: String]) {
        var text = "{"
        var first = true
        for key in object.keys.sorted() {
            if !first { text.append(",") }
            first = false
            Self.appendQuoted(key, to: &text)
            text.append(":")
            Self.appendQuoted(object[key]!, to: &text)
        }
        text.append("}")
        self.text = text
    }

    private static func appendQuoted(_ string: String, to text: inout String) {
        text.append("\"")
        if !string.utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) {
            text.append(string)
        } else {
            for scalar in string.unicodeScalars {
                switch scalar {
                case "\"": text.append("\\\"")
                case "\\": text.append("\\\\")
                case "\n": text.append("\\n")
                case "\r": text.append("\\r")
                case "\t": text.append("\\t")
                case "\u{08}": text.append("\\b")
                case "\u{0C}": text.append("\\f")
                case _ where scalar.value < 0x20:
                    let hex = String(scalar.value, radix: 16)
                    text.append("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
                default: text.unicodeScalars.append(scalar)
                }
            }
        }
        text.append("\"")
    }

    /// Decodes the JSON text into `type`.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(text.utf8))
    }

    /// The value as Foundation objects (`[String: Any]`, arrays, numbers, strings, `NSNull`).
    public func object() throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])
    }

    public var pgBind: PGBind { PGBind(.text(text), type: PGType.jsonb) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> PGJSON { PGJSON(text: try nonNull(text)) }
    public static var pgTypeName: String { "PGJSON (jsonb)" }
}

/// An `inet` value (an IPv4 or IPv6 address, optionally with a prefix), as text.
public struct PGInet: PGEncodable, PGDecodable, Hashable, CustomStringConvertible {
    /// The address as the server prints it, e.g. `10.0.0.1` or `2001:db8::1`.
    public var address: String
    public init(_ address: String) { self.address = address }
    public var description: String { address }
    public var pgBind: PGBind { PGBind(.text(address), type: PGType.inet) }
    public static func pgDecode(_ text: String?) throws(PGDecodeFailure) -> PGInet { PGInet(try nonNull(text)) }
    public static var pgTypeName: String { "PGInet (inet)" }
}

// MARK: - arrays

/// A one-dimensional array sent in PostgreSQL's array text form (`{"a","b",NULL}`),
/// untyped so the server reads it as the parameter's declared array type
/// (`text[]`, `inet[]`, `jsonb[]`, `timestamptz[]`, …). Elements are the text
/// forms of the values; nil is NULL.
public struct PGArray: PGEncodable, Hashable {
    public var elements: [String?]

    public init(_ elements: [String?]) { self.elements = elements }

    /// The array of the values' text forms (binary values are not supported in arrays).
    public init(_ values: [any PGEncodable]) {
        elements = values.map { value in
            switch value.pgBind.value {
            case .text(let text): text
            case .null, .binary: nil
            }
        }
    }

    public var pgBind: PGBind {
        var bytes: [UInt8] = [UInt8(ascii: "{")]
        bytes.reserveCapacity(2 + elements.reduce(0) { $0 + ($1?.utf8.count ?? 4) + 3 })
        for (index, element) in elements.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            guard let element else {
                bytes.append(contentsOf: "NULL".utf8)
                continue
            }
            bytes.append(UInt8(ascii: "\""))
            for byte in element.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { bytes.append(UInt8(ascii: "\\")) }
                bytes.append(byte)
            }
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
        return PGBind(.text(String(decoding: bytes, as: UTF8.self)), type: PGType.unknown)
    }
}
