import Foundation
import LockboxConnectors
import LockboxCore
import Testing

/// Where a request stands when its operator tries to use it.
enum GrantState: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case awaitingReview = "before the internal review"
    case rejected = "after the manager rejected it"
    case pendingCustomer = "while pending the customer's decision"
    case unanswered = "12 hours after the notification, without a customer decision or a sweep"
    case denied = "after the customer denied it"
    case windowEnded = "once the access window ended, without a sweep"
    case cancelled = "after the requester cancelled the active grant"
    case revoked = "after the customer revoked the active grant"

    var testDescription: String { rawValue }
}

/// Every connector, the three services and the test's Teams connector, runs
/// these: the broker decides and records every attempt, and content comes back
/// only inside an active grant.
@Suite("Conformance: every connector's content is reachable only through an active grant")
struct ConformanceTests {
    @Test("the registry serves the three services; the Teams connector was added with one line")
    func registry() {
        #expect(standardConnectors().workloads == Workload.builtIn)
        #expect(Set(workloadsUnderTest) == Workload.builtIn.union([TeamsConnector.teams]))
        for connector in connectorsUnderTest().all {
            #expect(connector is any ConformanceSampling, "\(connector.workload) has no conformance samples")
        }
    }

    @Test(
        "the catalogue is well formed and the connector derives resources from arguments", arguments: workloadsUnderTest
    )
    func catalogue(_ workload: Workload) throws {
        let connector = try #require(connectorsUnderTest()[workload] as? any ConformanceSampling)
        let catalogue = connector.catalogue
        #expect(connector.workload == workload)
        #expect(!catalogue.isEmpty)
        #expect(Set(catalogue.map(\.name)).count == catalogue.count, "operation names are unique")
        #expect(catalogue.contains { $0.kind == .read })
        for descriptor in catalogue {
            #expect(descriptor.name.wholeMatch(of: /[A-Z][a-z]+-[A-Z][A-Za-z]+/) != nil, "\(descriptor.name)")
            #expect(
                !descriptor.summary.isEmpty && !descriptor.addresses.isEmpty && !descriptor.requiredArguments.isEmpty)
        }
        #expect(
            connector.sampleOperations.map(\.operation).sorted() == catalogue.map(\.name).sorted(),
            "the samples cover the whole catalogue")
        for sample in connector.sampleOperations + [connector.sampleOutside, connector.sampleOtherTenant] {
            let descriptor = try #require(catalogue.first { $0.name == sample.operation })
            let derived = try connector.resource(for: descriptor, tenant: "contoso", arguments: sample.arguments)
            #expect(derived == sample.resource)
            // The path as one `resource` argument instead of the named ones, or agreeing with them.
            let explicit = sample.extra.merging(["resource": sample.resource]) { $1 }
            #expect(try connector.resource(for: descriptor, tenant: "contoso", arguments: explicit) == sample.resource)
            let both = sample.arguments.merging(["resource": sample.resource]) { $1 }
            #expect(try connector.resource(for: descriptor, tenant: "contoso", arguments: both) == sample.resource)
            // Each missing required argument is refused by name.
            for name in descriptor.requiredArguments {
                var arguments = sample.arguments
                arguments[name] = nil
                let error = try #require(throws: LockboxError.self, "\(descriptor.name) without \(name)") {
                    _ = try connector.resource(for: descriptor, tenant: "contoso", arguments: arguments)
                }
                #expect(error.code == .invalidInput)
                #expect(error.message.contains(name), "\(error.message)")
            }
        }
        // A `resource` that disagrees with the named arguments is refused.
        let read = connector.sampleRead
        let descriptor = try #require(catalogue.first { $0.name == read.operation })
        let conflicting = read.arguments.merging(["resource": connector.sampleOutside.resource]) { $1 }
        #expect(throws: LockboxError.self) {
            _ = try connector.resource(for: descriptor, tenant: "contoso", arguments: conflicting)
        }
    }

    @Test(
        "inside the window every catalogue operation runs, returns content and is recorded once",
        arguments: workloadsUnderTest)
    func allowed(_ workload: Workload) async throws {
        try await Gateway.with { gateway in
            let connector = try gateway.connector(workload)
            let grant = try await gateway.grant(workload, scope: connector.sampleScope)
            for call in connector.sampleOperations {
                try await gateway.expectAllowed(
                    gateway.attempt(workload, call), resource: call.resource, expect: call.expect, request: grant)
            }
            // The window is [approval, approval + duration): still open one second before its end.
            gateway.clock.advance(by: .seconds(3599))
            try await gateway.expectAllowed(
                gateway.attempt(workload, connector.sampleRead), resource: connector.sampleRead.resource,
                expect: connector.sampleRead.expect, request: grant)
        }
    }

    @Test("no content without an active grant", arguments: workloadsUnderTest, GrantState.allCases)
    func deniedOutsideGrant(_ workload: Workload, _ state: GrantState) async throws {
        try await Gateway.with { gateway in
            let connector = try gateway.connector(workload)
            let read = gateway.attempt(workload, connector.sampleRead)
            let scope = connector.sampleScope
            func allowed(_ grant: AccessRequest) async throws {
                try await gateway.expectAllowed(
                    read, resource: connector.sampleRead.resource, expect: connector.sampleRead.expect, request: grant)
            }
            let request: AccessRequest
            let reason: String
            switch state {
            case .awaitingReview:
                request = try await gateway.request(workload, scope: scope)
                reason = "is PendingInternal, not approved"
            case .rejected:
                request = try await gateway.review(try await gateway.request(workload, scope: scope), approve: false)
                reason = "is Rejected, not approved"
            case .pendingCustomer:
                request = try await gateway.review(try await gateway.request(workload, scope: scope))
                #expect(request.status == .pendingCustomer)
                reason = "is PendingCustomer, not approved"
            case .unanswered:
                request = try await gateway.review(try await gateway.request(workload, scope: scope))
                gateway.clock.advance(by: .seconds(12 * 3600))
                reason = "expired without a customer decision"
            case .denied:
                let pending = try await gateway.review(try await gateway.request(workload, scope: scope))
                request = try await gateway.decide(pending, .deny)
                reason = "is Denied, not approved"
            case .windowEnded:
                request = try await gateway.grant(workload, scope: scope, duration: .seconds(30 * 60))
                try await allowed(request)
                gateway.clock.advance(by: .seconds(30 * 60))
                reason = "access window of request \(request.requestId.lowercased) ended"
            case .cancelled:
                request = try await gateway.grant(workload, scope: scope)
                try await allowed(request)
                _ = try await gateway.broker.decide(request.requestId, decision: .cancel, by: "alex")
                reason = "is Cancelled, not approved"
            case .revoked:
                request = try await gateway.grant(workload, scope: scope)
                try await allowed(request)
                try await gateway.broker.revoke(request.requestId, by: "admin@contoso.com")
                reason = "is Revoked, not approved"
            }
            try await gateway.expectDenied(
                read, because: reason, request: .request(request), resource: connector.sampleRead.resource)
            // Every other operation of the catalogue is refused the same way.
            for call in connector.sampleOperations {
                try await gateway.expectDenied(
                    gateway.attempt(workload, call), because: reason, request: .request(request),
                    resource: call.resource)
            }
        }
    }

    @Test(
        "a grant covers one operator, tenant, workload, scope and the catalogue, nothing else",
        arguments: workloadsUnderTest)
    func grantBoundaries(_ workload: Workload) async throws {
        try await Gateway.with { gateway in
            let connector = try gateway.connector(workload)
            let grant = try await gateway.grant(workload, scope: connector.sampleScope)
            let read = connector.sampleRead
            try await gateway.expectAllowed(
                gateway.attempt(workload, read), resource: read.resource, expect: read.expect, request: grant)

            try await gateway.expectDenied(
                gateway.attempt(workload, read, by: "blake"), because: "no access request of operator blake",
                request: .none, resource: read.resource)
            try await gateway.expectDenied(
                gateway.attempt(workload, connector.sampleOtherTenant, tenant: "fabrikam"),
                because: "no access request of operator alex for \(workload) in tenant fabrikam", request: .none,
                resource: connector.sampleOtherTenant.resource)
            try await gateway.expectDenied(
                gateway.attempt(workload, read, tenant: "northwind"), because: "unknown tenant northwind",
                request: .none)
            for other in gateway.registry.all where other.workload != workload {
                let sample = try #require(other as? any ConformanceSampling).sampleRead
                try await gateway.expectDenied(
                    gateway.attempt(other.workload, sample),
                    because: "no access request of operator alex for \(other.workload)", request: .none,
                    resource: sample.resource)
                // Another connector's operation is outside this connector's catalogue.
                var foreign = read
                foreign.operation = sample.operation
                try await gateway.expectDenied(
                    gateway.attempt(workload, foreign), because: "is not in the pre-approved catalogue",
                    request: .unchecked)
            }
            var unlisted = read
            unlisted.operation = "Export-AllContent"
            try await gateway.expectDenied(
                gateway.attempt(workload, unlisted),
                because: "operation Export-AllContent is not in the pre-approved catalogue",
                request: .unchecked)
            try await gateway.expectDenied(
                gateway.attempt(workload, connector.sampleOutside),
                because: "outside the scope \(connector.sampleScope)",
                request: .request(grant), resource: connector.sampleOutside.resource)
            // A path that only starts like the scope is still outside it.
            var lookalike = read
            lookalike.path = [:]
            lookalike.extra["resource"] =
                connector.sampleScope + "x" + read.resource.dropFirst(connector.sampleScope.count)
            try await gateway.expectDenied(
                gateway.attempt(workload, lookalike), because: "outside the scope", request: .request(grant))
            // Missing arguments are refused before anything is read.
            let descriptor = try #require(connector.catalogue.first { $0.name == read.operation })
            var incomplete = read
            incomplete.path[descriptor.requiredArguments[0]] = nil
            try await gateway.expectDenied(
                gateway.attempt(workload, incomplete),
                because: "invalid arguments for \(read.operation)", request: .unchecked, resource: "")
            // So is an argument the operation does not take: named, with the ones it takes.
            var unknown = read
            unknown.extra["verbose"] = "true"
            try await gateway.expectDenied(
                gateway.attempt(workload, unknown),
                because: "invalid arguments for \(read.operation): it does not take verbose; it takes "
                    + descriptor.acceptedArguments.joined(separator: ", "),
                request: .unchecked, resource: "")

            // None of that disturbed the grant.
            try await gateway.expectAllowed(
                gateway.attempt(workload, read), resource: read.resource, expect: read.expect, request: grant)
        }
    }

    @Test("a workload-wide grant in one tenant never reaches another tenant's content", arguments: workloadsUnderTest)
    func tenantIsolation(_ workload: Workload) async throws {
        try await Gateway.with { gateway in
            let connector = try gateway.connector(workload)
            let grant = try await gateway.grant(workload, scope: nil, tenant: "fabrikam")
            let own = connector.sampleOtherTenant
            try await gateway.expectAllowed(
                gateway.attempt(workload, own, tenant: "fabrikam"), resource: own.resource, expect: own.expect,
                request: grant)
            // Contoso's resource named under a fabrikam grant: authorized and recorded, but not there.
            let error = try await #require(throws: LockboxError.self) {
                _ = try await gateway.broker.invoke(
                    gateway.attempt(workload, connector.sampleRead, tenant: "fabrikam"), registry: gateway.registry)
            }
            #expect(error.code == .notFound, "\(error.debugDescription)")
            #expect(!error.message.contains(connector.sampleRead.expect))
            // The failure names the record of the allowed attempt.
            let record = try await gateway.lastAuditRow()
            #expect(record.result == "Succeeded" && error.auditID == record.id, "\(error.debugDescription)")
        }
    }

    @Test("with the tenant's lockbox off, the internal approval is still required", arguments: workloadsUnderTest)
    func lockboxOff(_ workload: Workload) async throws {
        try await Gateway.with(lockbox: false) { gateway in
            let connector = try gateway.connector(workload)
            let read = gateway.attempt(workload, connector.sampleRead)
            let created = try await gateway.request(workload, scope: connector.sampleScope)
            try await gateway.expectDenied(
                read, because: "is PendingInternal, not approved", request: .request(created))
            let rejected = try await gateway.review(
                try await gateway.request(workload, scope: connector.sampleScope, by: "blake"), approve: false)
            try await gateway.expectDenied(
                gateway.attempt(workload, connector.sampleRead, by: "blake"), because: "is Rejected, not approved",
                request: .request(rejected))
            let reviewed = try await gateway.review(created)
            #expect(reviewed.status == .approved, "no customer step when the tenant's lockbox is off")
            try await gateway.expectAllowed(
                read, resource: connector.sampleRead.resource, expect: connector.sampleRead.expect, request: reviewed)
        }
    }

    @Test(
        "when the audit record cannot be written, nothing is returned and nothing changes",
        arguments: workloadsUnderTest)
    func failClosed(_ workload: Workload) async throws {
        try await Gateway.with { gateway in
            let connector = try gateway.connector(workload)
            let grant = try await gateway.grant(workload, scope: connector.sampleScope)
            let read = connector.sampleRead
            try await gateway.expectAllowed(
                gateway.attempt(workload, read), resource: read.resource, expect: read.expect, request: grant)

            try await gateway.db.pool.query(
                "ALTER TABLE lockbox.audit_records ADD CONSTRAINT t_fail CHECK (false) NOT VALID")
            let before = try await gateway.auditRowCount()
            for call in connector.sampleOperations {
                let error = try await #require(throws: LockboxError.self) {
                    _ = try await gateway.broker.invoke(gateway.attempt(workload, call), registry: gateway.registry)
                }
                #expect(error.code == .databaseUnavailable, "\(error.debugDescription)")
                #expect(error.message.contains("nothing was returned"), "\(error.message)")
                #expect(!error.message.contains(call.expect))
            }
            #expect(try await gateway.auditRowCount() == before)

            // Once records can be written again every operation, the changes
            // included, finds the content as it was: nothing ran unrecorded.
            try await gateway.db.pool.query("ALTER TABLE lockbox.audit_records DROP CONSTRAINT t_fail")
            for call in connector.sampleOperations {
                try await gateway.expectAllowed(
                    gateway.attempt(workload, call), resource: call.resource, expect: call.expect, request: grant)
            }

            // The database gone: refused the same way.
            await gateway.db.pool.close()
            let error = try await #require(throws: LockboxError.self) {
                _ = try await gateway.broker.invoke(gateway.attempt(workload, read), registry: gateway.registry)
            }
            #expect(error.code == .databaseUnavailable, "\(error.debugDescription)")
        }
    }

    @Test(
        "perform honours only the access it was given: its workload, operation, tenant and resource",
        arguments: workloadsUnderTest)
    func accessIsBinding(_ workload: Workload) async throws {
        try await Gateway.with { gateway in
            let connector = try gateway.connector(workload)
            _ = try await gateway.grant(workload, scope: connector.sampleScope)
            let read = connector.sampleRead
            let access = try await gateway.broker.authorize(
                gateway.attempt(workload, read), operation: read.operation, resource: read.resource)

            // Arguments naming another resource do not redirect it: the access's resource is read.
            let value = try await connector.perform(access, arguments: connector.sampleOutside.arguments)
            #expect(json(value).contains(read.expect))
            #expect(!json(value).contains(connector.sampleOutside.expect))

            // Another connector refuses it.
            for other in gateway.registry.all where other.workload != workload {
                let sample = try #require(other as? any ConformanceSampling).sampleRead
                let error = try await #require(
                    throws: LockboxError.self, "\(other.workload) accepted a \(workload) access"
                ) {
                    _ = try await other.perform(access, arguments: sample.arguments)
                }
                #expect(error.code == .accessDenied)
            }

            // An access minted for an operation outside the catalogue reaches nothing.
            let unlisted = try await gateway.broker.authorize(
                gateway.attempt(workload, read), operation: "Export-AllContent", resource: read.resource)
            let error = try await #require(throws: LockboxError.self) {
                _ = try await connector.perform(unlisted, arguments: read.arguments)
            }
            #expect(error.code == .accessDenied)
        }
    }

    @Test("an attempt on a workload no connector serves is refused and still recorded once")
    func unservedWorkload() async throws {
        try await Gateway.with { gateway in
            let attempt = OperationAttempt(
                operatorAlias: "alex", tenant: "contoso", workload: Workload("Yammer"), operation: "Get-Community",
                arguments: ["community": "all-company"], clientIP: Gateway.clientIP)
            let before = try await gateway.auditRowCount()
            await #expect(throws: LockboxError.self) {
                _ = try await gateway.broker.invoke(attempt, registry: gateway.registry)
            }
            #expect(try await gateway.auditRowCount() == before + 1, "every attempt, allowed or refused, is recorded")
        }
    }
}
