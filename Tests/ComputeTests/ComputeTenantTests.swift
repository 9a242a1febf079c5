import CSOPCore
import CSOPHost
import CSOPTestSupport
import Testing

/// Registered functions belong to the tenant that registered them (the owner's to the owner);
/// built-in tasks are everyone's. Through the real host and libcsop-compute.so.
@Suite struct ComputeTenantTests {
    static let patient = RequestOptions(timeout: 60_000, retry: 0)
    static let a = Caller(subject: "alice", tenant: "tenant-a", actions: .all)
    static let b = Caller(subject: "bob", tenant: "tenant-b", actions: .all)

    func call(_ host: CSOPHost, _ action: String, _ payload: JSONValue, _ caller: Caller?) async -> Response {
        await host.dispatch(Request(action: "compute." + action, payload: payload, options: Self.patient, caller: caller))
    }

    @Test func aTenantCannotSeeCallOrRemoveAnothersFunctions() async throws {
        let directory = try TemporaryDirectory("csop-compute")
        let host = try await TestEnvironment.makeHost(
            [PluginEntry("30-compute.conf", library: "libcsop-compute.so", config: ["workers": 2])], in: directory)
        #expect(host.failures.isEmpty, "\(host.failures)")
        let a = Self.a, b = Self.b

        #expect(await call(host, "register", ["name": "f", "fn": "return 'a:' + data"], a).data == ["name": "f", "replaced": false])
        let hidden = await call(host, "execute", ["task": "f", "data": 1], b)
        #expect(hidden.error?.code == "INVALID_TASK")
        #expect(await call(host, "execute", ["task": "f", "data": 1], nil).error?.code == "INVALID_TASK")
        let inBatch = await call(host, "batch", ["tasks": [["task": "f", "data": 1]]], b)
        #expect(inBatch.data?["results"]?.arrayValue?.first?["error"]?["code"] == "INVALID_TASK")
        #expect(await call(host, "execute", ["task": "f", "data": 1], a).data?["result"] == "a:1")

        // b's "f" is b's own: registering it replaces nothing of a's.
        #expect(await call(host, "register", ["name": "f", "fn": "return 'b:' + data"], b).data?["replaced"] == false)
        #expect(await call(host, "register", ["name": "g", "fn": "return 'owner:' + data"], nil).data?["replaced"] == false)
        #expect(await call(host, "execute", ["task": "f", "data": 2], b).data?["result"] == "b:2")
        #expect(await call(host, "execute", ["task": "f", "data": 2], a).data?["result"] == "a:2")
        #expect(await call(host, "execute", ["task": "g", "data": 2], a).error?.code == "INVALID_TASK")
        #expect(await call(host, "execute", ["task": "g", "data": 2], nil).data?["result"] == "owner:2")

        #expect(await call(host, "tasks", [:], a).data?["registered"] == ["f"])
        #expect(await call(host, "tasks", [:], nil).data?["registered"] == ["g"])
        #expect(await call(host, "stats", [:], b).data?["registered"] == 1)

        #expect(await call(host, "unregister", ["name": "g"], b).data?["removed"] == false)
        #expect(await call(host, "unregister", ["name": "f"], b).data?["removed"] == true)
        #expect(await call(host, "execute", ["task": "f", "data": 3], a).data?["result"] == "a:3")
        #expect(await call(host, "execute", ["task": "g", "data": 3], nil).data?["result"] == "owner:3")

        // Built-ins are shared.
        #expect(await call(host, "execute", ["task": "fibonacci", "data": ["n": 10]], b).data?["result"] == "55")
        await host.shutdown()
    }
}
