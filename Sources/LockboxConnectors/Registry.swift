import ExchangeOnline
import LockboxCore
import OneDrive
import SharePointOnline

/// The three service connectors of the gateway (Exchange Online, SharePoint
/// Online, OneDrive), each over its deterministic seed content, in a new
/// registry. Every call returns fresh connectors, so content changed through
/// one registry is not seen by another. Adding a connector is one line here.
public func standardConnectors() -> ConnectorRegistry {
    var registry = ConnectorRegistry()
    registry.register(ExchangeOnlineConnector())
    registry.register(SharePointOnlineConnector())
    registry.register(OneDriveConnector())
    return registry
}
