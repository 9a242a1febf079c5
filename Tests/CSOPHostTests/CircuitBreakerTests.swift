@testable import CSOPHost
import CSOPCore
import CSOPTestSupport
import Synchronization
import Testing

/// The states a circuit breaker changed to, in order.
final class StateLog: Sendable {
    let states = Mutex<[CircuitBreaker.State]>([])
}

/// A scripted capability with a circuit breaker, whose changes of state the test records.
final class CircuitCapability: Capability, Sendable {
    let inner: ScriptedCapability
    let circuit: CircuitBreaker?
    let log = StateLog()
    var name: String { inner.name }
    var version: String { inner.version }
    var operations: [String] { inner.operations }

    init(_ outcomes: [Result<RawJSON, CSOPError>?], failures: Int, coolDown: Double) {
        inner = ScriptedCapability(outcomes)
        let log = log
        circuit = CircuitBreaker(plugin: "fake", policy: CircuitPolicy(failures: failures, coolDown: coolDown)) { _, state, _ in
            log.states.withLock { $0.append(state) }
        }
    }

    func invoke(callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, _ attempt: Attempt) {
        inner.invoke(callID: callID, operation: operation, payload: payload, timeoutMilliseconds: timeoutMilliseconds, caller: caller, attempt)
    }

    func cancel(callID: UInt64) { inner.cancel(callID: callID) }

    var invocations: Int { inner.invocations.withLock { $0.count } }
    var changes: [CircuitBreaker.State] { log.states.withLock { $0 } }
}

@Suite struct CircuitBreakerTests {
    let down = CSOPError(ErrorCode("NOT_CONNECTED"), "database unreachable", retryable: true)
    let scheduler = ManualScheduler()

    func call(_ router: Router, retry: Int = 0, timeout: Double = 1000) -> ResponseBox {
        let box = ResponseBox()
        router.dispatch(Request(action: "fake.run", options: RequestOptions(timeout: timeout, retry: retry)), completion: box.callback())
        return box
    }

    func router(_ capability: CircuitCapability) -> Router {
        Router(capabilities: [capability], scheduler: scheduler, backoff: .standard, random: { 1 })
    }

    @Test func opensAfterConsecutiveRetryableFailuresAndFailsAtOnce() throws {
        let capability = CircuitCapability(Array(repeating: .failure(down), count: 3), failures: 3, coolDown: 10_000)
        let router = router(capability)
        for _ in 0..<3 { #expect(call(router).only?.error?.code == ErrorCode("NOT_CONNECTED")) }
        #expect(capability.changes == [.open(until: 10_000)])
        scheduler.advance(by: 2500)
        let refused = try #require(call(router).only?.error)
        #expect(refused.code == .circuitOpen)
        #expect(refused.retryable)
        #expect(refused.message.contains("after 3 failures in a row"), "\(refused.message)")
        #expect(refused.message.contains("for 7.5 s more"), "\(refused.message)")
        // Refused calls never reach the plugin.
        #expect(capability.invocations == 3)
    }

    @Test func afterTheCoolDownOneProbeDecides() throws {
        // Two failures open it; the first probe is held, then fails; the second succeeds.
        let capability = CircuitCapability([.failure(down), .failure(down), nil, .success(.null), .success(.null)], failures: 2, coolDown: 1000)
        let router = router(capability)
        _ = call(router)
        _ = call(router)
        scheduler.advance(by: 1000)
        let probe = call(router, timeout: 500)
        #expect(probe.count == 0)
        #expect(capability.circuit?.current == .halfOpen)
        let meanwhile = try #require(call(router).only?.error)
        #expect(meanwhile.code == .circuitOpen)
        #expect(meanwhile.message.contains("while one probe call tests it"), "\(meanwhile.message)")
        // The held probe times out: a failure, so the circuit opens again for a whole cool-down.
        scheduler.advance(by: 500)
        #expect(probe.only?.error?.code == .timeout)
        #expect(call(router).only?.error?.code == .circuitOpen)
        scheduler.advance(by: 1000)
        #expect(call(router).only?.isOK == true)
        #expect(call(router).only?.isOK == true)
        #expect(capability.changes == [.open(until: 1000), .halfOpen, .open(until: 2500), .halfOpen, .closed(failures: 0)])
        #expect(capability.invocations == 5)
    }

    @Test func onlyConsecutiveRetryableFailuresCount() {
        // A success or an error about the request itself shows the plugin works: the count starts over.
        let invalid = CSOPError(.invalidPayload, "bad key", retryable: true)
        let capability = CircuitCapability(
            [.failure(down), .failure(down), .failure(invalid), .failure(down), .failure(down), .success(.null), .failure(down), .failure(down)],
            failures: 3, coolDown: 1000)
        let router = router(capability)
        for _ in 0..<8 { _ = call(router) }
        #expect(capability.changes.isEmpty)
        #expect(capability.circuit?.current == .closed(failures: 2))
    }

    @Test func routerRetriesRespectAnOpenCircuit() throws {
        let capability = CircuitCapability(Array(repeating: .failure(down), count: 10), failures: 2, coolDown: 60_000)
        let box = call(router(capability), retry: 5)
        scheduler.advance(by: 10_000)
        let error = try #require(box.only?.error)
        #expect(error.code == .circuitOpen)
        // Two attempts opened it; the third retry was refused without reaching the plugin, and no more followed.
        #expect(capability.invocations == 2)
    }

    @Test func hostInfoAndEventsShowTheCircuitOfARealPlugin() async throws {
        let directory = try TemporaryDirectory()
        let entry = PluginEntry("00-diag.conf", library: "libcsop-diag.so", extra: "\n[circuit]\nfailures = 2\ncoolDown = 60_000\n")
        let host = try await TestEnvironment.makeHost([entry], in: directory)
        let events = host.events()
        let failing: JSONValue = ["code": "NOT_CONNECTED", "message": "down", "retry": true]
        // Patient: on a loaded machine a default timeout could answer TIMEOUT first.
        let patient = RequestOptions(timeout: 120_000)
        for _ in 0..<2 {
            let failed = await host.dispatch("diag.fail", failing, options: patient)
            #expect(failed.error?.code == ErrorCode("NOT_CONNECTED"), "\(failed)")
        }
        let refused = await host.dispatch("diag.noop", options: patient)
        #expect(refused.error?.code == .circuitOpen, "\(refused)")
        let info = try #require(await host.dispatch("host.info", options: patient).data)
        let diag = try #require(info["capabilities"]?.arrayValue?.first { $0["name"] == "diag" })
        #expect(diag["circuit"]?["state"] == "open")
        #expect(diag["circuit"]?["failures"] == 2)
        // Shutting down ends the stream, so reading it cannot wait forever.
        await host.shutdown()
        var received: [HostEvent] = []
        for await event in events { received.append(event) }
        #expect(received.map(\.plugin) == ["host"])
        #expect(received.first?.value == ["type": "host.circuit", "plugin": "diag", "state": "open", "coolDown": 60_000.0])
    }

    @Test func circuitConfigIsChecked() throws {
        let entry = try PluginConfigFile.parse("library = \"libx.so\"\n[circuit]\nfailures = 3\ncoolDown = 1500\n", path: "x.conf")
        #expect(entry.circuit == CircuitPolicy(failures: 3, coolDown: 1500))
        #expect(try PluginConfigFile.parse("library = \"libx.so\"\n", path: "x.conf").circuit == nil)
        for (text, message) in [
            ("[circuit]\nfailures = 0\n", "circuit.failures"), ("[circuit]\ncoolDown = \"soon\"\n", "circuit.coolDown"),
            ("[circuit]\nretries = 3\n", "retries"), ("circuit = 3\n", "circuit must be a table"),
        ] {
            #expect(throws: PluginConfigError.self) { try PluginConfigFile.parse("library = \"libx.so\"\n" + text, path: "x.conf") }
            do {
                _ = try PluginConfigFile.parse("library = \"libx.so\"\n" + text, path: "x.conf")
            } catch {
                #expect(error.message.contains(message), "\(text): \(error.message)")
                #expect(error.line != nil, "\(text)")
            }
        }
    }
}
