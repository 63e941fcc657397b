import Foundation
import LockboxPostgres
import Testing

/// Fake installations: version directories whose `bin/` holds scripts standing in for
/// `initdb` and `pg_ctl`, and fake data directories holding a `PG_VERSION`.
@Suite("server programs of a cluster's own version")
struct ServerProgramsTests {
    /// A fresh directory under the temporary directory, readable by the server's user.
    static func scratch(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        return path
    }

    /// `initdb` and `pg_ctl` in `bin`: `pg_ctl --version` reports `version`; anything else
    /// fails, saying which version was run.
    static func fakePrograms(in bin: String, version: String) throws {
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        for name in ["initdb", "pg_ctl"] {
            let script = """
                #!/bin/sh
                if [ "$1" = --version ]; then echo '\(name) (PostgreSQL) \(version) (fake)'; exit 0; fi
                echo 'the fake PostgreSQL \(version) was run' >&2
                exit 1

                """
            try script.write(toFile: bin + "/" + name, atomically: false, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin + "/" + name)
        }
    }

    /// A directory of installations holding fake programs for each of `versions`.
    static func fakeInstallations(_ versions: [String]) throws -> String {
        let root = try scratch("lbx-pgroot")
        for version in versions { try fakePrograms(in: root + "/\(version)/bin", version: "\(version).3") }
        return root
    }

    /// A cluster's directory whose `data/` holds `PG_VERSION` with `contents` and a `postgresql.conf`.
    static func fakeCluster(pgVersion contents: String) throws -> String {
        let directory = try scratch("lbx-pgdata")
        try FileManager.default.createDirectory(atPath: directory + "/data", withIntermediateDirectories: false)
        try contents.write(toFile: directory + "/data/PG_VERSION", atomically: false, encoding: .utf8)
        try "# as the cluster's own server wrote it\n".write(
            toFile: directory + "/data/postgresql.conf", atomically: false, encoding: .utf8)
        return directory
    }

    /// Every file under `directory` (itself included) with its mode, owner and contents.
    static func snapshot(_ directory: String) throws -> [String: String] {
        var entries: [String: String] = [:]
        let paths = [""] + (FileManager.default.subpaths(atPath: directory) ?? [])
        for relative in paths {
            let path = relative.isEmpty ? directory : directory + "/" + relative
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            // Only a regular file's contents: reading a named pipe would take them, or wait.
            let type = attributes[.type] as? FileAttributeType
            let contents =
                type == .typeRegular ? (try? String(contentsOfFile: path, encoding: .utf8)) ?? "?" : "\(type.map { $0.rawValue } ?? "?")"
            entries[relative] =
                "\(attributes[.posixPermissions] ?? "") \(attributes[.ownerAccountID] ?? "") \(contents)"
        }
        return entries
    }

    // The newest installed version was taken for every cluster: once PostgreSQL 16 was
    // installed beside 15, the cluster 15 had created was run with 16's programs.
    @Test("an existing cluster gets the programs of the version in its PG_VERSION, a new one the newest installed")
    func ownVersion() async throws {
        let root = try Self.fakeInstallations(["9.6", "10", "15", "16"])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let programs = ServerPrograms(installations: root, environment: [:])
        #expect(programs.installedVersions() == ["16", "15", "10", "9.6"])
        for version in ["15", "9.6", "10"] {
            let cluster = try Self.fakeCluster(pgVersion: version + "\n")
            defer { try? FileManager.default.removeItem(atPath: cluster) }
            #expect(try await programs.binDirectory(forCluster: cluster + "/data") == root + "/\(version)/bin")
        }
        let empty = try Self.scratch("lbx-pgnew")
        defer { try? FileManager.default.removeItem(atPath: empty) }
        #expect(try await programs.binDirectory(forCluster: empty + "/data") == root + "/16/bin", "no data directory")
        #expect(try await programs.binDirectory(forCluster: empty) == root + "/16/bin", "no PG_VERSION in it")
    }

    @Test("an existing cluster still starts and answers when a newer PostgreSQL is installed beside its own")
    func startsBesideNewerVersion() async throws {
        let system = ServerPrograms(environment: [:])
        guard let real = system.installedVersions().first, let major = Int(real) else { return }
        let root = try Self.scratch("lbx-pgroot")
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createSymbolicLink(
            atPath: root + "/\(real)", withDestinationPath: ServerPrograms.debianInstallations + "/\(real)")
        try Self.fakePrograms(in: root + "/\(major + 1)/bin", version: "\(major + 1).1")

        let directory = NSTemporaryDirectory() + "lbx-pgv-\(UUID().uuidString.prefix(8))"
        let created = EmbeddedPostgres(directory: directory, durable: false, programs: system)
        try await created.start()
        try await created.stop()
        let cluster = EmbeddedPostgres(
            directory: directory, durable: false, programs: ServerPrograms(installations: root, environment: [:]))
        do {
            try await cluster.start()
            let connection = try await PGConnection.connect(cluster.conninfo())
            let rows = try await connection.query("SELECT current_setting('server_version_num')::int / 10000")
            await connection.close()
            #expect(try rows.first?.decode(Int.self, at: 0) == major)
            #expect(try await cluster.isRunning())
        } catch {
            try? await created.destroy()
            throw error
        }
        try await created.destroy()
    }

    @Test("a cluster whose PostgreSQL version is not installed is refused, saying which and what to do, and left as it was")
    func versionNotInstalled() async throws {
        let root = try Self.fakeInstallations(["16"])
        let directory = try Self.fakeCluster(pgVersion: "15\n")
        defer {
            try? FileManager.default.removeItem(atPath: root)
            try? FileManager.default.removeItem(atPath: directory)
        }
        let before = try Self.snapshot(directory)
        let cluster = EmbeddedPostgres(
            directory: directory, durable: false, programs: ServerPrograms(installations: root, environment: [:]))

        let failure = try await #require(throws: EmbeddedPostgres.Failure.self) { try await cluster.start() }
        for part in [
            "PostgreSQL 15", cluster.dataDirectory, "installed: 16 (\(root)/16/bin)",
            "apt-get install postgresql-15", "pg_upgrade", "nothing was changed",
        ] {
            #expect(failure.message.contains(part), "\(part) in: \(failure)")
        }
        #expect(try Self.snapshot(directory) == before, "the cluster's files, modes and owners are as they were")
        await #expect(throws: EmbeddedPostgres.Failure.self) { try await cluster.isRunning() }
        await #expect(throws: EmbeddedPostgres.Failure.self) { try await cluster.stop() }
        #expect(try Self.snapshot(directory) == before)
    }

    @Test("a PG_VERSION that cannot be read or holds no version is refused, not taken for a new cluster or any version")
    func malformedVersionFile() async throws {
        let root = try Self.fakeInstallations(["15", "16"])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let programs = ServerPrograms(installations: root, environment: [:])
        for contents in ["", "banana\n", "15.2\n", "15\n16\n", "unreadable"] {
            let directory = try Self.fakeCluster(pgVersion: contents)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            if contents == "unreadable" {
                // A directory in its place: unreadable as a file, even by root.
                try FileManager.default.removeItem(atPath: directory + "/data/PG_VERSION")
                try FileManager.default.createDirectory(
                    atPath: directory + "/data/PG_VERSION", withIntermediateDirectories: false)
            }
            let before = try Self.snapshot(directory)
            let cluster = EmbeddedPostgres(directory: directory, durable: false, programs: programs)

            let failure = try await #require(throws: EmbeddedPostgres.Failure.self, "\(contents)") {
                try await cluster.start()
            }
            #expect(failure.message.contains(cluster.dataDirectory + "/PG_VERSION"), "\(failure)")
            let reason = contents == "unreadable" ? "cannot read" : "does not hold a PostgreSQL version"
            #expect(failure.message.contains(reason) && failure.message.contains("nothing was changed"), "\(failure)")
            #expect(!failure.message.contains("fake PostgreSQL"), "no program was run: \(failure)")
            await #expect(throws: EmbeddedPostgres.Failure.self) {
                try await programs.binDirectory(forCluster: cluster.dataDirectory)
            }
            #expect(try Self.snapshot(directory) == before, "\(contents): left as it was")
        }
    }

    // The version was read by following a symbolic link and by opening whatever was there,
    // before the directory's owner is checked: a named pipe in a directory someone else
    // made (under /var/tmp, where root's and long homes' clusters live) held every lockbox
    // command for ever, and a link was read as the cluster's version.
    @Test("a PG_VERSION that is a symbolic link or a named pipe is refused, neither followed nor waited on")
    func versionFileNotRegular() async throws {
        let root = try Self.fakeInstallations(["15", "16"])
        let elsewhere = try Self.scratch("lbx-pgelsewhere")
        defer {
            try? FileManager.default.removeItem(atPath: root)
            try? FileManager.default.removeItem(atPath: elsewhere)
        }
        let programs = ServerPrograms(installations: root, environment: [:])
        try "15\n".write(toFile: elsewhere + "/PG_VERSION", atomically: false, encoding: .utf8)
        for kind in ["symbolic link", "named pipe"] {
            let directory = try Self.fakeCluster(pgVersion: "")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/data/PG_VERSION"
            try FileManager.default.removeItem(atPath: path)
            var writer: Int32 = -1
            if kind == "symbolic link" {
                try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: elsewhere + "/PG_VERSION")
            } else {
                try #require(mkfifo(path, 0o644) == 0)
                // Held open with a version in it, so that a reader neither waits to open it nor to read.
                writer = open(path, O_RDWR | O_CLOEXEC)
                try #require(writer >= 0)
                _ = "15\n".withCString { write(writer, $0, 3) }
            }
            defer { if writer >= 0 { close(writer) } }
            let before = try Self.snapshot(directory)
            let failure = try await #require(throws: EmbeddedPostgres.Failure.self, "\(kind)") {
                try await programs.binDirectory(forCluster: directory + "/data")
            }
            #expect(
                failure.message.contains("cannot read \(path)") && failure.message.contains(kind)
                    && failure.message.contains("nothing was changed"),
                "\(failure)")
            let cluster = EmbeddedPostgres(directory: directory, durable: false, programs: programs)
            await #expect(throws: EmbeddedPostgres.Failure.self, "\(kind)") { try await cluster.start() }
            #expect(try Self.snapshot(directory) == before, "\(kind): left as it was")
        }
    }

    @Test("LOCKBOX_PG_BIN still comes first but is refused for a cluster of another version; PATH is searched for the cluster's")
    func overridesAndPath() async throws {
        let root = try Self.fakeInstallations(["15", "16"])
        let elsewhere = try Self.scratch("lbx-pgbin")
        defer {
            try? FileManager.default.removeItem(atPath: root)
            try? FileManager.default.removeItem(atPath: elsewhere)
        }
        let cluster = try Self.fakeCluster(pgVersion: "15\n")
        defer { try? FileManager.default.removeItem(atPath: cluster) }
        let data = cluster + "/data"
        try Self.fakePrograms(in: elsewhere + "/a16", version: "16.4")
        try Self.fakePrograms(in: elsewhere + "/b15", version: "15.8 (Debian 15.8-0+deb12u1)")
        try Self.fakePrograms(in: elsewhere + "/c", version: "unknown")

        let explicit15 = ServerPrograms(installations: root, environment: ["LOCKBOX_PG_BIN": elsewhere + "/b15"])
        #expect(try await explicit15.binDirectory(forCluster: data) == elsewhere + "/b15")
        #expect(try explicit15.binDirectoryForNewCluster() == elsewhere + "/b15")
        let unknown = ServerPrograms(installations: root, environment: ["LOCKBOX_PG_BIN": elsewhere + "/c"])
        #expect(try await unknown.binDirectory(forCluster: data) == elsewhere + "/c", "a version it cannot tell")

        let explicit16 = ServerPrograms(installations: root, environment: ["LOCKBOX_PG_BIN": elsewhere + "/a16"])
        let refused = try await #require(throws: EmbeddedPostgres.Failure.self) {
            try await explicit16.binDirectory(forCluster: data)
        }
        #expect(refused.message.contains("LOCKBOX_PG_BIN (\(elsewhere)/a16)"), "\(refused)")
        #expect(refused.message.contains("PostgreSQL 15") && refused.message.contains("PostgreSQL 16"), "\(refused)")

        // No Debian installations: the programs on PATH, of the cluster's version.
        let path = "\(elsewhere)/a16:\(elsewhere)/b15"
        let onPath = ServerPrograms(installations: root + "/none", environment: ["PATH": path])
        #expect(try await onPath.binDirectory(forCluster: data) == elsewhere + "/b15")
        #expect(try onPath.binDirectoryForNewCluster() == elsewhere + "/a16")
        try "14\n".write(toFile: data + "/PG_VERSION", atomically: false, encoding: .utf8)
        let missing = try await #require(throws: EmbeddedPostgres.Failure.self) {
            try await onPath.binDirectory(forCluster: data)
        }
        #expect(
            missing.message.contains("installed: 16 (\(elsewhere)/a16, on PATH), 15 (\(elsewhere)/b15, on PATH)"),
            "\(missing)")
    }
}
