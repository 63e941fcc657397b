import Foundation
import Logging
import Subprocess

/// A private PostgreSQL cluster in a directory of its own, reachable only on a
/// Unix socket in that directory (no TCP), run with the system's `initdb` and
/// `pg_ctl` of the cluster's own PostgreSQL version (see ``ServerPrograms``).
/// The server trusts every connection on the socket, so the directory is its
/// owner's alone (mode 0700). When the current user is root, the server runs as
/// the unprivileged `postgres` user (initdb refuses root) and the directory is
/// handed to it.
public struct EmbeddedPostgres: Sendable {
    /// Why the cluster could not be created, started or stopped.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// The cluster's root directory: `data/` holds the cluster, the socket and `server.log` sit beside it.
    public let directory: String
    /// Whether the server syncs to disk (`fsync`, `synchronous_commit`); off only for throwaway test clusters.
    public let durable: Bool
    /// Where the server programs are found: those of the cluster's own version.
    public let programs: ServerPrograms
    /// The superuser the server was initialised with.
    public let superuser = "postgres"

    public var dataDirectory: String { directory + "/data" }
    public var logFile: String { directory + "/server.log" }
    /// The libpq conninfo for `database` over the cluster's socket.
    public func conninfo(database: String = "postgres") -> String {
        "host=\(conninfoQuote(directory)) port=5432 user=\(superuser) dbname=\(conninfoQuote(database))"
    }

    public init(directory: String, durable: Bool, programs: ServerPrograms = ServerPrograms()) {
        self.directory = directory
        self.durable = durable
        self.programs = programs
    }

    /// Creates the cluster if `data/` holds none yet (with the newest installed PostgreSQL),
    /// then starts it unless it already runs. An existing cluster is run with the programs of
    /// its own version; when they are not installed (or its `PG_VERSION` cannot be read),
    /// refuses before anything is changed.
    public func start(logger: Logger = Logger(label: "lockbox.embedded-postgres")) async throws {
        let version = try ServerPrograms.clusterVersion(dataDirectory)
        let bin = try await programs.binDirectory(version: version, dataDirectory: dataDirectory)
        if let problem = Self.socketDirectoryProblem(directory) { throw Failure(message: problem) }
        try Self.claimDirectory(directory)
        if version == nil { try await create(bin: bin, logger: logger) }
        try completeSettings()
        removeStaleLockFiles(logger: logger)
        if try await isRunning() { return }
        logger.debug("starting PostgreSQL", metadata: ["directory": "\(directory)"])
        try await Self.exec(
            bin + "/pg_ctl", ["-D", dataDirectory, "-l", logFile, "-w", "-t", "60", "start"], asServer: true)
    }

    /// Where initdb builds a new cluster before it is renamed to `data/`.
    var stagingDirectory: String { directory + "/data.initdb" }

    /// Creates the cluster with `initdb` in ``stagingDirectory`` and renames it to `data/` once
    /// initdb has finished: initdb writes `PG_VERSION` among its first files, so an initdb cut
    /// short where it builds `data/` itself (killed, the machine stopped) left a cluster every
    /// later command took for a made one and started, half made (no `postgres` database:
    /// every command failed to connect, for ever). What an earlier cut-short initdb left in
    /// the staging directory is removed first.
    private func create(bin: String, logger: Logger) async throws {
        logger.debug("creating PostgreSQL cluster", metadata: ["directory": "\(directory)"])
        var info = stat()
        if lstat(stagingDirectory, &info) == 0 {
            do {
                try FileManager.default.removeItem(atPath: stagingDirectory)
            } catch {
                throw Failure(
                    message: "cannot remove \(stagingDirectory), left by a cluster's creation that did not finish: "
                        + "\(error.localizedDescription)")
            }
        }
        var arguments = ["-D", stagingDirectory, "-U", superuser, "--auth=trust", "-E", "UTF8", "--no-locale"]
        if !durable { arguments.append("--no-sync") }
        try await Self.exec(bin + "/initdb", arguments, asServer: true)
        guard rename(stagingDirectory, dataDirectory) == 0 else {
            throw Failure(
                message: "cannot rename the new cluster \(stagingDirectory) to \(dataDirectory): "
                    + String(cString: strerror(errno)))
        }
    }

    /// The last line of lockbox's settings in `postgresql.conf`: written after them, so
    /// that its absence means they are not all there.
    static let settingsWritten = "# lockbox: settings written"

    /// Appends lockbox's settings to `postgresql.conf` unless they are all there (the
    /// line ``settingsWritten`` ends them). initdb's own configuration listens on TCP
    /// (localhost) and on the system's socket directory, and the cluster trusts every
    /// connection: a `lockbox` stopped between `initdb` and writing the settings
    /// (killed, out of disk) would otherwise leave a cluster that, at its next start,
    /// lets any local user in as its superuser. Written again whole if they were cut
    /// short (a later line overrides an earlier one).
    ///
    /// The file is reached without following links, one directory at a time, and must be
    /// a regular file of the server's user with no other name: as root, the cluster's
    /// directories belong to `postgres`, who could otherwise replace the file by a link
    /// (or a hard link) to any file, and have root append the settings to it.
    func completeSettings() throws {
        let path = dataDirectory + "/postgresql.conf"
        let file = try Self.openSettings(directory: directory, path: path)
        defer { try? file.close() }
        let current = String(decoding: try file.readToEnd() ?? Data(), as: UTF8.self)
        if current.split(separator: "\n").contains(where: { $0 == Self.settingsWritten }) { return }
        let settings = """

            # lockbox: private cluster, Unix socket only
            listen_addresses = ''
            unix_socket_directories = \(Self.socketDirectoriesSetting(directory))
            port = 5432
            max_connections = 300
            shared_buffers = 128MB
            fsync = \(durable ? "on" : "off")
            synchronous_commit = \(durable ? "on" : "off")
            full_page_writes = \(durable ? "on" : "off")
            \(Self.settingsWritten)

            """
        try file.seekToEnd()
        try file.write(contentsOf: Data(settings.utf8))
        try file.synchronize()
    }

    /// `data/postgresql.conf` of the cluster in `directory`, open for reading and appending:
    /// each step opened without following a link, and the file refused unless it is a regular
    /// file with one name, owned by this user or (as root) by the server's.
    private static func openSettings(directory: String, path: String) throws -> FileHandle {
        func refused(_ why: String) -> Failure {
            Failure(message: "refused to write the cluster's settings to \(path): \(why); nothing was changed")
        }
        func failed(_ what: String) -> Failure { refused("\(what): \(String(cString: strerror(errno)))") }
        let top = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard top >= 0 else { throw failed("cannot open \(directory)") }
        defer { close(top) }
        let data = openat(top, "data", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard data >= 0 else { throw failed("cannot open its data directory (a symbolic link is refused)") }
        defer { close(data) }
        let descriptor = openat(data, "postgresql.conf", O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else { throw failed("cannot open it (a symbolic link is refused)") }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            let failure = failed("cannot read it")
            close(descriptor)
            throw failure
        }
        let server = runningAsRoot ? getpwnam("postgres")?.pointee.pw_uid : nil
        let problem: String? =
            if (info.st_mode & S_IFMT) != S_IFREG {
                "it is not a regular file"
            } else if info.st_nlink != 1 {
                "it has \(info.st_nlink) names (hard links): it could be another file"
            } else if info.st_uid != geteuid() && info.st_uid != server {
                "it belongs to another user (uid \(info.st_uid))"
            } else {
                nil
            }
        if let problem {
            close(descriptor)
            throw refused(problem)
        }
        return FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }

    /// Removes `postmaster.pid` (and the socket's lock file) when the process it names is
    /// alive but is not a PostgreSQL server: the file was left by a server that did not
    /// stop cleanly, and its number was since given to another process (after a reboot or
    /// a container restart, numbers start again from 1). `pg_ctl` and the server trust any
    /// live process of the server's user there: `pg_ctl status` said the cluster was running
    /// while nothing listened, every command failed to connect, and `pg_ctl stop` would signal
    /// that other process. A file naming a dead process is left to the server, which
    /// replaces it; one whose process cannot be inspected is left alone.
    func removeStaleLockFiles(logger: Logger) {
        let pidFile = dataDirectory + "/postmaster.pid"
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let pid = text.split(separator: "\n").first.flatMap({ Int32($0.trimmingCharacters(in: .whitespaces)) }),
            pid > 0, kill(pid, 0) == 0 || errno == EPERM,
            let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
        else { return }
        let name = (executable as NSString).lastPathComponent
        if name == "postgres" || name.hasPrefix("postgres ") { return }
        logger.warning(
            "removing a stale postmaster.pid", metadata: ["pid": "\(pid)", "process": "\(executable)"])
        for file in [pidFile, directory + "/.s.PGSQL.5432.lock"] {
            if let lock = try? String(contentsOfFile: file, encoding: .utf8),
                lock.split(separator: "\n").first.flatMap({ Int32($0.trimmingCharacters(in: .whitespaces)) }) == pid
            {
                try? FileManager.default.removeItem(atPath: file)
            }
        }
    }

    /// True when the server of this cluster answers.
    public func isRunning() async throws -> Bool {
        guard let version = try ServerPrograms.clusterVersion(dataDirectory) else { return false }
        let bin = try await programs.binDirectory(version: version, dataDirectory: dataDirectory)
        let result = try await Self.run(bin + "/pg_ctl", ["-D", dataDirectory, "status"], asServer: true)
        return result.status == 0
    }

    /// Stops the server (fast shutdown). Does nothing if it is not running.
    public func stop() async throws {
        guard try await isRunning() else { return }
        let bin = try await programs.binDirectory(forCluster: dataDirectory)
        try await Self.exec(bin + "/pg_ctl", ["-D", dataDirectory, "-m", "fast", "-w", "stop"], asServer: true)
    }

    /// Stops the server and removes the directory.
    public func destroy() async throws {
        try? await stop()
        try FileManager.default.removeItem(atPath: directory)
    }

    /// Starts a detached watchdog that stops the server and removes the directory
    /// once process `pid` has exited, so a crashed test run leaves nothing behind.
    public func removeWhenProcessExits(_ pid: Int32) async throws {
        let bin = try await programs.binDirectory(forCluster: dataDirectory)
        let pgctl = bin + "/pg_ctl"
        let stopCommand =
            Self.runningAsRoot
            ? "runuser -u postgres -- \(shellQuote(pgctl)) -D \(shellQuote(dataDirectory)) -m immediate stop"
            : "\(shellQuote(pgctl)) -D \(shellQuote(dataDirectory)) -m immediate stop"
        let script =
            "( while kill -0 \(pid) 2>/dev/null; do sleep 1; done; \(stopCommand); rm -rf \(shellQuote(directory)) )"
            + " >/dev/null 2>&1 </dev/null &"
        _ = try await Self.run("/bin/sh", ["-c", script], asServer: false)
    }

    /// Why the server's socket cannot be in `directory`, or nil: libpq reads a comma in a
    /// `host` as a list of hosts (there is no way to quote one), and a Unix socket's path
    /// holds at most 107 bytes.
    public static func socketDirectoryProblem(_ directory: String) -> String? {
        if directory.contains(",") {
            return "the cluster's directory \(directory) holds a comma, which libpq cannot take in a socket path"
        }
        if (directory + "/.s.PGSQL.5432").utf8.count > 100 {
            return "the cluster's directory \(directory) is too long for a Unix socket path"
        }
        return nil
    }

    /// The `unix_socket_directories` value naming only `directory`, as postgresql.conf reads it:
    /// the setting is a comma-separated list, so the name is double-quoted (a comma or a space
    /// in it would otherwise split it or be trimmed), and the list is a quoted string of the file,
    /// in which a backslash and a single quote are escaped.
    static func socketDirectoriesSetting(_ directory: String) -> String {
        let listed = "\"" + directory.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        let escaped = listed.replacingOccurrences(of: "\\", with: "\\\\")
            .replacingOccurrences(of: "'", with: "''")
            .replacingOccurrences(of: "\n", with: "\\n")
        return "'" + escaped + "'"
    }

    // MARK: The directory

    /// Creates the cluster's directory, or takes over the one there only if it is a real
    /// directory (not a symbolic link) belonging to this user or, as root, to `postgres`;
    /// then, as root, hands it to `postgres`, and makes it mode 0700: the server trusts every
    /// connection on its socket, as any role (its superuser included), so only the cluster's
    /// owner (and root) may enter the directory that holds the socket.
    ///
    /// The directory may sit in a place every user can write (`/var/tmp/lockbox-<hash>` for a
    /// root or over-long `LOCKBOX_HOME`), at a predictable path: whoever creates it first must
    /// not be able to have its target handed to `postgres`, or the cluster put in a directory
    /// they control. Everything is done through one descriptor opened without following links.
    static func claimDirectory(_ directory: String) throws {
        let parent = (directory as NSString).deletingLastPathComponent
        if !parent.isEmpty { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) }
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw Failure(message: "cannot create \(directory): \(String(cString: strerror(errno)))")
        }
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard descriptor >= 0 else {
            let error = errno
            var info = stat()
            if lstat(directory, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK {
                throw Failure(
                    message: "\(directory) is a symbolic link, not a directory: refused (whoever made it could "
                        + "have the cluster put where the link points); remove it, or set LOCKBOX_HOME elsewhere")
            }
            throw Failure(message: "cannot use \(directory) for the cluster: \(String(cString: strerror(error)))")
        }
        defer { close(descriptor) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw Failure(message: "cannot read \(directory): \(String(cString: strerror(errno)))")
        }
        let server = runningAsRoot ? getpwnam("postgres")?.pointee : nil
        if runningAsRoot && server == nil {
            throw Failure(message: "as root the server runs as the `postgres` user, and there is none")
        }
        guard info.st_uid == geteuid() || (server.map { info.st_uid == $0.pw_uid } ?? false) else {
            throw Failure(
                message: "\(directory) belongs to another user (uid \(info.st_uid)): refused (its owner could "
                    + "replace the cluster's files); remove it, or set LOCKBOX_HOME elsewhere")
        }
        if let server, fchown(descriptor, server.pw_uid, server.pw_gid) != 0 {
            throw Failure(message: "cannot hand \(directory) to postgres: \(String(cString: strerror(errno)))")
        }
        guard fchmod(descriptor, 0o700) == 0 else {
            throw Failure(message: "cannot set the mode of \(directory): \(String(cString: strerror(errno)))")
        }
    }

    // MARK: Processes

    static var runningAsRoot: Bool { geteuid() == 0 }

    private static func exec(_ program: String, _ arguments: [String], asServer: Bool) async throws {
        let result = try await run(program, arguments, asServer: asServer)
        guard result.status == 0 else {
            let name = (program as NSString).lastPathComponent
            throw Failure(
                message: "\(name) failed (exit \(result.status)): "
                    + result.output.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    static func run(_ program: String, _ arguments: [String], asServer: Bool) async throws -> (
        status: Int32, output: String
    ) {
        var executable = program
        var fullArguments = arguments
        if asServer && runningAsRoot {
            executable = "/usr/sbin/runuser"
            fullArguments = ["-u", "postgres", "--", program] + arguments
        }
        let result = try await Subprocess.run(
            .path(.init(executable)),
            arguments: .init(fullArguments),
            environment: serverEnvironment(),
            workingDirectory: "/",
            output: .string(limit: 1 << 20),
            error: .string(limit: 1 << 20)
        )
        let status: Int32
        switch result.terminationStatus {
        case .exited(let code): status = Int32(code)
        case .signaled(let signal): status = 128 + Int32(signal)
        }
        return (status, result.standardOutput + result.standardError)
    }
}

/// The environment of the server programs: this process's, without what would
/// change the server's clock or inject code into it (`LD_PRELOAD`, libfaketime's
/// `FAKETIME*`). The server's clock is the witness the CLI checks its own
/// against; a server started by a CLI run under `faketime` would share its
/// offset and make that check pass (and stay off for every later command).
func serverEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Environment {
    var removed: [Environment.Key: String?] = [:]
    for name in environment.keys
    where name == "LD_PRELOAD" || name == "LD_AUDIT" || name.hasPrefix("FAKETIME") || name == "DONT_FAKE_MONOTONIC" {
        if let key = Environment.Key(rawValue: name) { removed[key] = .some(nil) }
    }
    return .inherit.updating(removed)
}

func shellQuote(_ value: String) -> String {
    "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
