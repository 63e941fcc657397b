import Foundation

/// Where the server programs (`initdb`, `pg_ctl`) of a cluster are found. A server
/// runs only a data directory of its own major version, and Debian installs each
/// version beside the others (`/usr/lib/postgresql/<major>/bin`), so the choice
/// depends on the cluster: an existing one (its data directory holds `PG_VERSION`)
/// gets the programs of that version, a new one those of the newest installed.
public struct ServerPrograms: Sendable {
    /// Debian's directory of server installations, one `<major>/bin` for each version.
    public static let debianInstallations = "/usr/lib/postgresql"

    /// The directory of installations searched, one `<major>/bin` for each version.
    public var installations: String
    /// The environment read for `LOCKBOX_PG_BIN` and `PATH`.
    public var environment: [String: String]

    /// The programs found in `installations` (Debian's by default) and through `environment`'s
    /// `LOCKBOX_PG_BIN` and `PATH` (this process's by default).
    public init(
        installations: String = debianInstallations,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.installations = installations
        self.environment = environment
    }

    /// The directory of the programs that run the cluster in `dataDirectory`, by the first
    /// rule that applies:
    /// 1. `LOCKBOX_PG_BIN`, when it holds `initdb` and `pg_ctl` (for an existing cluster,
    ///    refused if its `pg_ctl` reports another major version);
    /// 2. for an existing cluster, `<installations>/<its version>/bin`; for a new one, the
    ///    newest version in ``installations``;
    /// 3. a directory on `PATH` holding both programs (for an existing cluster, the first
    ///    whose `pg_ctl` reports the cluster's version).
    ///
    /// Refuses, naming the versions found and what to do, an existing cluster whose
    /// version is not installed, and a `PG_VERSION` that cannot be read or is not a version
    /// (see ``clusterVersion(_:)``); the cluster is not touched.
    public func binDirectory(forCluster dataDirectory: String) async throws -> String {
        try await binDirectory(version: Self.clusterVersion(dataDirectory), dataDirectory: dataDirectory)
    }

    /// As ``binDirectory(forCluster:)``, with the cluster's version (nil: a new cluster) already read.
    func binDirectory(version: String?, dataDirectory: String) async throws -> String {
        guard let version else { return try binDirectoryForNewCluster() }
        if let explicit = explicitDirectory {
            if let reported = await Self.reportedVersion(explicit), reported != version {
                throw EmbeddedPostgres.Failure(
                    message: "the cluster in \(dataDirectory) was created by PostgreSQL \(version), but "
                        + "LOCKBOX_PG_BIN (\(explicit)) holds the programs of PostgreSQL \(reported), "
                        + "which cannot run it; nothing was changed. Point LOCKBOX_PG_BIN at PostgreSQL "
                        + "\(version)'s programs, or unset it")
            }
            return explicit
        }
        let installed = installedVersions()
        if installed.contains(version) { return installations + "/\(version)/bin" }
        var found = installed.map { "\($0) (\(installations)/\($0)/bin)" }
        for directory in pathDirectories() {
            let reported = await Self.reportedVersion(directory)
            if reported == version { return directory }
            found.append("\(reported ?? "of unknown version") (\(directory), on PATH)")
        }
        throw EmbeddedPostgres.Failure(
            message: "the cluster in \(dataDirectory) was created by PostgreSQL \(version), whose server "
                + "programs are not installed (installed: \(found.isEmpty ? "none" : found.joined(separator: ", "))); "
                + "nothing was changed. Install them (e.g. `apt-get install postgresql-\(version)`, or set "
                + "LOCKBOX_PG_BIN to their directory), or upgrade the cluster to an installed version with "
                + "pg_upgrade, or move \(dataDirectory) away to start afresh with an empty cluster")
    }

    /// The directory of the programs for a new cluster: `LOCKBOX_PG_BIN`, else the newest
    /// version in ``installations``, else the first directory on `PATH` holding `initdb` and `pg_ctl`.
    public func binDirectoryForNewCluster() throws -> String {
        if let explicit = explicitDirectory { return explicit }
        if let newest = installedVersions().first { return installations + "/\(newest)/bin" }
        if let onPath = pathDirectories().first { return onPath }
        throw EmbeddedPostgres.Failure(
            message: "PostgreSQL server programs (initdb, pg_ctl) not found: install the `postgresql` package "
                + "or set LOCKBOX_PG_BIN to their directory")
    }

    /// The major versions whose server programs are in ``installations``, newest first.
    public func installedVersions() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: installations)) ?? []
        return names.filter { Self.isVersion($0) && Self.holdsServer(installations + "/\($0)/bin") }
            .sorted { Self.versionOrder($0).lexicographicallyPrecedes(Self.versionOrder($1)) }
            .reversed()
    }

    /// The major version of the cluster in `dataDirectory`, as its `PG_VERSION` names it
    /// (`15`, `9.6`), or nil when there is none (no cluster yet). Throws when the file is
    /// there but cannot be read or does not hold a version: guessing would run the cluster
    /// with the wrong programs, or create one over it. Only a regular file is read: it is
    /// read before the directory's owner is checked (``EmbeddedPostgres/start(logger:)``
    /// refuses another user's directory only after), so a symbolic link there is not
    /// followed and a named pipe or a device is not opened, which could wait for ever.
    public static func clusterVersion(_ dataDirectory: String) throws -> String? {
        let path = dataDirectory + "/PG_VERSION"
        func unreadable(_ reason: String) -> EmbeddedPostgres.Failure {
            EmbeddedPostgres.Failure(
                message: "cannot read \(path), the cluster's version: \(reason); nothing was changed")
        }
        func unreadable(_ error: Int32) -> EmbeddedPostgres.Failure {
            unreadable(String(cString: strerror(error)))
        }
        func notRegular(_ mode: mode_t) -> EmbeddedPostgres.Failure {
            let kind =
                switch mode & S_IFMT {
                case S_IFLNK: "a symbolic link"
                case S_IFIFO: "a named pipe"
                case S_IFDIR: "a directory"
                case S_IFSOCK: "a socket"
                default: "a device"
                }
            return unreadable("it is \(kind), not a regular file (PostgreSQL writes a file there)")
        }
        var info = stat()
        if lstat(path, &info) != 0 {
            let error = errno
            if error == ENOENT || error == ENOTDIR { return nil }
            throw unreadable(error)
        }
        guard info.st_mode & S_IFMT == S_IFREG else { throw notRegular(info.st_mode) }
        // Not following a link, nor waiting, should the file have been replaced since.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard descriptor >= 0 else { throw unreadable(errno) }
        defer { close(descriptor) }
        guard fstat(descriptor, &info) == 0 else { throw unreadable(errno) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw notRegular(info.st_mode) }
        var bytes = [UInt8](repeating: 0, count: 64)
        let count = read(descriptor, &bytes, bytes.count)
        guard count >= 0 else { throw unreadable(errno) }
        let text = String(decoding: bytes.prefix(count), as: UTF8.self)
        let version = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard isVersion(version) else {
            throw EmbeddedPostgres.Failure(
                message: "\(path) does not hold a PostgreSQL version (it holds \(String(reflecting: text))): "
                    + "the cluster in \(dataDirectory) is damaged or not a PostgreSQL data directory; "
                    + "nothing was changed")
        }
        return version
    }

    // MARK: Candidates

    private var explicitDirectory: String? {
        guard let explicit = environment["LOCKBOX_PG_BIN"], Self.holdsServer(explicit) else { return nil }
        return explicit
    }

    private func pathDirectories() -> [String] {
        (environment["PATH"] ?? "").split(separator: ":").map(String.init).filter(Self.holdsServer)
    }

    private static func holdsServer(_ directory: String) -> Bool {
        let fileManager = FileManager.default
        return fileManager.isExecutableFile(atPath: directory + "/initdb")
            && fileManager.isExecutableFile(atPath: directory + "/pg_ctl")
    }

    /// The major version `directory/pg_ctl --version` reports, or nil when it does not say.
    private static func reportedVersion(_ directory: String) async -> String? {
        guard let result = try? await EmbeddedPostgres.run(directory + "/pg_ctl", ["--version"], asServer: false),
            result.status == 0
        else { return nil }
        return majorVersion(reported: result.output)
    }

    /// The major version in a program's `--version` line (`pg_ctl (PostgreSQL) 15.8 (Debian 15.8-1)`
    /// is 15, `9.6.24` is 9.6, `17beta1` is 17), or nil when it names none.
    static func majorVersion(reported: String) -> String? {
        guard let marker = reported.range(of: "(PostgreSQL) ") else { return nil }
        let number = reported[marker.upperBound...].prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
        let parts = number.split(separator: ".", omittingEmptySubsequences: false).map { Int($0) }
        guard let first = parts.first ?? nil else { return nil }
        if first >= 10 { return String(first) }
        guard parts.count > 1, let second = parts[1] else { return nil }
        return "\(first).\(second)"
    }

    /// A major version as PostgreSQL writes it: `15`, or `9.6` before version 10.
    static func isVersion(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map { part in
            part.count <= 4 && part.allSatisfy { $0.isASCII && $0.isNumber } ? Int(part) : nil
        }
        switch parts.count {
        case 1: return (parts[0] ?? 0) >= 10
        case 2: return (1..<10).contains(parts[0] ?? 0) && parts[1] != nil
        default: return false
        }
    }

    private static func versionOrder(_ version: String) -> [Int] {
        version.split(separator: ".").map { Int($0) ?? 0 }
    }
}
