import ArgumentParser
import Foundation
import LockboxCore
import LockboxPostgres
import Logging

/// The `lockbox` command line: nouns, then verbs.
@main
struct Lockbox: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lockbox",
        abstract: "Customer Lockbox gateway: access requests, approvals, grants and the audit log.",
        discussion: """
            Support engineers reach customer content only through a request that a support manager and \
            then the customer approve, for at most 4 hours; every decision and every operation is audited.

            The database: --database-url or LOCKBOX_DATABASE_URL; otherwise libpq's environment when any \
            PG* variable is set (not empty); otherwise a private PostgreSQL cluster in $LOCKBOX_HOME \
            (default ~/.lockbox), \
            created, migrated and started on first use and left running (`lockbox db stop` stops it).

            Exit status: 0 success; 1 a refusal, a not-found, a conflict or a database error (one line on \
            standard error); 64 a usage error.

            \(examples(
                "lockbox demo",
                "lockbox tenant create contoso --admin admin@contoso.com",
                "lockbox request list --tenant contoso --format json"))
            """,
        version: "0.1.0",
        groupedSubcommands: [
            CommandGroup(name: "Customer administration", subcommands: [TenantCommand.self, RoleCommand.self]),
            CommandGroup(
                name: "Support engineers",
                subcommands: [OperatorCommand.self, RequestCommand.self, Invoke.self, Operations.self]),
            CommandGroup(
                name: "Audit",
                subcommands: [AuditCommand.self, NotificationsCommand.self, AuditorCommand.self]),
            CommandGroup(
                name: "Operations",
                subcommands: [Sweep.self, DatabaseCommand.self, Demo.self, Bench.self]),
        ]
    )

    /// Parses, runs, and turns every failure into one line on standard error and
    /// exit status 1; usage errors keep ArgumentParser's message and status 64.
    static func main() async {
        bootstrapLogging()
        let command: any ParsableCommand
        do {
            command = try await asyncParseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var command = command
                try command.run()
            }
        } catch {
            guard let line = FailureLine.text(for: error) else { exit(withError: error) }
            FileHandle.standardError.write(Data(("error: " + line + "\n").utf8))
            Foundation.exit(1)
        }
    }

    /// Logs go to standard error at `LOCKBOX_LOG_LEVEL` (default `warning`), never to standard output.
    static func bootstrapLogging() {
        let level =
            ProcessInfo.processInfo.environment["LOCKBOX_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
            ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// The one line printed for a failure: the message a person can act on, without
/// SQL, SQLSTATE or stack; nil for ArgumentParser's own errors (usage, help, exit codes).
enum FailureLine {
    static func text(for error: any Error) -> String? {
        let message: String
        switch error {
        case is ValidationError, is ExitCode, is CleanExit:
            return nil
        case _ where String(reflecting: type(of: error)).hasPrefix("ArgumentParser."):
            // Help requests and parse errors raised while running (e.g. by the help command).
            return nil
        case let error as LockboxError:
            // A refused or failed operator operation names its audit record, where the refusal is kept.
            message = error.message + (error.auditID.map { " (audit record \($0))" } ?? "")
        case let error as MigrationError:
            message = error.message
        case let error as PostgresError where error.timedOut != nil || error.commitOutcomeUnknown:
            // Outside the broker, the command line only reads with a timeout (the schema, the clock).
            message = Broker.translate(error, reading: !error.commitOutcomeUnknown).message
        case let error as PostgresError:
            message =
                error.isConnectionFailure
                ? "the lockbox database is unavailable: \(error.message)"
                : "the lockbox database refused the statement: \(error.message)"
        case let error as EmbeddedPostgres.Failure:
            message = "the embedded PostgreSQL failed: \(error.message)"
        case let error as CLIError:
            message = error.message
        default:
            message = String(describing: error)
        }
        return oneLine(message)
    }

    /// Collapses newlines, tabs and runs of spaces into single spaces.
    static func oneLine(_ text: String) -> String {
        text.split { character in
            character.isWhitespace || character.unicodeScalars.allSatisfy { $0.properties.generalCategory == .control }
        }
        .joined(separator: " ")
    }
}
