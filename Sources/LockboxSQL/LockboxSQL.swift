/// The SQL files shipped under `sql/`, embedded into the binary at build time.
public enum LockboxSQL {
    /// A numbered schema migration from `sql/migrations/NNNN_name.sql`.
    public struct Migration: Sendable, Hashable {
        /// The number at the start of the file name.
        public let version: Int
        /// The file name without number and extension.
        public let name: String
        /// The SQL text of the file.
        public let sql: String
    }

    /// Every migration, in version order.
    public static let migrations: [Migration] = embeddedSQLFiles.compactMap { file in
        guard file.path.hasPrefix("migrations/") else { return nil }
        let fileName = String(file.path.dropFirst("migrations/".count).dropLast(".sql".count))
        let parts = fileName.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, let version = Int(parts[0]) else {
            fatalError("migration file name must be NNNN_name.sql: \(file.path)")
        }
        return Migration(version: version, name: String(parts[1]), sql: file.text)
    }.sorted { $0.version < $1.version }

    /// Report queries from `sql/reports/`, keyed by file name without extension.
    public static let reports = files(in: "reports")

    /// Statements the broker prepares, from `sql/statements/`, keyed by file name without extension.
    public static let statements = files(in: "statements")

    private static func files(in folder: String) -> [String: String] {
        let prefix = folder + "/"
        return Dictionary(
            uniqueKeysWithValues: embeddedSQLFiles.compactMap { file in
                guard file.path.hasPrefix(prefix) else { return nil }
                return (String(file.path.dropFirst(prefix.count).dropLast(".sql".count)), file.text)
            }
        )
    }
}
