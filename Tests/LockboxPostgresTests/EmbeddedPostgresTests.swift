import Foundation
import LockboxPostgres
import Testing

@Suite("embedded cluster directory")
struct EmbeddedPostgresTests {
    /// A fresh path under the temporary directory (short enough for a Unix socket).
    static func scratch(_ name: String) -> String {
        NSTemporaryDirectory() + "\(name)-\(UUID().uuidString.prefix(8))"
    }

    static func mode(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
    }

    static func owner(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.ownerAccountID] as? Int) ?? -1
    }

    // The cluster of a root LOCKBOX_HOME lives at a predictable path in /var/tmp, which every
    // user may write: anyone could put a symbolic link there first. Following it handed its
    // target (e.g. /root) to the postgres user, mode 0755, and put the cluster inside.
    @Test("a cluster directory that is a symbolic link is refused, and the link's target left as it was")
    func symbolicLinkRefused() async throws {
        let target = Self.scratch("lockbox-precious")
        let link = Self.scratch("lockbox-link")
        try FileManager.default.createDirectory(
            atPath: target, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer {
            try? FileManager.default.removeItem(atPath: link)
            try? FileManager.default.removeItem(atPath: target)
        }
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        let ownerBefore = try Self.owner(target)

        let cluster = EmbeddedPostgres(directory: link, durable: false)
        let failure = try await #require(throws: EmbeddedPostgres.Failure.self) { try await cluster.start() }
        #expect(failure.message.contains(link) && failure.message.contains("symbolic link"), "\(failure)")
        #expect(try Self.mode(target) == 0o700, "the target's mode is not changed")
        #expect(try Self.owner(target) == ownerBefore, "the target's owner is not changed")
        #expect(try FileManager.default.contentsOfDirectory(atPath: target).isEmpty, "no cluster in the target")
    }

    @Test("a cluster directory that belongs to another user is refused and left as it was")
    func someoneElsesDirectoryRefused() async throws {
        // Only root can make a directory belong to someone else.
        guard geteuid() == 0, let nobody = getpwnam("nobody")?.pointee else { return }
        let directory = Self.scratch("lockbox-foreign")
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o777])
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(chown(directory, nobody.pw_uid, nobody.pw_gid) == 0)

        let cluster = EmbeddedPostgres(directory: directory, durable: false)
        let failure = try await #require(throws: EmbeddedPostgres.Failure.self) { try await cluster.start() }
        #expect(failure.message.contains(directory) && failure.message.contains("belongs to"), "\(failure)")
        #expect(try Self.owner(directory) == Int(nobody.pw_uid), "not taken over")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty, "no cluster in it")
    }

    // postgresql.conf reads a backslash in a quoted string as an escape: a directory such as
    // "/home/ann/lock\\box" became "/home/ann/lockbox" there, and the server never started.
    @Test("a cluster directory with spaces, a quote and a backslash in its path starts and answers")
    func awkwardPath() async throws {
        let directory = Self.scratch("lockbox a 'c d\\e")
        let cluster = EmbeddedPostgres(directory: directory, durable: false)
        do {
            try await cluster.start()
            let connection = try await PGConnection.connect(cluster.conninfo())
            let rows = try await connection.query("SELECT current_setting('unix_socket_directories')")
            await connection.close()
            #expect(try rows.first?.decode(String.self, at: 0) == "\"" + directory + "\"")
            #expect(try await cluster.isRunning())
        } catch {
            try? await cluster.destroy()
            throw error
        }
        try await cluster.destroy()
    }

    // initdb's configuration listens on localhost and the system's socket directory, trusting
    // everyone: a lockbox stopped before it wrote its own settings left such a cluster behind.
    @Test("a cluster whose settings were never written, or cut short, gets them at its next start")
    func unfinishedSettings() async throws {
        let directory = Self.scratch("lockbox-unfinished")
        let cluster = EmbeddedPostgres(directory: directory, durable: false)
        do {
            try await cluster.start()
            try await cluster.stop()
            let path = directory + "/data/postgresql.conf"
            let written = try String(contentsOfFile: path, encoding: .utf8)
            let marker = try #require(written.range(of: "\n# lockbox: private cluster"))
            for cut in ["never written", "cut short"] {
                // As initdb left it, or with the settings' first lines only.
                let kept = cut == "never written" ? "" : "\n# lockbox: private cluster, Unix socket only\nport = 5432\n"
                try (String(written[..<marker.lowerBound]) + kept).write(toFile: path, atomically: false, encoding: .utf8)
                try await cluster.start()
                let connection = try await PGConnection.connect(cluster.conninfo())
                let rows = try await connection.query(
                    "SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories')")
                await connection.close()
                let (listen, sockets) = try #require(rows.first).decode((String, String).self)
                #expect(listen == "", "\(cut): listens on \(listen)")
                #expect(sockets == "\"" + directory + "\"", "\(cut): sockets in \(sockets)")
                try await cluster.stop()
            }
            // Complete settings are not written twice.
            try await cluster.start()
            let after = try String(contentsOfFile: path, encoding: .utf8)
            #expect(after.components(separatedBy: "# lockbox: settings written").count == 2)
        } catch {
            try? await cluster.destroy()
            throw error
        }
        try await cluster.destroy()
    }

    // initdb writes PG_VERSION among its first files: an initdb killed while it built data/ left a
    // cluster every later start took for a made one, and started half made (no postgres database).
    @Test("a cluster whose initdb was killed part way is made afresh at the next start, not taken for a made one")
    func initdbCutShort() async throws {
        let version = try #require(ServerPrograms().installedVersions().first)
        let directory = Self.scratch("lockbox-cut")
        let bin = Self.scratch("lockbox-cutbin")
        try FileManager.default.createDirectory(
            atPath: bin, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: bin) }
        // Writes the cluster's first files where it is told to, then is killed.
        let initdb = """
            #!/bin/sh
            while [ "$1" != -D ]; do shift; done
            mkdir -p "$2/global" && echo \(version) > "$2/PG_VERSION" && echo > "$2/postgresql.conf"
            kill -9 $$

            """
        for name in ["initdb", "pg_ctl"] {
            try initdb.write(toFile: bin + "/" + name, atomically: false, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin + "/" + name)
        }
        let killed = EmbeddedPostgres(
            directory: directory, durable: false, programs: ServerPrograms(environment: ["LOCKBOX_PG_BIN": bin]))
        let cluster = EmbeddedPostgres(directory: directory, durable: false)
        do {
            let failure = try await #require(throws: EmbeddedPostgres.Failure.self) { try await killed.start() }
            #expect(failure.message.contains("initdb"), "\(failure)")
            #expect(try ServerPrograms.clusterVersion(cluster.dataDirectory) == nil, "no cluster taken for made")
            try await cluster.start()
            let connection = try await PGConnection.connect(cluster.conninfo())
            let rows = try await connection.query("SELECT count(*) FROM pg_database WHERE datname = 'postgres'")
            await connection.close()
            #expect(try rows.first?.decode(Int.self, at: 0) == 1)
        } catch {
            try? await cluster.destroy()
            throw error
        }
        try await cluster.destroy()
    }

    // As root the cluster's directories belong to postgres, who could replace postgresql.conf by
    // a link to any file: the settings were then appended to that file, by root.
    @Test("the settings are not written through a symbolic or hard link in place of postgresql.conf")
    func settingsThroughLink() async throws {
        let directory = Self.scratch("lbx-conf-link")
        let cluster = EmbeddedPostgres(directory: directory, durable: false)
        do {
            try await cluster.start()
            try await cluster.stop()
            let path = directory + "/data/postgresql.conf"
            let outside = Self.scratch("lbx-conf-target")
            let original = "# not the cluster's settings\n"
            for kind in ["symbolic", "hard"] {
                try original.write(toFile: outside, atomically: false, encoding: .utf8)
                try FileManager.default.removeItem(atPath: path)
                if kind == "symbolic" {
                    try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: outside)
                } else {
                    try FileManager.default.linkItem(atPath: outside, toPath: path)
                }
                let error = try await #require(throws: EmbeddedPostgres.Failure.self) { try await cluster.start() }
                #expect(error.message.contains("refused to write the cluster's settings"), "\(kind): \(error.message)")
                #expect(try String(contentsOfFile: outside, encoding: .utf8) == original, "\(kind): written through")
                #expect(!(try await cluster.isRunning()), "\(kind)")
            }
            try? FileManager.default.removeItem(atPath: outside)
        } catch {
            try? await cluster.destroy()
            throw error
        }
        try await cluster.destroy()
    }

    // After a reboot or a container restart, a postmaster.pid left by a server that did not stop
    // cleanly can name a live process of the server's user that is not PostgreSQL. pg_ctl status
    // called the cluster running, so it was never started: every command failed to connect.
    @Test("a stale postmaster.pid naming another live process does not keep the cluster from starting")
    func stalePidFile() async throws {
        let directory = Self.scratch("lbx-stale")
        let cluster = EmbeddedPostgres(directory: directory, durable: false)
        let other = Process()
        do {
            try await cluster.start()
            try await cluster.stop()
            // A live process of the server's user, not a PostgreSQL server.
            let asRoot = geteuid() == 0
            other.executableURL = URL(fileURLWithPath: asRoot ? "/usr/sbin/runuser" : "/bin/sleep")
            other.arguments = asRoot ? ["-u", "postgres", "--", "/bin/sleep", "60"] : ["60"]
            try other.run()
            var pid: Int32 = asRoot ? 0 : other.processIdentifier
            for _ in 0..<500 where pid == 0 {
                // runuser forks the command: find its child (bounded poll).
                let children = try? String(
                    contentsOfFile: "/proc/\(other.processIdentifier)/task/\(other.processIdentifier)/children",
                    encoding: .utf8)
                pid = children?.split(separator: " ").first.flatMap { Int32($0) } ?? 0
                if pid == 0 { try await Task.sleep(for: .milliseconds(10)) }
            }
            try #require(pid > 0)
            let pidFile = cluster.dataDirectory + "/postmaster.pid"
            try "\(pid)\n\(cluster.dataDirectory)\n1700000000\n5432\n\(directory)\n\n  5432001   0\nready   \n"
                .write(toFile: pidFile, atomically: false, encoding: .utf8)
            if asRoot, let server = getpwnam("postgres")?.pointee { chown(pidFile, server.pw_uid, server.pw_gid) }

            try await cluster.start()
            let connection = try await PGConnection.connect(cluster.conninfo())
            let rows = try await connection.query("SELECT 1")
            await connection.close()
            #expect(try rows.first?.decode(Int.self, at: 0) == 1)
            #expect(kill(pid, 0) == 0, "the other process was left alone")
        } catch {
            if other.isRunning { other.terminate() }
            try? await cluster.destroy()
            throw error
        }
        if other.isRunning { other.terminate() }
        try await cluster.destroy()
    }

    // unix_socket_directories and libpq's host are comma-separated lists: a LOCKBOX_HOME such as
    // "/home/ann/lockbox,test" made the server look for "/home/ann/lockbox" and never start,
    // on every later command too (the half-made cluster stayed).
    @Test("a cluster directory with a comma is refused before anything is made; the CLI's home moves the cluster out")
    func commaInPath() async throws {
        let directory = Self.scratch("lockbox a,b")
        #expect(EmbeddedPostgres.socketDirectoryProblem(directory)?.contains("comma") == true)
        #expect(EmbeddedPostgres.socketDirectoryProblem(Self.scratch("lockbox a b")) == nil)
        #expect(EmbeddedPostgres.socketDirectoryProblem("/" + String(repeating: "x", count: 90)) != nil)
        let cluster = EmbeddedPostgres(directory: directory, durable: false)
        let failure = try await #require(throws: EmbeddedPostgres.Failure.self) { try await cluster.start() }
        if !FileManager.default.fileExists(atPath: directory) {
            #expect(failure.message.contains("comma"), "\(failure)")
        } else {
            try? await cluster.destroy()
            Issue.record("a cluster was made in \(directory): \(failure)")
        }
    }
}
