import Foundation
import LockboxPostgres
import Testing

/// A LOGIN role made for one test. Roles belong to the whole cluster, so names
/// carry the test database's unique suffix and are dropped at the end.
public struct Login: Sendable {
    public let name: String
    public let password: String
}

extension TestDatabase {
    /// Creates one login per `(label, group role or nil)`, named `lbx_<label>_<this
    /// database's suffix>`, runs `body`, then drops those that still exist.
    ///
    /// When the server refuses to create roles (a shared server where the test
    /// user lacks CREATEROLE), the test is cancelled: a login cannot be made.
    public func withLogins<T: Sendable>(
        _ specs: [(label: String, group: String?)], _ body: ([Login]) async throws -> T
    ) async throws -> T {
        let suffix = name.replacingOccurrences(of: "lockbox_test_", with: "")
        var made: [Login] = []
        func dropAll() async {
            for login in made {
                if let drop = try? await pool.query("SELECT format('DROP ROLE IF EXISTS %I', \(login.name)::text)"),
                    let statement = try? drop.first?.decode(String.self, at: 0)
                {
                    try? await pool.withConnection { try await $0.execute(script: statement) }
                }
            }
        }
        do {
            for spec in specs {
                let login = Login(name: "lbx_\(spec.label)_\(suffix)", password: UUID().uuidString)
                // DDL takes no parameters: the server quotes the name and the password.
                let create = try await pool.query(
                    "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', \(login.name)::text, \(login.password)::text), "
                        + "CASE WHEN \(spec.group)::text IS NOT NULL "
                        + "THEN format('GRANT %I TO %I', \(spec.group)::text, \(login.name)::text) END")
                let (createRole, grant) = try create.first!.decode((String, String?).self)
                do {
                    try await pool.withConnection { try await $0.execute(script: createRole) }
                } catch let error as PostgresError where error.sqlState == "42501" {
                    await dropAll()
                    try Test.cancel("this server does not let the tests create login roles: \(error.message)")
                }
                made.append(login)
                if let grant { try await pool.withConnection { try await $0.execute(script: grant) } }
            }
            let value = try await body(made)
            await dropAll()
            return value
        } catch {
            await dropAll()
            throw error
        }
    }

    /// A conninfo string (or URL) that connects to this database as `user` with `password`.
    public func connectionString(user: String, password: String) -> String {
        let base = connectionString
        if base.hasPrefix("postgres://") || base.hasPrefix("postgresql://"), var components = URLComponents(string: base) {
            components.user = user
            components.password = password
            return components.string ?? base
        }
        // In a key=value conninfo string, a repeated keyword overrides the earlier one.
        return base + " user=\(conninfoQuote(user)) password=\(conninfoQuote(password))"
    }

    /// Opens a libpq connection to this database as `user`.
    public func connect(user: String, password: String) async throws -> PGConnection {
        try await PGConnection.connect(connectionString(user: user, password: password))
    }
}
