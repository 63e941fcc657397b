import ArgumentParser
import Foundation
import LockboxCore

/// How a command prints its data.
enum OutputFormat: String, CaseIterable, ExpressibleByArgument, Sendable {
    /// Aligned columns for people (lists), `key: value` lines (single objects).
    case table
    /// Pretty-printed JSON with camelCase keys; lists are arrays, single objects are objects.
    case json
    /// RFC 4180 CSV with a header line; nested values are compact JSON in one cell; text a
    /// spreadsheet would run as a formula is prefixed with `'`.
    case csv
}

// MARK: Values

/// A printable value: what every command turns its result into before printing,
/// so that table, JSON and CSV show the same data in the same order.
indirect enum Value: Sendable, Decodable, Equatable {
    case null
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case date(Date)
    case array([Value])
    case object(Record)

    init(_ value: String?) { self = value.map { .string($0) } ?? .null }
    init(_ value: Int?) { self = value.map { .int($0) } ?? .null }
    init(_ value: Int64?) { self = value.map { .int(Int($0)) } ?? .null }
    init(_ value: Date?) { self = value.map { .date($0) } ?? .null }
    init(_ value: UUID?) { self = value.map { .string($0.lowercased) } ?? .null }
    init(_ values: [String]) { self = .array(values.map { .string($0) }) }

    /// Parses JSON text (e.g. an audit record's parameters); text that is not JSON stays a string.
    init(jsonText: String) {
        do {
            self = try JSONDecoder().decode(Value.self, from: Data(jsonText.utf8))
        } catch {
            self = .string(jsonText)
        }
    }

    init(_ content: ContentValue) {
        switch content {
        case .string(let value): self = .string(value)
        case .int(let value): self = .int(value)
        case .bool(let value): self = .bool(value)
        case .null: self = .null
        case .array(let values): self = .array(values.map(Value.init))
        case .object(let members):
            self = .object(Record(members.sorted { $0.key < $1.key }.map { ($0.key, Value($0.value)) }))
        }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let values = try? container.decode([Value].self) {
            self = .array(values)
        } else {
            let members = try container.decode([String: Value].self)
            self = .object(Record(members.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }))
        }
    }

    var isScalar: Bool {
        switch self {
        case .array, .object: false
        default: true
        }
    }
}

/// An ordered set of named values: one row of a list, or one printed object.
struct Record: Sendable, Equatable {
    var fields: [(key: String, value: Value)]

    init(_ fields: [(String, Value)]) { self.fields = fields.map { (key: $0.0, value: $0.1) } }

    subscript(key: String) -> Value? { fields.first { $0.key == key }?.value }

    mutating func append(_ key: String, _ value: Value) { fields.append((key, value)) }

    static func == (lhs: Record, rhs: Record) -> Bool {
        lhs.fields.count == rhs.fields.count
            && zip(lhs.fields, rhs.fields).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

/// A list printed under a single object (e.g. a request's timeline), with the
/// columns a table shows.
struct Section: Sendable {
    var key: String
    var records: [Record]
    var columns: [String]
}

// MARK: Printing

/// Renders values in one of the three formats and writes them to standard output.
struct Printer: Sendable {
    let format: OutputFormat

    /// Prints a list of models. Tables show the type's `tableColumns` only; JSON and CSV show
    /// every field, and CSV's header names them even when the list is empty.
    func list<Model: PrintableModel>(_ models: [Model]) {
        write(render(list: models.map(\.record), keys: Model.keys, columns: Model.tableColumns))
    }

    /// Prints at most `limit` of `models`, fetched as one more than `limit` so that a
    /// cut-short list is known: then standard error says so (`notice`), since an
    /// export that stopped at the limit must not pass for the whole.
    func list<Model: PrintableModel>(_ models: [Model], limit: Int, notice: String) {
        list(Array(models.prefix(limit)))
        if models.count > limit { FileHandle.standardError.write(Data("warning: \(notice)\n".utf8)) }
    }

    /// What to ask the database for, to print at most `limit` with ``list(_:limit:notice:)``.
    static func fetchLimit(_ limit: Int) -> Int { limit == Int.max ? limit : limit + 1 }

    /// Prints one object, with lists attached to it.
    func object(_ record: Record, sections: [Section] = []) {
        write(render(object: record, sections: sections))
    }

    /// Renders records whose fields are `keys` (the CSV header, printed even without records).
    func render(list records: [Record], keys: [String], columns: [String]) -> String {
        switch format {
        case .json:
            return JSONText.render(.array(records.map(Value.object))) + "\n"
        case .csv:
            return CSVText.render(records, keys: keys)
        case .table:
            return TableText.render(records, columns: columns)
        }
    }

    func render(object record: Record, sections: [Section]) -> String {
        var full = record
        for section in sections { full.append(section.key, .array(section.records.map(Value.object))) }
        switch format {
        case .json:
            return JSONText.render(.object(full)) + "\n"
        case .csv:
            return CSVText.render([full], keys: full.fields.map(\.key))
        case .table:
            var text = TableText.render(object: record)
            for section in sections {
                text += "\n\(section.key):\n"
                text += TableText.render(section.records, columns: section.columns, indent: "  ")
            }
            return text
        }
    }

    private func write(_ text: String) {
        FileHandle.standardOutput.write(Data(text.utf8))
    }
}

/// Formats dates as ISO 8601 in UTC with milliseconds, e.g. `2026-03-01T09:30:00.125Z`.
enum TimeText {
    /// As the broker's own messages print times (``Broker/timestamp(_:)``).
    static func render(_ date: Date) -> String { Broker.timestamp(date) }

    /// Parses ISO 8601 with an offset (`2026-03-01T09:30:00Z`, `…+02:00`, `…+0200`, `…+02`, with or
    /// without fractional seconds) or a date (`2026-03-01`, midnight UTC). Refuses, with the rule it
    /// broke, any other form and any date or time that does not exist (`2026-02-31`, `T24:00:00Z`,
    /// `T23:59:60Z`, an offset `+05:99`): nothing is moved to a neighbouring day.
    static func parse(_ text: String) throws(Refusal) -> Date {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let match = trimmed.wholeMatch(of: pattern) else {
            throw Refusal(
                "must be ISO 8601 with an offset, like 2026-03-01T09:30:00Z or 2026-03-01T11:30:00+02:00, "
                    + "or a date like 2026-03-01")
        }
        let output = match.output
        let (year, month, day) = (number(output.1), number(output.2), number(output.3))
        guard (1...12).contains(month) else { throw Refusal("month must be 01-12 (got \(output.2))") }
        // The calendar's own arithmetic, in UTC; the offset is applied afterwards, as written.
        guard let firstOfMonth = utcCalendar.date(from: DateComponents(year: year, month: month, day: 1)),
            let days = utcCalendar.range(of: .day, in: .month, for: firstOfMonth)?.count
        else { throw Refusal("year \(output.1) cannot be read") }
        guard (1...days).contains(day) else {
            let leap = month == 2 && day == 29 ? " (\(output.1) is not a leap year)" : ""
            throw Refusal("\(monthNames[month - 1]) \(output.1) has no day \(output.3)\(leap)")
        }
        var time = DateComponents(year: year, month: month, day: day)
        var offset = 0
        var fraction = 0.0
        if let hourText = output.4, let minuteText = output.5, let secondText = output.6, let zone = output.8 {
            let (hour, minute, second) = (number(hourText), number(minuteText), number(secondText))
            guard hour <= 23 else { throw Refusal("hour must be 00-23 (got \(hourText))") }
            guard minute <= 59 else { throw Refusal("minute must be 00-59 (got \(minuteText))") }
            guard second <= 59 else { throw Refusal("second must be 00-59 (got \(secondText))") }
            (time.hour, time.minute, time.second) = (hour, minute, second)
            if let fractionText = output.7 { fraction = Double("0" + fractionText) ?? 0 }
            if zone != "Z", let sign = output.9, let offsetHourText = output.10 {
                let offsetHour = number(offsetHourText)
                let offsetMinute = output.11.map(number) ?? 0
                guard offsetHour <= 23 else {
                    throw Refusal("the offset's hours must be 00-23 (got \(offsetHourText))")
                }
                guard offsetMinute <= 59 else {
                    throw Refusal("the offset's minutes must be 00-59 (got \(output.11 ?? ""))")
                }
                offset = (sign == "-" ? -1 : 1) * (offsetHour * 3600 + offsetMinute * 60)
            }
        }
        guard let local = utcCalendar.date(from: time) else { throw Refusal("the time cannot be read") }
        return local.addingTimeInterval(Double(-offset) + fraction)
    }

    private static let utcCalendar: Calendar = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 0)!
        return calendar
    }()

    /// Why a time given on the command line was refused: the rule it broke.
    struct Refusal: Error, Sendable {
        let rule: String
        init(_ rule: String) { self.rule = rule }
    }

    /// `YYYY-MM-DD`, optionally `THH:MM:SS[.fraction]` and `Z` or `±HH:MM`, `±HHMM`, `±HH`. ASCII digits
    /// only (`\d` would match other scripts' digits); ranges are checked after matching.
    nonisolated(unsafe) private static let pattern = #/
        ([0-9]{4}) - ([0-9]{2}) - ([0-9]{2})
        (?: T ([0-9]{2}) : ([0-9]{2}) : ([0-9]{2}) (\.[0-9]+)?
            (Z | ([+-]) ([0-9]{2}) (?: :? ([0-9]{2}) )? ) )?
        /#

    private static let monthNames = [
        "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
        "November", "December",
    ]

    private static func number(_ digits: Substring) -> Int { Int(digits)! }
}

/// JSON text without the reordering and escaping of Foundation's serializer.
enum JSONText {
    static func render(_ value: Value, indent: String = "", pretty: Bool = true) -> String {
        let inner = indent + "  "
        let newline = pretty ? "\n" : ""
        let separator = pretty ? ": " : ":"
        switch value {
        case .null: return "null"
        case .bool(let value): return value ? "true" : "false"
        case .int(let value): return String(value)
        case .double(let value): return value.isFinite ? String(value) : "null"
        case .string(let value): return quote(value)
        case .date(let value): return quote(TimeText.render(value))
        case .array(let values):
            if values.isEmpty { return "[]" }
            let items = values.map { (pretty ? inner : "") + render($0, indent: inner, pretty: pretty) }
            return "[" + newline + items.joined(separator: "," + newline) + newline + (pretty ? indent : "") + "]"
        case .object(let record):
            if record.fields.isEmpty { return "{}" }
            let items = record.fields.map {
                (pretty ? inner : "") + quote($0.key) + separator + render($0.value, indent: inner, pretty: pretty)
            }
            return "{" + newline + items.joined(separator: "," + newline) + newline + (pretty ? indent : "") + "}"
        }
    }

    static func quote(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                let hex = String(scalar.value, radix: 16)
                result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

/// RFC 4180 CSV: a header line naming `keys`, then one line per record.
enum CSVText {
    static func render(_ records: [Record], keys: [String]) -> String {
        var lines = [keys.map(escape).joined(separator: ",")]
        for record in records {
            lines.append(keys.map { escape(field(record[$0] ?? .null)) }.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A cell as CSV holds it: text that a spreadsheet would run as a formula (it starts with
    /// `=`, `+`, `-`, `@`, a tab or a carriage return, OWASP's list) is prefixed with `'`, so that
    /// a ticket, reason or resource written by an operator or a customer opens as text.
    static func field(_ value: Value) -> String {
        let text = cell(value)
        guard case .string = value, let first = text.unicodeScalars.first, formulaStarts.contains(first) else {
            return text
        }
        return "'" + text
    }

    private static let formulaStarts: Set<Unicode.Scalar> = ["=", "+", "-", "@", "\t", "\r"]

    static func cell(_ value: Value) -> String {
        switch value {
        case .null: ""
        case .string(let value): value
        case .date(let value): TimeText.render(value)
        case .bool, .int, .double: JSONText.render(value)
        case .array, .object: JSONText.render(value, pretty: false)
        }
    }

    /// Quotes a field holding a comma, a quote or a line break. Checked by Unicode scalar: a
    /// CR LF pair is one `Character`, equal to neither `"\r"` nor `"\n"`.
    static func escape(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else {
            return text
        }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// Aligned columns for lists, `key: value` lines for objects.
enum TableText {
    static let maxCell = 60

    static func render(_ records: [Record], columns: [String], indent: String = "") -> String {
        guard !records.isEmpty else { return indent + "(none)\n" }
        let rows = records.map { record in columns.map { shorten(cell(record[$0] ?? .null)) } }
        var widths = columns.map(width)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], width(cell)) }
        }
        // Padded by the columns a terminal shows, not by `padding(toLength:)`, which counts UTF-16
        // units and cut a cell of emoji short (in the middle of one) when it was the widest.
        func line(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { index, cell in
                index == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - width(cell))
            }
            return indent + padded.joined(separator: "  ")
        }
        return ([line(columns)] + rows.map(line)).joined(separator: "\n") + "\n"
    }

    static func render(object record: Record, indent: String = "") -> String {
        let width = record.fields.map(\.key.count).max() ?? 0
        var text = ""
        for (key, value) in record.fields {
            let label = indent + (key + ":").padding(toLength: width + 1, withPad: " ", startingAt: 0)
            switch value {
            case .object(let nested) where !nested.fields.isEmpty:
                text += indent + key + ":\n" + render(object: nested, indent: indent + "  ")
            case .array(let values)
            where !values.isEmpty && values.allSatisfy({ if case .object = $0 { true } else { false } }):
                // A list of objects: a table of their fields.
                let records = values.compactMap { if case .object(let record) = $0 { record } else { nil } }
                var columns: [String] = []
                for record in records {
                    for field in record.fields where !columns.contains(field.key) { columns.append(field.key) }
                }
                text += indent + key + ":\n" + render(records, columns: columns, indent: indent + "  ")
            case .array(let values) where values.contains(where: { !$0.isScalar }):
                text += indent + key + ":\n"
                text += indent + "  " + JSONText.render(value, indent: indent + "  ") + "\n"
            default:
                text += label + " " + singleLine(cell(value)) + "\n"
            }
        }
        return text
    }

    static func cell(_ value: Value) -> String {
        switch value {
        case .null, .array([]): "-"
        case .array(let values) where values.allSatisfy(\.isScalar):
            values.map(cell).joined(separator: ", ")
        default: CSVText.cell(value)
        }
    }

    static func singleLine(_ text: String) -> String {
        String(text.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : Character($0) })
    }

    /// At most ``maxCell`` columns wide, ending in `…` when cut.
    static func shorten(_ text: String) -> String {
        let line = singleLine(text)
        guard width(line) > maxCell else { return line }
        var kept = ""
        var used = 0
        for character in line {
            let next = width(character)
            if used + next > maxCell - 1 { break }
            kept.append(character)
            used += next
        }
        return kept + "…"
    }

    /// The columns a terminal shows `text` in: East Asian wide and fullwidth characters and
    /// emoji take two, combining marks and format characters none, everything else one.
    static func width(_ text: String) -> Int { text.reduce(0) { $0 + width($1) } }

    static func width(_ character: Character) -> Int {
        let scalars = character.unicodeScalars
        guard let first = scalars.first else { return 0 }
        if first.properties.isEmojiPresentation || (first.properties.isEmoji && scalars.contains("\u{FE0F}")) {
            return 2
        }
        switch first.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format: return 0
        default: break
        }
        return wideRanges.contains { $0.contains(first.value) } ? 2 : 1
    }

    /// East Asian Wide (W) and Fullwidth (F) blocks (Unicode's EastAsianWidth.txt, by block).
    private static let wideRanges: [ClosedRange<UInt32>] = [
        0x1100...0x115F, 0x2329...0x232A, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF,
        0xA000...0xA4CF, 0xA960...0xA97F, 0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE10...0xFE19, 0xFE30...0xFE6F,
        0xFF00...0xFF60, 0xFFE0...0xFFE6, 0x1B000...0x1B2FF, 0x1F200...0x1F2FF, 0x20000...0x2FFFD,
        0x30000...0x3FFFD,
    ]
}

// MARK: Models as records

/// One printed field of a model: its name and how to read it from the model.
struct Field<Model>: Sendable {
    let key: String
    let value: @Sendable (Model) -> Value

    init(_ key: String, _ value: @escaping @Sendable (Model) -> Value) {
        self.key = key
        self.value = value
    }
}

/// A model printed as an object or as a row of a list. Its fields are named by the
/// type, not by a record, so an empty list still has its CSV header.
protocol PrintableModel {
    /// Every printed field, in order: JSON's keys and CSV's columns.
    static var fields: [Field<Self>] { get }
    /// The fields a table shows, in order.
    static var tableColumns: [String] { get }
}

extension PrintableModel {
    /// The names of `fields`.
    static var keys: [String] { fields.map(\.key) }

    var record: Record { Record(Self.fields.map { ($0.key, $0.value(self)) }) }
}

extension Tenant: PrintableModel {
    static let fields: [Field<Tenant>] = [
        Field("tenantId") { Value($0.tenantId) }, Field("name") { .string($0.name) },
        Field("customerLockbox") { .bool($0.customerLockbox) }, Field("serviceAccount") { .string($0.serviceAccount) },
        Field("createdAt") { .date($0.createdAt) },
    ]
    static let tableColumns = ["name", "customerLockbox", "serviceAccount", "createdAt", "tenantId"]
}

extension RoleAssignment: PrintableModel {
    static let fields: [Field<RoleAssignment>] = [
        Field("tenant") { .string($0.tenant) }, Field("upn") { .string($0.upn) },
        Field("role") { .string($0.role.rawValue) }, Field("grantedAt") { .date($0.grantedAt) },
        Field("grantedBy") { .string($0.grantedBy) },
    ]
    static let tableColumns = ["upn", "role", "grantedAt", "grantedBy"]
}

extension SupportOperator: PrintableModel {
    static let fields: [Field<SupportOperator>] = [
        Field("alias") { .string($0.alias) }, Field("isManager") { .bool($0.isManager) },
        Field("createdAt") { .date($0.createdAt) },
    ]
    static let tableColumns = ["alias", "isManager", "createdAt"]
}

extension AccessRequest: PrintableModel {
    static let fields: [Field<AccessRequest>] = [
        Field("requestId") { Value($0.requestId) }, Field("tenant") { .string($0.tenant) },
        Field("workload") { .string($0.workload.rawValue) }, Field("ticket") { .string($0.ticket) },
        Field("reason") { .string($0.reason) }, Field("requester") { .string($0.requester) },
        Field("durationMinutes") { .int($0.durationMinutes) }, Field("resource") { Value($0.resource) },
        Field("status") { .string($0.status.rawValue) }, Field("createdAt") { .date($0.createdAt) },
        Field("reviewedAt") { Value($0.reviewedAt) }, Field("internalApprover") { Value($0.internalApprover) },
        Field("notifiedAt") { Value($0.notifiedAt) }, Field("customerDeadline") { Value($0.customerDeadline) },
        Field("decidedAt") { Value($0.decidedAt) }, Field("decidedBy") { Value($0.decidedBy) },
        Field("decision") { Value($0.decision) }, Field("accessStartsAt") { Value($0.accessStartsAt) },
        Field("accessEndsAt") { Value($0.accessEndsAt) }, Field("endedAt") { Value($0.endedAt) },
        Field("endedReason") { Value($0.endedReason) },
    ]
    static let tableColumns = [
        "requestId", "tenant", "workload", "requester", "status", "durationMinutes", "ticket", "createdAt",
        "accessEndsAt",
    ]
}

extension AuditRecord: PrintableModel {
    static let fields: [Field<AuditRecord>] = [
        Field("id") { .int(Int($0.id)) }, Field("occurredAt") { .date($0.occurredAt) },
        Field("tenant") { Value($0.tenant) }, Field("recordType") { .string($0.recordType) },
        Field("user") { .string($0.user) }, Field("actor") { .string($0.actor) },
        Field("clientIp") { Value($0.clientIp) }, Field("activity") { .string($0.activity) },
        Field("item") { .string($0.item) }, Field("requestId") { Value($0.requestId) },
        Field("workload") { Value($0.workload) }, Field("result") { .string($0.result) },
        Field("parameters") { Value(jsonText: $0.parameters) },
    ]
    static let tableColumns = [
        "id", "occurredAt", "tenant", "user", "actor", "activity", "item", "requestId", "workload", "result",
    ]
}

extension LockboxNotification: PrintableModel {
    static let fields: [Field<LockboxNotification>] = [
        Field("notificationId") { .int(Int($0.notificationId)) }, Field("tenant") { .string($0.tenant) },
        Field("requestId") { Value($0.requestId) }, Field("recipient") { .string($0.recipient) },
        Field("subject") { .string($0.subject) }, Field("body") { .string($0.body) },
        Field("createdAt") { .date($0.createdAt) }, Field("sentAt") { Value($0.sentAt) },
        Field("withdrawnAt") { Value($0.withdrawnAt) }, Field("withdrawnReason") { Value($0.withdrawnReason) },
    ]
    static let tableColumns = [
        "notificationId", "tenant", "recipient", "requestId", "createdAt", "sentAt", "withdrawnReason",
    ]
}

extension AuditorGrant: PrintableModel {
    static let fields: [Field<AuditorGrant>] = [
        Field("login") { .string($0.login) }, Field("tenant") { .string($0.tenant) },
        Field("status") { .string($0.status.rawValue) },
    ]
    static let tableColumns = ["login", "tenant", "status"]
}

/// An operation of a connector's catalogue, with the workload it belongs to.
struct CatalogueEntry: PrintableModel {
    var workload: Workload
    var operation: OperationDescriptor

    static let fields: [Field<CatalogueEntry>] = [
        Field("workload") { .string($0.workload.rawValue) }, Field("name") { .string($0.operation.name) },
        Field("kind") { .string($0.operation.kind.rawValue) }, Field("addresses") { .string($0.operation.addresses) },
        Field("summary") { .string($0.operation.summary) },
        Field("requiredArguments") { Value($0.operation.requiredArguments) },
        Field("optionalArguments") { Value($0.operation.optionalArguments) },
    ]
    static let tableColumns = ["workload", "name", "kind", "requiredArguments", "summary"]
}
