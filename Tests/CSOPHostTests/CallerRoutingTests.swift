import CSOPCore
import CSOPTestSupport
import Testing

@testable import CSOPHost

/// A request's caller: checked by the router before anything else, and handed to the plugin.
@Suite struct CallerRoutingTests {
    func caller(_ patterns: String, subject: String = "alice", tenant: String? = nil) throws -> Caller {
        Caller(subject: subject, tenant: tenant, actions: try ActionPatterns(parsing: patterns))
    }

    @Test func anActionOutsideThePatternsIsForbiddenAndNeverRetried() throws {
        let capability = ScriptedCapability([.success(.null)])
        let scheduler = ManualScheduler()
        let router = Router(capabilities: [capability], scheduler: scheduler)
        let box = ResponseBox()
        let request = Request(action: "fake.run", options: RequestOptions(retry: 3), caller: try caller("storage.*,fake.other"))
        router.dispatch(request, completion: box.callback())
        let error = try #require(box.only?.error)
        #expect(error.code == .forbidden)
        #expect(error.retryable == false)
        #expect(error.message.contains("fake.run"))
        #expect(error.message.contains("the token allows only storage.*, fake.other"))
        #expect(capability.invocations.withLock { $0.isEmpty })
        #expect(scheduler.scheduledDelays.isEmpty)
    }

    /// A forbidden domain is refused before it is looked up, so the answer does not say whether it is loaded.
    @Test func aForbiddenDomainDoesNotRevealWhetherItIsLoaded() throws {
        let router = Router(capabilities: [ScriptedCapability([])], scheduler: ManualScheduler())
        for action in ["fake.run", "missing.run"] {
            let box = ResponseBox()
            router.dispatch(Request(action: action, caller: try caller("storage.*")), completion: box.callback())
            #expect(box.only?.error?.code == .forbidden)
        }
    }

    @Test func anAllowedCallerReachesTheCapabilityWithItsCallerAndTheOwnerWithNone() throws {
        let capability = ScriptedCapability([.success(.null), .success(.null)])
        let router = Router(capabilities: [capability], scheduler: ManualScheduler())
        let alice = try caller("fake.*", tenant: "acme")
        let box = ResponseBox()
        router.dispatch(Request(action: "fake.run", caller: alice), completion: box.callback())
        router.dispatch(Request(action: "fake.run"), completion: box.callback())
        #expect(box.responses.withLock { $0.allSatisfy(\.isOK) })
        #expect(capability.callers.withLock { $0 } == [alice, nil])
    }

    @Test func anInvalidCallerIsUnauthenticated() throws {
        let capability = ScriptedCapability([.success(.null)])
        let router = Router(capabilities: [capability], scheduler: ManualScheduler())
        let box = ResponseBox()
        router.dispatch(Request(action: "fake.run", caller: try caller("*", subject: "bad\nsubject")), completion: box.callback())
        #expect(box.only?.error?.code == .unauthenticated)
        #expect(box.only?.error?.retryable == false)
        #expect(capability.invocations.withLock { $0.isEmpty })
    }

    @Test func hostInfoThroughACallerNeedsItsPattern() async throws {
        let directory = try TemporaryDirectory()
        let host = try await TestEnvironment.makeHost([PluginEntry("00-diag.conf", library: "libcsop-diag.so")], in: directory)
        #expect(await host.dispatch("host.info", caller: try caller("diag.*")).error?.code == .forbidden)
        #expect(await host.dispatch("host.info", caller: try caller("host.info")).isOK)
        #expect(await host.dispatch("host.ping", caller: try caller("host.info")).error?.code == .forbidden)
        #expect(await host.dispatch("host.info").isOK)
        await host.shutdown()
    }

    /// The JSON form cannot claim a caller; the embedding code sets it.
    @Test func jsonDispatchTakesTheCallerFromTheEmbedderOnly() async throws {
        let directory = try TemporaryDirectory()
        let host = try await TestEnvironment.makeHost([PluginEntry("00-diag.conf", library: "libcsop-diag.so")], in: directory)
        let diagOnly = try caller("diag.*")
        let forbidden = await withCheckedContinuation { continuation in
            host.dispatch(json: Array(#"{"action":"host.ping"}"#.utf8), caller: diagOnly) { continuation.resume(returning: $0) }
        }
        #expect(forbidden.error?.code == .forbidden)
        let claimed = await withCheckedContinuation { continuation in
            host.dispatch(json: Array(#"{"action":"host.ping","caller":{"subject":"root"}}"#.utf8)) { continuation.resume(returning: $0) }
        }
        #expect(claimed.error?.code == .invalidPayload)
        await host.shutdown()
    }

    /// Through the dlopen'ed storage plugin: the host fills the csop_call caller fields.
    @Test func tenantsReachTheirOwnKeysThroughTheHost() async throws {
        let directory = try TemporaryDirectory()
        let host = try await TestEnvironment.makeHost(
            [PluginEntry("10-storage.conf", library: "libcsop-storage.so", config: ["path": .string(directory.file("s.sqlite"))])],
            in: directory)
        let a = try caller("storage.*", subject: "a"), b = try caller("storage.*", subject: "b")
        // Generous timeouts: a loaded machine may take seconds to start a task.
        func call(_ action: String, _ payload: JSONValue = [:], _ caller: Caller?) async -> Response {
            await host.dispatch(action, payload, options: RequestOptions(timeout: 120_000), caller: caller)
        }
        #expect(await call("storage.save", ["key": "k", "data": "of a"], a).isOK)
        #expect(await call("storage.get", ["key": "k"], a).data == "of a")
        #expect(await call("storage.get", ["key": "k"], b).error?.code == keyNotFound)
        #expect(await call("storage.get", ["key": "k"], nil).error?.code == keyNotFound)
        let listed = await call("storage.list", [:], b)
        #expect(listed.data?["keys"] == [], "\(listed)")
        #expect(await call("storage.list", [:], a).data?["keys"] == ["k"])
        #expect(await call("compute.execute", [:], a).error?.code == .forbidden)
        await host.shutdown()
    }

    private let keyNotFound = ErrorCode("KEY_NOT_FOUND")
}
