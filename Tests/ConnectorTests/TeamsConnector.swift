import LockboxCore

/// A fourth connector, written here and registered with one line, to prove
/// that a new service needs its own folder and nothing in the core.
struct TeamsConnector: Connector {
    static let teams = Workload("Teams")
    static let getChannelMessage = "Get-ChannelMessage"

    let store = TeamsStore()

    var workload: Workload { Self.teams }

    var catalogue: [OperationDescriptor] {
        [
            OperationDescriptor(
                name: Self.getChannelMessage, kind: .read, addresses: "a channel of a team: team/channel",
                summary: "Lists the messages of one channel.", requiredArguments: ["team", "channel"])
        ]
    }

    func resource(for operation: OperationDescriptor, tenant: String, arguments: [String: String]) throws -> String {
        guard operation.name == Self.getChannelMessage else {
            throw LockboxError(.invalidInput, "\(operation.name) is not a Teams operation", field: "operation")
        }
        var named: String?
        if arguments["team"] != nil || arguments["channel"] != nil || arguments["resource"] == nil {
            for name in ["team", "channel"] where (arguments[name] ?? "").isEmpty || arguments[name]!.contains("/") {
                throw LockboxError(.invalidInput, "\(operation.name) needs the argument \(name)", field: name)
            }
            named = "\(arguments["team"]!)/\(arguments["channel"]!)"
        }
        if let explicit = arguments["resource"] {
            guard explicit.split(separator: "/", omittingEmptySubsequences: false).count == 2,
                named == nil || named == explicit
            else {
                throw LockboxError(
                    .invalidInput, "resource must be team/channel and agree with the arguments", field: "resource")
            }
            return explicit
        }
        return named!
    }

    func perform(_ access: ContentAccess, arguments: [String: String]) async throws -> ContentValue {
        let parts = access.resource.split(separator: "/").map(String.init)
        guard access.workload == workload, access.operation == Self.getChannelMessage, parts.count == 2 else {
            throw LockboxError(
                .accessDenied, "the Teams connector does not perform \(access.operation) on \(access.resource)")
        }
        return try store.messages(access, team: parts[0], channel: parts[1])
    }
}

/// The in-memory content of the Teams connector; readable only with a ``ContentAccess``.
final class TeamsStore: Sendable {
    private let channels: [String: [String: [String]]] = [
        "contoso": [
            "support/general": ["Printer on floor 3 is jammed again", "Fixed, thanks!"],
            "sales/general": ["Litware signed the renewal"],
        ],
        "fabrikam": ["research/lab": ["Centrifuge B is booked all week"]],
    ]

    func messages(_ access: ContentAccess, team: String, channel: String) throws -> ContentValue {
        try access.require(
            workload: TeamsConnector.teams, operation: TeamsConnector.getChannelMessage,
            resource: "\(team)/\(channel)")
        guard let messages = channels[access.tenant]?["\(team)/\(channel)"] else {
            throw LockboxError(.notFound, "tenant \(access.tenant) has no channel \(team)/\(channel)")
        }
        return .object([
            "team": .string(team), "channel": .string(channel), "messages": .array(messages.map(ContentValue.string)),
        ])
    }
}
