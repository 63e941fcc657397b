import Foundation
import LockboxPostgres
import Synchronization

/// Whether an operation only reads content or changes it.
public enum OperationKind: String, Sendable, Codable {
    case read
    case change
}

/// A pre-approved operation in a connector's catalogue.
public struct OperationDescriptor: Sendable, Codable, Hashable {
    /// Verb-noun name, e.g. `Get-MailboxMessage`; also the audit record's Activity.
    public var name: String
    public var kind: OperationKind
    /// What the operation addresses, e.g. "a message in a mailbox folder".
    public var addresses: String
    /// One line on what it does.
    public var summary: String
    /// The arguments it requires.
    public var requiredArguments: [String]
    /// The arguments it may also take.
    public var optionalArguments: [String]

    public init(
        name: String, kind: OperationKind, addresses: String, summary: String, requiredArguments: [String],
        optionalArguments: [String] = []
    ) {
        self.name = name
        self.kind = kind
        self.addresses = addresses
        self.summary = summary
        self.requiredArguments = requiredArguments
        self.optionalArguments = optionalArguments
    }

    /// Every argument it takes: the required and optional ones, and `resource`
    /// (the path in one argument, instead of the named ones). An attempt with any
    /// other argument is refused.
    public var acceptedArguments: [String] { requiredArguments + optionalArguments + ["resource"] }
}

/// A JSON-like value returned by an operation.
public indirect enum ContentValue: Sendable, Hashable, Codable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case array([ContentValue])
    case object([String: ContentValue])
    case null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([ContentValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: ContentValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }
}

/// Proof that the broker authorized one operation and recorded it.
///
/// Only the broker can create one (its initializer is internal to the core),
/// and the mock services' content methods require it, so a connector cannot
/// reach content without asking the broker first. It opens one content
/// operation, once (see ``require(workload:operation:resource:)``): every
/// operation has its own authorization and its own audit record.
public struct ContentAccess: Sendable, Hashable {
    public let operatorAlias: String
    public let tenant: String
    public let workload: Workload
    public let operation: String
    /// The resource the broker checked against the grant's scope.
    public let resource: String
    public let requestID: UUID
    /// The audit record written before this value was created.
    public let auditID: Int64
    public let accessEndsAt: Date
    /// Shared by every copy of this value: spent by the first content operation it opens.
    private let use = Use()

    private final class Use: Sendable {
        let spent = Atomic<Bool>(false)
    }

    init(
        operatorAlias: String, tenant: String, workload: Workload, operation: String, resource: String,
        requestID: UUID, auditID: Int64, accessEndsAt: Date
    ) {
        self.operatorAlias = operatorAlias
        self.tenant = tenant
        self.workload = workload
        self.operation = operation
        self.resource = resource
        self.requestID = requestID
        self.auditID = auditID
        self.accessEndsAt = accessEndsAt
    }

    /// Equal when they are the same authorization (the same fields, the same audit record).
    public static func == (lhs: ContentAccess, rhs: ContentAccess) -> Bool {
        lhs.auditID == rhs.auditID && lhs.operatorAlias == rhs.operatorAlias && lhs.tenant == rhs.tenant
            && lhs.workload == rhs.workload && lhs.operation == rhs.operation && lhs.resource == rhs.resource
            && lhs.requestID == rhs.requestID && lhs.accessEndsAt == rhs.accessEndsAt
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(auditID)
        hasher.combine(requestID)
    }

    /// Refuses unless this access was granted for `operation` of `workload` on `resource`
    /// (or, when `resource` is nil, any resource), and unless it has not opened a
    /// content operation yet; the first call that passes spends it, for every copy.
    public func require(workload: Workload, operation: String, resource: String? = nil) throws {
        guard self.workload == workload, self.operation == operation else {
            throw LockboxError(
                .accessDenied,
                "this authorization is for \(self.operation) on \(self.workload), not \(operation) on \(workload)")
        }
        if let resource, !resource.sameSegment(as: self.resource) {
            throw LockboxError(
                .accessDenied, "this authorization is for resource \(self.resource), not \(resource)")
        }
        guard use.spent.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else {
            throw LockboxError(
                .accessDenied,
                "this authorization (audit record \(auditID)) has already opened its operation: "
                    + "each content operation needs its own authorization")
        }
    }
}

/// A service connector: declares its workload and pre-approved operations and
/// performs them only with a ``ContentAccess`` from the broker.
public protocol Connector: Sendable {
    /// The workload the connector serves.
    var workload: Workload { get }
    /// The pre-approved operations; nothing else can run.
    var catalogue: [OperationDescriptor] { get }
    /// The resource an operation addresses, as a path the grant's scope is
    /// checked against (e.g. `alice@contoso.com/Inbox/m-1` lies inside the scope
    /// `alice@contoso.com`). Throws when required arguments are missing.
    func resource(for operation: OperationDescriptor, tenant: String, arguments: [String: String]) throws -> String
    /// Performs an authorized operation on the mock service.
    func perform(_ access: ContentAccess, arguments: [String: String]) async throws -> ContentValue
    /// The shape of this workload's resource paths, against which a request's scope is
    /// checked when it is created (``ResourcePath/checkScope(_:workload:)``); nil: any path.
    var scopePath: ResourcePath? { get }
}

extension Connector {
    public var scopePath: ResourcePath? { nil }
}

/// The connectors by workload. Adding one is one `register` call; the core does not change.
public struct ConnectorRegistry: Sendable {
    private var connectors: [Workload: any Connector] = [:]

    public init(_ connectors: [any Connector] = []) {
        for connector in connectors { register(connector) }
    }

    /// Adds (or replaces) the connector for its workload.
    public mutating func register(_ connector: any Connector) {
        connectors[connector.workload] = connector
    }

    public subscript(workload: Workload) -> (any Connector)? { connectors[workload] }

    /// The workloads served, for ``Broker/init(pool:clock:workloads:scopePaths:groupCommit:authorizationTimeout:logger:)``.
    public var workloads: Set<Workload> { Set(connectors.keys) }

    /// Each workload's resource path, for checking request scopes (``Connector/scopePath``).
    public var scopePaths: [Workload: ResourcePath] { connectors.compactMapValues(\.scopePath) }

    /// All connectors, by workload name.
    public var all: [any Connector] { connectors.values.sorted { $0.workload < $1.workload } }
}

/// What an allowed operation returned.
public struct OperationResult: Sendable {
    public var access: ContentAccess
    public var value: ContentValue
}

/// An operation attempt by an operator.
public struct OperationAttempt: Sendable {
    public var operatorAlias: String
    public var tenant: String
    public var workload: Workload
    public var operation: String
    public var arguments: [String: String]
    public var clientIP: String?

    public init(
        operatorAlias: String, tenant: String, workload: Workload, operation: String,
        arguments: [String: String] = [:], clientIP: String? = nil
    ) {
        self.operatorAlias = operatorAlias
        self.tenant = tenant
        self.workload = workload
        self.operation = operation
        self.arguments = arguments
        self.clientIP = clientIP
    }
}

extension Broker {
    /// Checks the operator's grant and writes the audit record (one statement),
    /// returning the access value the connector needs; a refusal throws
    /// `accessDenied` with the reason, also recorded. If the record cannot be
    /// written, this throws and no access exists (fail closed).
    public func authorize(
        _ attempt: OperationAttempt, operation: String, resource: String, denial: String? = nil
    ) async throws -> ContentAccess {
        var denial = denial
        var operation = operation
        if operation.isEmpty {
            // The audit record's Activity is the operation's name and may not be empty:
            // recorded as "(none)", so that the attempt is recorded (and refused) instead
            // of failing the statement, and every other call batched with it.
            denial = denial ?? Self.noOperation
            operation = Self.noOperationActivity
        }
        var clientIP = attempt.clientIP
        if clientIP != nil, (try? Validate.clientIP(clientIP)) == nil {
            denial = denial ?? "invalid client IP address \(Validate.quoted(clientIP ?? ""))"
            clientIP = nil
        }
        // PostgreSQL text cannot hold a NUL character: libpq would cut the value short
        // there (`alex\0x` checked and recorded as `alex`, and granted alex's access) and
        // jsonb refuses `\u0000` (the statement fails, unrecorded, with every call batched
        // with it). Such an attempt is refused, and recorded with U+FFFD in its place.
        var nulField: String?
        /// `value` as recorded; the first field found with a NUL is the one the refusal names.
        func withoutNUL(_ value: String, field: String) -> String {
            guard value.hasNUL else { return value }
            nulField = nulField ?? field
            return value.replacingNUL
        }
        let operatorAlias = withoutNUL(attempt.operatorAlias, field: "operator")
        let tenant = withoutNUL(attempt.tenant, field: "tenant")
        let workload = withoutNUL(attempt.workload.rawValue, field: "workload")
        operation = withoutNUL(operation, field: "operation")
        let resource = withoutNUL(resource, field: "resource")
        var argumentValues = attempt.arguments
        if argumentValues.contains(where: { $0.key.hasNUL || $0.value.hasNUL }) {
            let named = argumentValues.filter { $0.key.hasNUL || $0.value.hasNUL }.keys.sorted().first!
            nulField = nulField ?? "argument \(named.replacingNUL)"
            argumentValues = Dictionary(
                argumentValues.map { ($0.key.replacingNUL, $0.value.replacingNUL) }, uniquingKeysWith: { $1 })
        }
        if let nulField {
            denial = "\(nulField) must not contain a NUL character"
        } else if denial?.hasNUL == true {
            denial = denial?.replacingNUL
        }
        let arguments = PGJSON(object: argumentValues)
        var now: Date?
        do {
            now = try self.now()
        } catch {
            denial = denial ?? "the broker clock is unavailable: \(error)"
        }
        let call = AuthorizeCall(
            operatorAlias: operatorAlias, tenant: tenant, workload: workload,
            operation: operation, resource: resource, clientIP: clientIP, arguments: arguments, now: now,
            denial: denial)
        let outcome: AuthorizeOutcome
        do {
            outcome = try await authorizer.authorize(call)
        } catch let error as PostgresError where error.sqlState == "57014" {
            // Cancelled (the writer's statement_timeout, or the lone call's cancel request at its
            // timeout): the server gave up and rolled the check back.
            throw LockboxError(
                .databaseUnavailable,
                "access denied: the database did not check and record the operation within "
                    + "\(PGDeadline.describe(authorizer.timeout)), so nothing was recorded or returned",
                detail: String(reflecting: error))
        } catch {
            throw LockboxError(
                .databaseUnavailable,
                "access denied: the check and its audit record could not be completed "
                    + "(\((error as? PostgresError)?.message ?? "\(error)")), so nothing was returned",
                detail: String(reflecting: error))
        }
        guard outcome.allowed, let requestID = outcome.requestID, let ends = outcome.accessEndsAt else {
            throw LockboxError(
                .accessDenied, "access denied: \(outcome.reason ?? "no active grant")", auditID: outcome.auditID)
        }
        return ContentAccess(
            operatorAlias: attempt.operatorAlias, tenant: attempt.tenant, workload: attempt.workload,
            operation: operation, resource: resource, requestID: requestID, auditID: outcome.auditID,
            accessEndsAt: ends)
    }

    /// Why an attempt that names no operation is refused.
    static let noOperation = "operation must not be empty"
    /// The Activity recorded for it (the audit log refuses an empty one).
    static let noOperationActivity = "(none)"

    /// Runs an operator's operation through its connector: catalogue check,
    /// authorization and audit by the broker, then the mock service.
    /// Every attempt, allowed or refused, writes exactly one audit record.
    public func invoke(_ attempt: OperationAttempt, registry: ConnectorRegistry) async throws -> OperationResult {
        var denial: String?
        var resource = attempt.arguments["resource"] ?? ""
        if attempt.operation.isEmpty {
            _ = try await authorize(attempt, operation: attempt.operation, resource: resource, denial: Self.noOperation)
            throw LockboxError(.accessDenied, "access denied: \(Self.noOperation)")
        }
        guard let connector = registry[attempt.workload] else {
            denial =
                "no connector serves the workload \(attempt.workload.rawValue); known: "
                + registry.workloads.sorted().map(\.rawValue).joined(separator: ", ")
            _ = try await authorize(attempt, operation: attempt.operation, resource: resource, denial: denial)
            throw LockboxError(.accessDenied, "access denied: \(denial!)")
        }
        if let descriptor = connector.catalogue.first(where: { $0.name == attempt.operation }) {
            let accepted = descriptor.acceptedArguments
            if attempt.arguments.keys.contains(where: { !accepted.contains($0) }) {
                let unknown = attempt.arguments.keys.filter { !accepted.contains($0) }.sorted()
                denial =
                    "invalid arguments for \(attempt.operation): it does not take "
                    + "\(unknown.joined(separator: ", ")); it takes \(accepted.joined(separator: ", "))"
            } else {
                do {
                    resource = try connector.resource(
                        for: descriptor, tenant: attempt.tenant, arguments: attempt.arguments)
                } catch {
                    denial = "invalid arguments for \(attempt.operation): \(error)"
                }
            }
        } else {
            denial =
                "operation \(attempt.operation) is not in the pre-approved catalogue of the "
                + "\(attempt.workload.rawValue) connector"
        }
        let access = try await authorize(attempt, operation: attempt.operation, resource: resource, denial: denial)
        do {
            return OperationResult(access: access, value: try await connector.perform(access, arguments: attempt.arguments))
        } catch var error as LockboxError {
            // The attempt was allowed and recorded: the failure names its record.
            error.auditID = access.auditID
            throw error
        } catch {
            throw LockboxError(.operationFailed, "\(attempt.operation) failed: \(error)", auditID: access.auditID)
        }
    }
}

/// The text of the fixture `name` among a connector's embedded fixtures (its
/// `Fixtures/*.json`, which the build embeds as `embeddedFixtures`).
public func embeddedFixture(_ name: String, in fixtures: [(path: String, text: String)]) throws -> Data {
    guard let fixture = fixtures.first(where: { $0.path == name }) else {
        throw LockboxError(
            .invalidInput, "no embedded fixture \(name) (has: \(fixtures.map(\.path).joined(separator: ", ")))",
            field: "fixture")
    }
    return Data(fixture.text.utf8)
}

extension String {
    /// Whether the text holds a NUL character, which PostgreSQL text cannot.
    var hasNUL: Bool { utf8.contains(0) }

    /// The text with each NUL character replaced by U+FFFD, as the audit log records it.
    var replacingNUL: String {
        guard hasNUL else { return self }
        var result = String.UnicodeScalarView()
        for scalar in unicodeScalars { result.append(scalar.value == 0 ? "\u{FFFD}" : scalar) }
        return String(result)
    }
}
