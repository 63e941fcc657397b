import Foundation

/// A service whose content is protected: `Exchange`, `SharePoint`, `OneDrive`,
/// or another one a connector declares.
public struct Workload: RawRepresentable, Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }

    public static let exchange = Workload("Exchange")
    public static let sharePoint = Workload("SharePoint")
    public static let oneDrive = Workload("OneDrive")
    /// The three services of the design.
    public static let builtIn: Set<Workload> = [.exchange, .sharePoint, .oneDrive]

    public var description: String { rawValue }
    public static func < (lhs: Workload, rhs: Workload) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Where a request is in its lifecycle (DESIGN.md, "Request lifecycle").
public enum RequestStatus: String, Sendable, Codable, CaseIterable {
    case pendingInternal = "PendingInternal"
    case rejected = "Rejected"
    case pendingCustomer = "PendingCustomer"
    case approved = "Approved"
    case denied = "Denied"
    case expired = "Expired"
    case cancelled = "Cancelled"
    case revoked = "Revoked"
    case completed = "Completed"
}

/// A customer role within a tenant.
public enum CustomerRole: String, Sendable, Codable, CaseIterable {
    case globalAdministrator = "GlobalAdministrator"
    case customerLockboxApprover = "CustomerLockboxApprover"
}

/// A decision through `Set-AccessToCustomerDataRequest`.
public enum ApprovalDecision: String, Sendable, Codable, CaseIterable {
    /// Customer approves (opens the access window).
    case approve = "Approve"
    /// Customer denies.
    case deny = "Deny"
    /// The requester withdraws the request or ends the grant.
    case cancel = "Cancel"
}

/// A customer organisation.
public struct Tenant: Sendable, Codable, Hashable {
    public var tenantId: UUID
    public var name: String
    public var customerLockbox: Bool
    /// The lockbox service account, the "User" of decision audit records.
    public var serviceAccount: String
    public var createdAt: Date
}

/// A customer user's role in a tenant.
public struct RoleAssignment: Sendable, Codable, Hashable {
    public var tenant: String
    public var upn: String
    public var role: CustomerRole
    public var grantedAt: Date
    public var grantedBy: String
}

/// A provider support engineer.
public struct SupportOperator: Sendable, Codable, Hashable {
    public var alias: String
    public var isManager: Bool
    public var createdAt: Date
}

/// An access request and where it stands.
///
/// `status` is the status at the time of reading: an approved request past its
/// window reads `Completed` and an unanswered one past its deadline `Expired`,
/// even if the sweeper has not recorded it yet.
public struct AccessRequest: Sendable, Codable, Hashable {
    public var requestId: UUID
    public var tenant: String
    public var workload: Workload
    public var ticket: String
    public var reason: String
    public var requester: String
    public var durationMinutes: Int
    public var resource: String?
    public var status: RequestStatus
    public var createdAt: Date
    public var reviewedAt: Date?
    public var internalApprover: String?
    public var notifiedAt: Date?
    public var customerDeadline: Date?
    public var decidedAt: Date?
    public var decidedBy: String?
    public var decision: String?
    public var accessStartsAt: Date?
    public var accessEndsAt: Date?
    public var endedAt: Date?
    public var endedReason: String?
}

/// One row of the audit log.
public struct AuditRecord: Sendable, Codable, Hashable {
    public var id: Int64
    public var occurredAt: Date
    public var tenant: String?
    public var recordType: String
    /// The seed's "User" column: the tenant's lockbox service account,
    /// `Microsoft Operator`, the acting principal, or `System`.
    public var user: String
    /// The real principal behind the record.
    public var actor: String
    public var clientIp: String?
    public var activity: String
    public var item: String
    public var requestId: UUID?
    public var workload: String?
    public var result: String
    /// JSON object text.
    public var parameters: String
}

/// A queued notification to a customer approver.
public struct LockboxNotification: Sendable, Codable, Hashable {
    public var notificationId: Int64
    public var tenant: String
    public var requestId: UUID
    public var recipient: String
    public var subject: String
    public var body: String
    public var createdAt: Date
    public var sentAt: Date?
    /// When delivery found the request no longer awaiting the customer, and did not send it.
    public var withdrawnAt: Date?
    /// Why it was withdrawn, e.g. "the request is Cancelled".
    public var withdrawnReason: String?
}
