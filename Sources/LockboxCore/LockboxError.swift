/// Every refusal and failure of the broker: a stable `code`, the field at
/// fault when there is one, and a message a person can act on. Database
/// details stay in `debugDescription`.
public struct LockboxError: Error, Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public enum Code: String, Sendable, Codable {
        /// A value broke a rule; `field` names it.
        case invalidInput
        /// A tenant, operator, request or role does not exist.
        case notFound
        /// Something with that name already exists.
        case alreadyExists
        /// The principal may not do this (wrong role, wrong tenant, not the requester).
        case notAuthorized
        /// The internal reviewer is the requester (two-person rule).
        case twoPersonRule
        /// The internal reviewer is not a support manager.
        case notManager
        /// The request is not, or no longer, in a state that allows this decision.
        case notPending
        /// The request has no active grant to cancel or revoke.
        case notActive
        /// The customer did not decide within 12 hours of the notification.
        case expired
        /// The tenant would be left without a global administrator.
        case lastGlobalAdministrator
        /// An operator content operation was refused; the audit record says why too.
        case accessDenied
        /// The database could not be reached or the statement failed: fail closed.
        case databaseUnavailable
        /// The broker's clock could not be read: fail closed.
        case clockUnavailable
        /// The connector or mock service failed after authorization.
        case operationFailed
    }

    public var code: Code
    public var message: String
    /// The input field at fault, for `invalidInput` and some refusals.
    public var field: String?
    /// Underlying detail (SQLSTATE, server message) for logs, never for end users.
    public var detail: String?
    /// The audit record written for this attempt, when one was: a refused operator
    /// operation (`accessDenied`) and an operation that failed after it was allowed
    /// and recorded (`operationFailed`, or the service's own refusal).
    public var auditID: Int64?

    public init(_ code: Code, _ message: String, field: String? = nil, detail: String? = nil, auditID: Int64? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.detail = detail
        self.auditID = auditID
    }

    static func invalid(_ field: String, _ rule: String) -> LockboxError {
        LockboxError(.invalidInput, "\(field): \(rule)", field: field)
    }

    public var description: String { message }

    public var debugDescription: String {
        var text = "LockboxError(\(code.rawValue)"
        if let field { text += ", field: \(field)" }
        text += ", \(message)"
        if let detail { text += ", detail: \(detail)" }
        if let auditID { text += ", audit record: \(auditID)" }
        return text + ")"
    }
}
