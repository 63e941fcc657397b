import Foundation
import LockboxPostgres
import LockboxTestSupport
import Subprocess
import Testing

/// The package's `sql/` folder, found from this file's path.
enum SQLFolder {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // ReportTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // package root
        .appendingPathComponent("sql")

    static func report(_ name: String) -> String {
        root.appendingPathComponent("reports").appendingPathComponent(name + ".sql").path
    }

    /// Every report file's name, without `.sql`.
    static var reportNames: [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("reports").path)) ?? []
        return files.filter { $0.hasSuffix(".sql") }.map { String($0.dropLast(4)) }.sorted()
    }
}

/// A report's parameters, as auditors pass them with `psql -v`.
struct ReportParameters: Sendable {
    var tenant: String
    var from: Date
    var to: Date
}

/// One row of psql's CSV output; `nil` values are SQL NULL.
struct ReportRow: Sendable, CustomStringConvertible {
    let values: [String: String?]

    var description: String {
        values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value ?? "NULL")" }.joined(separator: " ")
    }

    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    /// The raw text of `column`; throws if the report has no such column.
    func text(_ column: String) throws -> String? {
        guard let value = values[column] else { throw Missing(description: "no column \(column) in \(self)") }
        return value
    }

    func string(_ column: String) throws -> String {
        guard let value = try text(column) else { throw Missing(description: "\(column) is NULL in \(self)") }
        return value
    }

    func int(_ column: String) throws -> Int { try Int.pgDecode(text(column)) }
    func bool(_ column: String) throws -> Bool { try Bool.pgDecode(text(column)) }
    func uuid(_ column: String) throws -> UUID? { try UUID?.pgDecode(text(column)) }
    func date(_ column: String) throws -> Date? { try Date?.pgDecode(text(column)) }
    func duration(_ column: String) throws -> Duration? { try Duration?.pgDecode(text(column)) }
}

/// Runs the real `psql`, as an auditor would, and reads its CSV output.
enum Psql {
    /// What psql prints for NULL, so it is told apart from an empty string.
    static let nullMarker = "<NULL>"

    /// `/usr/bin/psql`, else the one beside the server programs, else `psql` on `PATH`.
    static let executable: String = {
        var candidates = ["/usr/bin/psql"]
        if let bin = try? ServerPrograms().binDirectoryForNewCluster() { candidates.append(bin + "/psql") }
        for path in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            candidates.append(String(path) + "/psql")
        }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? "psql"
    }()

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// `psql -v tenant=… -v from=… -v to=… -f sql/reports/NAME.sql` against `connection`.
    static func report(_ name: String, _ parameters: ReportParameters, connection: String) async throws -> [ReportRow] {
        try await run(
            file: SQLFolder.report(name),
            variables: [
                "tenant": parameters.tenant,
                "from": PGTimestamp.format(parameters.from),
                "to": PGTimestamp.format(parameters.to),
            ],
            connection: connection)
    }

    static func run(file: String, variables: [String: String], connection: String) async throws -> [ReportRow] {
        var arguments = ["--no-psqlrc", "--quiet", "--csv", "--set", "ON_ERROR_STOP=1", "--pset", "null=\(nullMarker)"]
        for (name, value) in variables.sorted(by: { $0.key < $1.key }) {
            arguments += ["--set", "\(name)=\(value)"]
        }
        arguments += ["--file", file, "--dbname", connection]
        // Times in UTC and ISO form, intervals as ISO 8601, so the output decodes exactly.
        let environment: [Environment.Key: String?] = [
            "PGTZ": "UTC", "PGDATESTYLE": "ISO, YMD", "PGOPTIONS": "-c IntervalStyle=iso_8601",
        ]
        let result = try await Subprocess.run(
            .path(.init(executable)),
            arguments: .init(arguments),
            environment: .inherit.updating(environment),
            output: .string(limit: 16 << 20),
            error: .string(limit: 1 << 20)
        )
        guard result.terminationStatus.isSuccess else {
            throw Failure(
                description: "psql \(arguments.joined(separator: " ")) → \(result.terminationStatus)\n"
                    + result.standardError)
        }
        let records = parseCSV(result.standardOutput)
        guard let header = records.first else { return [] }
        return records.dropFirst().map { record in
            var values: [String: String?] = [:]
            for (column, value) in zip(header, record) {
                values[column] = value == nullMarker ? String?.none : value
            }
            return ReportRow(values: values)
        }
    }

    /// RFC 4180 CSV as psql writes it: fields quoted when they hold a comma, a
    /// quote or a line break, quotes doubled inside.
    static func parseCSV(_ text: String) -> [[String]] {
        var records: [[String]] = []
        var record: [String] = []
        var field = ""
        var quoted = false
        var fieldStarted = false
        var scalars = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = nil
        func endField() {
            record.append(field)
            field = ""
            fieldStarted = false
        }
        while let scalar = pending ?? scalars.next() {
            pending = nil
            if quoted {
                if scalar == "\"" {
                    let next = scalars.next()
                    if next == "\"" {
                        field.unicodeScalars.append("\"")
                    } else {
                        quoted = false
                        pending = next
                    }
                } else {
                    field.unicodeScalars.append(scalar)
                }
                continue
            }
            switch scalar {
            case "\"" where field.isEmpty:
                quoted = true
                fieldStarted = true
            case ",":
                endField()
            case "\r":
                break
            case "\n":
                endField()
                records.append(record)
                record = []
            default:
                field.unicodeScalars.append(scalar)
                fieldStarted = true
            }
        }
        if fieldStarted || !record.isEmpty {
            endField()
            records.append(record)
        }
        return records
    }
}

