/// A SQL statement and its parameters.
///
/// Interpolated values become `$n` parameters, never SQL text:
/// `"SELECT * FROM t WHERE name = \(name)"` sends `$1` and binds `name`.
/// Identifiers (e.g. a database name) are interpolated with `\(identifier:)`,
/// which quotes them.
public struct PGQuery: Sendable, Hashable, ExpressibleByStringInterpolation {
    /// The SQL text with `$n` placeholders.
    public var sql: String
    /// The parameters, in placeholder order.
    public var binds: [PGBind]

    /// A statement with explicit `$n` placeholders and their values.
    public init(_ sql: String, _ values: [any PGEncodable] = []) {
        self.sql = sql
        self.binds = values.map(\.pgBind)
    }

    public init(stringLiteral value: String) {
        self.sql = value
        self.binds = []
    }

    public init(stringInterpolation: StringInterpolation) {
        self.sql = stringInterpolation.sql
        self.binds = stringInterpolation.binds
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var binds: [PGBind] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
        }

        public mutating func appendLiteral(_ literal: String) { sql += literal }

        /// Binds `value` as the next `$n` parameter.
        public mutating func appendInterpolation(_ value: some PGEncodable) {
            binds.append(value.pgBind)
            sql += "$\(binds.count)"
        }

        /// Binds an optional value (NULL when nil).
        public mutating func appendInterpolation<T: PGEncodable>(_ value: T?) {
            binds.append(value.pgBind)
            sql += "$\(binds.count)"
        }

        /// Inserts a double-quoted SQL identifier.
        public mutating func appendInterpolation(identifier: String) {
            sql += "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
    }
}

/// The rows a statement returned, decoded from text.
public struct PGRows: Sendable, Sequence {
    /// Column names, in order.
    public let columns: [String]
    /// Raw text values (nil for NULL), row by row.
    public let values: [[String?]]
    /// Rows affected, for INSERT/UPDATE/DELETE (`PQcmdTuples`).
    public let affectedRows: Int

    public init(columns: [String], values: [[String?]], affectedRows: Int) {
        self.columns = columns
        self.values = values
        self.affectedRows = affectedRows
    }

    public var count: Int { values.count }
    public var isEmpty: Bool { values.isEmpty }
    public var first: PGRow? { values.isEmpty ? nil : PGRow(columns: columns, values: values[0]) }

    public func makeIterator() -> some IteratorProtocol<PGRow> {
        values.lazy.map { PGRow(columns: columns, values: $0) }.makeIterator()
    }

    /// Decodes every row as a tuple of the given types, column by column.
    public func decode<each T: PGDecodable>(_ types: (repeat each T).Type) throws -> [(repeat each T)] {
        try map { try $0.decode((repeat each T).self) }
    }
}

/// One result row.
public struct PGRow: Sendable {
    public let columns: [String]
    public let values: [String?]

    /// Decodes the column at `index`; the error names the column and the type.
    public func decode<T: PGDecodable>(_ type: T.Type, at index: Int) throws -> T {
        guard index < values.count else {
            throw PostgresError(kind: .decoding, message: "no column at index \(index) (row has \(values.count))")
        }
        do {
            return try T.pgDecode(values[index])
        } catch {
            throw PostgresError(
                kind: .decoding,
                message: "column \"\(columns[index])\" cannot be decoded as \(T.pgTypeName): \(error.reason)",
                column: columns[index]
            )
        }
    }

    /// Decodes the named column; the error names the column and the type.
    public func decode<T: PGDecodable>(_ type: T.Type = T.self, column name: String) throws -> T {
        guard let index = columns.firstIndex(of: name) else {
            throw PostgresError(kind: .decoding, message: "result has no column \"\(name)\"", column: name)
        }
        return try decode(T.self, at: index)
    }

    /// Decodes the row as a tuple of the given types, column by column.
    public func decode<each T: PGDecodable>(_ types: (repeat each T).Type) throws -> (repeat each T) {
        var index = 0
        func next<U: PGDecodable>(_ type: U.Type) throws -> U {
            defer { index += 1 }
            return try decode(U.self, at: index)
        }
        return (repeat try next((each T).self))
    }

    /// The named column's raw text, nil for NULL or a missing column.
    public subscript(_ name: String) -> String? {
        guard let index = columns.firstIndex(of: name) else { return nil }
        return values[index]
    }
}

extension PGQuery {
    /// Joins two statements' text, renumbering the right side's `$n` placeholders
    /// after the left side's parameters (placeholders must not appear inside string literals).
    public static func + (lhs: PGQuery, rhs: PGQuery) -> PGQuery {
        let offset = lhs.binds.count
        var sql = lhs.sql
        var digits = ""
        var afterDollar = false
        func flush() {
            if afterDollar {
                sql += digits.isEmpty ? "$" : "$\(Int(digits)! + offset)"
            }
            afterDollar = false
            digits = ""
        }
        for character in rhs.sql {
            if afterDollar, character.isASCII, character.isNumber {
                digits.append(character)
                continue
            }
            flush()
            if character == "$" {
                afterDollar = true
            } else {
                sql.append(character)
            }
        }
        flush()
        var joined = PGQuery(stringLiteral: sql)
        joined.binds = lhs.binds + rhs.binds
        return joined
    }

    public static func += (lhs: inout PGQuery, rhs: PGQuery) { lhs = lhs + rhs }
}
