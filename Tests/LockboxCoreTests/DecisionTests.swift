import Foundation
import LockboxCore
import LockboxPostgres
import Testing

@Suite("Rule 4: the 12-hour customer deadline")
struct ExpiryTests {
    @Test("a pending request can be approved until 12 h after the notification, never after, sweep or not")
    func deadline() async throws {
        try await World.with { world in
            let early = try await world.pendingCustomer()
            let late = try await world.pendingCustomer(by: "blake")
            world.clock.advance(by: .seconds(12 * 3600 - 1))
            let approved = try await world.broker.decide(early.requestId, decision: .approve, by: "approver@contoso.com")
            #expect(approved.status == .approved)
            world.clock.advance(by: .seconds(1))
            try await world.expectRefusal(.expired, containing: "expired") {
                _ = try await world.broker.decide(late.requestId, decision: .approve, by: "approver@contoso.com")
            }
            try await world.expectRefusal(.expired) {
                _ = try await world.broker.decide(late.requestId, decision: .deny, by: "admin@contoso.com")
            }
            #expect(try await world.broker.request(late.requestId).status == .expired)
            let denied = try await #require(throws: LockboxError.self) { _ = try await world.authorize("blake") }
            #expect(denied.message.contains("expired"))
        }
    }

    @Test("exactly 12 h after a notification at a sub-microsecond time, the request is expired")
    func deadlineAtFractionalTime() async throws {
        try await World.with { world in
            for fraction in [0.000_000_4, 0.000_000_6, 0.123_456_7] {
                world.clock.set(World.start.addingTimeInterval(fraction))
                let request = try await world.pendingCustomer()
                world.clock.advance(by: .seconds(12 * 3600))
                try await world.expectRefusal(.expired) {
                    _ = try await world.broker.decide(request.requestId, decision: .approve, by: "admin@contoso.com")
                }
            }
        }
    }

    @Test("the refusal names the deadline to the millisecond as request show prints it (truncated, not rounded)")
    func deadlineInRefusal() async throws {
        try await World.with { world in
            world.clock.set(World.start.addingTimeInterval(0.463_6))
            let request = try await world.pendingCustomer()
            world.clock.advance(by: .seconds(12 * 3600))
            let deadline = try #require(try await world.broker.request(request.requestId).customerDeadline)
            #expect(Broker.timestamp(deadline) == "2027-01-15T20:00:00.463Z")
            try await world.expectRefusal(.expired, containing: "expired at 2027-01-15T20:00:00.463Z without") {
                _ = try await world.broker.decide(request.requestId, decision: .approve, by: "admin@contoso.com")
            }
        }
    }

    @Test("an attempt after the window names its end to the millisecond as request show prints it")
    func windowEndInRefusal() async throws {
        try await World.with { world in
            world.clock.set(World.start.addingTimeInterval(0.463_6))
            let request = try await world.approved(duration: .seconds(3600))
            let end = try #require(request.accessEndsAt)
            #expect(Broker.timestamp(end) == "2027-01-15T09:00:00.463Z")
            world.clock.advance(by: .seconds(3600))
            let refused = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            #expect(refused.message.contains("ended at 2027-01-15T09:00:00.463Z"), "\(refused.message)")
        }
    }

    @Test("the sweeper records each expiry and completion once; a second run changes nothing")
    func sweep() async throws {
        try await World.with { world in
            let pending = try await world.pendingCustomer()
            let active = try await world.approved(duration: .seconds(3600))
            world.clock.advance(by: .seconds(3600))
            let first = try await world.broker.sweep()
            #expect(first.completed == [active.requestId])
            #expect(first.expired.isEmpty)
            world.clock.advance(by: .seconds(11 * 3600))
            let second = try await world.broker.sweep()
            #expect(second.expired == [pending.requestId])
            #expect(second.completed.isEmpty)
            let before = try await world.snapshot()
            #expect(try await world.broker.sweep() == Broker.SweepResult(expired: [], completed: []))
            #expect(try await world.snapshot() == before)
            #expect(try await world.auditCount(activity: "Expire-AccessToCustomerDataRequest") == 1)
            #expect(try await world.auditCount(activity: "Complete-AccessToCustomerDataRequest") == 1)
            let expired = try await world.broker.request(pending.requestId)
            #expect(expired.status == .expired)
            #expect(expired.endedAt == World.start.addingTimeInterval(12 * 3600))
        }
    }
}

@Suite("Rule 5: who decides, and exactly once")
struct CustomerDecisionTests {
    @Test("only a global admin or lockbox approver of the same tenant decides")
    func deciders() async throws {
        try await World.with { world in
            let request = try await world.pendingCustomer()
            try await world.expectRefusal(.notAuthorized, field: "as") {
                _ = try await world.broker.decide(request.requestId, decision: .approve, by: "approver@fabrikam.com")
            }
            try await world.expectRefusal(.notAuthorized, field: "as") {
                _ = try await world.broker.decide(request.requestId, decision: .approve, by: "admin@fabrikam.com")
            }
            try await world.expectRefusal(.notAuthorized, field: "as") {
                _ = try await world.broker.decide(request.requestId, decision: .approve, by: "user@contoso.com")
            }
            try await world.expectRefusal(.invalidInput, field: "as") {
                _ = try await world.broker.decide(request.requestId, decision: .approve, by: "not a upn")
            }
            let approved = try await world.broker.decide(
                request.requestId, decision: .approve, by: "Admin@Contoso.com", comment: "ok", clientIP: "192.0.2.10")
            #expect(approved.status == .approved)
            #expect(approved.decidedBy == "admin@contoso.com")
            try await world.expectRefusal(.notPending, containing: "no longer pending") {
                _ = try await world.broker.decide(request.requestId, decision: .deny, by: "approver@contoso.com")
            }
        }
    }

    @Test("the decision is audited as Set-AccessToCustomerDataRequest by the lockbox service account")
    func decisionAudit() async throws {
        try await World.with { world in
            let approvedRequest = try await world.pendingCustomer()
            _ = try await world.broker.decide(
                approvedRequest.requestId, decision: .approve, by: "approver@contoso.com", clientIP: "192.0.2.10")
            let deniedRequest = try await world.pendingCustomer()
            _ = try await world.broker.decide(
                deniedRequest.requestId, decision: .deny, by: "admin@contoso.com", clientIP: "2001:db8::7")
            let records = try await world.broker.auditRecords(AuditFilter(activity: "Set-AccessToCustomerDataRequest"))
            #expect(records.count == 2)
            let tenant = try await world.broker.tenant(named: "contoso")
            for (record, request, decision, by, ip) in [
                (records[1], approvedRequest, "Approve", "approver@contoso.com", "192.0.2.10"),
                (records[0], deniedRequest, "Deny", "admin@contoso.com", "2001:db8::7"),
            ] {
                #expect(record.user == tenant.serviceAccount)
                #expect(record.user.contains("BOXServiceAccount@"))
                #expect(record.actor == by)
                #expect(record.item == request.requestId.lowercased)
                #expect(record.requestId == request.requestId)
                #expect(record.clientIp == ip)
                #expect(record.tenant == "contoso")
                #expect(record.workload == "Exchange")
                #expect(record.result == "Succeeded")
                let parameters = try JSONDecoder().decode([String: String].self, from: Data(record.parameters.utf8))
                #expect(parameters["ApprovalDecision"] == decision)
                #expect(parameters["DecidedBy"] == by)
            }
        }
    }

    @Test("a request still awaiting the internal review is not yet pending a customer decision")
    func beforeInternalReview() async throws {
        try await World.with { world in
            let request = try await world.newRequest()
            for decision in [ApprovalDecision.approve, .deny] {
                try await world.expectRefusal(
                    .notPending,
                    containing: "is PendingInternal, not yet pending a customer decision: it awaits the provider's "
                        + "internal review"
                ) {
                    _ = try await world.broker.decide(request.requestId, decision: decision, by: "approver@contoso.com")
                }
            }
        }
    }

    @Test("concurrent decisions on one request: exactly one wins, the others are told it is no longer pending",
          arguments: 0..<5)
    func race(_ round: Int) async throws {
        try await World.with { world in
            let request = try await world.pendingCustomer()
            let deciders = ["approver@contoso.com", "admin@contoso.com"]
            let outcomes = await withTaskGroup(of: Result<ApprovalDecision, LockboxError>.self) { group in
                for attempt in 0..<12 {
                    let decision: ApprovalDecision = attempt % 2 == 0 ? .approve : .deny
                    group.addTask {
                        do {
                            _ = try await world.broker.decide(
                                request.requestId, decision: decision, by: deciders[attempt % 2])
                            return .success(decision)
                        } catch let error as LockboxError {
                            return .failure(error)
                        } catch {
                            return .failure(LockboxError(.databaseUnavailable, "\(error)"))
                        }
                    }
                }
                var all: [Result<ApprovalDecision, LockboxError>] = []
                for await outcome in group { all.append(outcome) }
                return all
            }
            let winners = outcomes.compactMap { try? $0.get() }
            #expect(winners.count == 1)
            for case .failure(let error) in outcomes { #expect(error.code == .notPending, "\(error.debugDescription)") }
            let final = try await world.broker.request(request.requestId)
            #expect(final.status == (winners.first == .approve ? .approved : .denied))
            #expect(try await world.auditCount(activity: "Set-AccessToCustomerDataRequest") == 1)
        }
    }
}

@Suite("Rules 6 and 7: the access window, cancel and revoke")
struct WindowTests {
    @Test("access runs over [approval, approval + duration) and stops at once without a sweep")
    func window() async throws {
        try await World.with { world in
            world.clock.advance(by: .seconds(600))
            let request = try await world.approved(duration: .seconds(90 * 60))
            let approvedAt = World.start.addingTimeInterval(600)
            #expect(request.accessStartsAt == approvedAt)
            #expect(request.accessEndsAt == approvedAt.addingTimeInterval(90 * 60))
            let access = try await world.authorize()
            #expect(access.requestID == request.requestId)
            #expect(access.accessEndsAt == approvedAt.addingTimeInterval(90 * 60))
            world.clock.advance(by: .seconds(90 * 60 - 1))
            _ = try await world.authorize()
            world.clock.advance(by: .seconds(1))
            let error = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            #expect(error.code == .accessDenied)
            #expect(error.message.contains("window") && error.message.contains("ended"))
            #expect(try await world.broker.request(request.requestId).status == .completed)
        }
    }

    @Test("only the requester cancels, pending or active; cancelling ends access")
    func cancel() async throws {
        try await World.with { world in
            let pending = try await world.pendingCustomer()
            try await world.expectRefusal(.notAuthorized, field: "as") {
                _ = try await world.broker.decide(pending.requestId, decision: .cancel, by: "blake")
            }
            try await world.expectRefusal(.invalidInput, field: "as") {
                _ = try await world.broker.decide(pending.requestId, decision: .cancel, by: "admin@contoso.com")
            }
            let cancelled = try await world.broker.decide(pending.requestId, decision: .cancel, by: "alex")
            #expect(cancelled.status == .cancelled)
            let internalPending = try await world.newRequest()
            #expect(try await world.broker.decide(internalPending.requestId, decision: .cancel, by: "alex").status == .cancelled)
            let active = try await world.approved()
            _ = try await world.authorize()
            let ended = try await world.broker.decide(active.requestId, decision: .cancel, by: "alex")
            #expect(ended.status == .cancelled)
            #expect(ended.decision == "Approve")
            let error = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            #expect(error.code == .accessDenied && error.message.contains("Cancelled"))
            try await world.expectRefusal(.notPending) {
                _ = try await world.broker.decide(active.requestId, decision: .cancel, by: "alex")
            }
            let cancels = try await world.broker.auditRecords(AuditFilter(activity: "Set-AccessToCustomerDataRequest"))
                .filter { $0.parameters.contains("\"Cancel\"") }
            #expect(cancels.count == 3)
        }
    }

    @Test("a customer approver revokes an active grant; nothing else can be revoked")
    func revoke() async throws {
        try await World.with { world in
            let pending = try await world.pendingCustomer()
            try await world.expectRefusal(.notActive) {
                _ = try await world.broker.revoke(pending.requestId, by: "approver@contoso.com")
            }
            let active = try await world.approved()
            try await world.expectRefusal(.notAuthorized, field: "as") {
                _ = try await world.broker.revoke(active.requestId, by: "approver@fabrikam.com")
            }
            _ = try await world.authorize()
            world.clock.advance(by: .seconds(1))
            let revoked = try await world.broker.revoke(active.requestId, by: "approver@contoso.com", comment: "done")
            #expect(revoked.status == .revoked)
            let error = try await #require(throws: LockboxError.self) { _ = try await world.authorize() }
            #expect(error.code == .accessDenied && error.message.contains("Revoked"), "\(error.message)")
            try await world.expectRefusal(.notActive) {
                _ = try await world.broker.revoke(active.requestId, by: "approver@contoso.com")
            }
            let expiredGrant = try await world.approved(duration: .seconds(60))
            world.clock.advance(by: .seconds(60))
            try await world.expectRefusal(.notActive) {
                _ = try await world.broker.revoke(expiredGrant.requestId, by: "approver@contoso.com")
            }
        }
    }

    @Test("ending an active grant keeps the customer's decision comment; the ending comment is in its audit record")
    func endingKeepsTheDecisionComment() async throws {
        try await World.with { world in
            for ending in ["revoke", "cancel"] {
                let request = try await world.pendingCustomer()
                _ = try await world.broker.decide(
                    request.requestId, decision: .approve, by: "approver@contoso.com", comment: "ok for SR-100200")
                if ending == "revoke" {
                    _ = try await world.broker.revoke(request.requestId, by: "approver@contoso.com", comment: "done")
                } else {
                    _ = try await world.broker.decide(request.requestId, decision: .cancel, by: "alex", comment: "done")
                }
                let row = try await world.db.pool.query(
                    "SELECT decision_comment FROM lockbox.requests WHERE request_id = \(request.requestId)")
                #expect(try row.first?.decode(String?.self, at: 0) == "ok for SR-100200", "\(ending)")
                let records = try await world.broker.auditRecords(AuditFilter(requestId: request.requestId))
                #expect(records.contains { $0.parameters.contains("ok for SR-100200") }, "\(ending)")
                #expect(records.contains { $0.parameters.contains("\"done\"") }, "\(ending)")
            }
        }
    }
}

@Suite("Rule 8: a grant covers one operator, tenant, workload and scope")
struct GrantScopeTests {
    @Test("another operator, tenant, workload or an out-of-scope resource is refused and audited")
    func scope() async throws {
        try await World.with { world in
            let request = try await world.approved(resource: "user@contoso.com")
            _ = try await world.authorize(resource: "user@contoso.com")
            _ = try await world.authorize(resource: "user@contoso.com/Inbox/m-1")
            let refusals: [(String, String, Workload, String, String)] = [
                ("blake", "contoso", .exchange, "user@contoso.com/Inbox", "no access request"),
                ("alex", "fabrikam", .exchange, "user@contoso.com/Inbox", "no access request"),
                ("alex", "contoso", .sharePoint, "user@contoso.com/Inbox", "no access request"),
                ("alex", "contoso", .exchange, "other@contoso.com/Inbox", "outside the scope"),
                ("alex", "contoso", .exchange, "user@contoso.com.evil/Inbox", "outside the scope"),
                ("alex", "northwind", .exchange, "user@contoso.com/Inbox", "unknown tenant"),
            ]
            for (alias, tenant, workload, resource, reason) in refusals {
                let before = try await world.auditCount()
                let error = try await #require(throws: LockboxError.self) {
                    _ = try await world.authorize(alias, tenant: tenant, workload: workload, resource: resource)
                }
                #expect(error.code == .accessDenied)
                #expect(error.message.contains(reason), "\(error.message)")
                let records = try await world.broker.auditRecords(AuditFilter(limit: 1))
                #expect(try await world.auditCount() == before + 1)
                #expect(records[0].result == "Denied")
                #expect(records[0].user == "Microsoft Operator")
                #expect(records[0].actor == alias)
                #expect(records[0].parameters.contains(reason))
            }
            let allowed = try await world.broker.auditRecords(AuditFilter(requestId: request.requestId))
                .filter { $0.recordType == "OperatorAction" && $0.result == "Succeeded" }
            #expect(allowed.count == 2)
            #expect(allowed.allSatisfy { $0.activity == "Get-MailboxFolder" && $0.item == "" && $0.clientIp == "10.9.8.7" })
        }
    }
}
