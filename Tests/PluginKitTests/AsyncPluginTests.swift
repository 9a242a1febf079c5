import CSOPCore
import CSOPPluginABI
import CSOPTestSupport
import Glibc
import Testing

/// The built libcsop-diag.so's descriptor. Opened with dlopen rather than linked into the test
/// bundle: two copies of the plugin kit in one process (linked, and loaded by the host tests)
/// would interpose each other's symbols.
func diagPluginDescriptor() -> UnsafeRawPointer {
    let handle = dlopen(TestEnvironment.library("diag"), RTLD_NOW | RTLD_LOCAL)!
    let register = unsafeBitCast(dlsym(handle, "csop_plugin_register")!, to: csop_plugin_register_fn.self)
    return UnsafeRawPointer(register()!)
}

/// Diag is the short example of `AsyncCSOPPlugin`: driven here through its C descriptor.
@Suite struct AsyncPluginTests {
    var descriptor: UnsafePointer<csop_plugin_descriptor> {
        diagPluginDescriptor().assumingMemoryBound(to: csop_plugin_descriptor.self)
    }

    @Test func descriptorNamesComeFromTheOperationEnum() {
        let names = (0..<descriptor.pointee.operation_count).map { String(cString: descriptor.pointee.operations[$0]!) }
        #expect(names == ["noop", "echo", "sleep", "flaky", "fail", "cancelled"])
        #expect(descriptor.pointee.struct_size == UInt32(MemoryLayout<csop_plugin_descriptor>.size))
    }

    @Test func inlineAndTaskOperationsAnswer() async throws {
        let diag = try PluginHarness(descriptor: diagPluginDescriptor(), config: [:])
        #expect(await diag.call("noop", [:]).value == .null)
        #expect(await diag.call("echo", ["a": [1, 2]]).value == ["a": [1, 2]])
        #expect(await diag.call("sleep", ["ms": 1]).value == ["slept": 1])
        let failed = await diag.call("fail", ["code": "USER_NOT_FOUND", "message": "no such user", "retry": true])
        #expect(failed.error == CSOPError("USER_NOT_FOUND", "no such user", retryable: true))
        let bad = await diag.call("sleep", ["ms": "soon"])
        #expect(bad.code == "INVALID_PAYLOAD")
    }

    @Test func cancelStopsTheTaskOfThatCall() async throws {
        let diag = try PluginHarness(descriptor: diagPluginDescriptor(), config: [:])
        let id = PluginHarness.newCallID()
        async let slept = diag.call("sleep", ["ms": 30_000], callID: id)
        try await Task.sleep(for: .milliseconds(50))
        diag.cancel(id)
        #expect(await slept.error?.message == "sleep was cancelled")
        #expect(await diag.call("cancelled", [:]).value == 1)
        diag.cancel(id)  // Every cancellation the host asks for is counted.
        #expect(await diag.call("cancelled", [:]).value == 2)
    }

    /// The host's timer can fire before `invoke` registered the call's task: the task then
    /// starts cancelled instead of running to the end.
    @Test func aCancelThatArrivesFirstStillStopsTheCall() async throws {
        let diag = try PluginHarness(descriptor: diagPluginDescriptor(), config: [:])
        let id = PluginHarness.newCallID()
        diag.cancel(id)
        let reply = await diag.call("sleep", ["ms": 30_000], callID: id)
        #expect(reply.error?.message == "sleep was cancelled")
    }

    @Test func anOperationNumberOutOfRangeIsOperationNotFound() async throws {
        let diag = try PluginHarness(descriptor: diagPluginDescriptor(), config: [:])
        let reply = await diag.call("teleport", [:])
        #expect(reply.code == "OPERATION_NOT_FOUND")
    }

    @Test func badConfigFailsCreateAndCheckWithTheKey() throws {
        for _ in 0..<3 {
            #expect(throws: CSOPError.self) { try PluginHarness(descriptor: diagPluginDescriptor(), config: ["verbose": true]) }
        }
        do {
            _ = try PluginHarness(descriptor: diagPluginDescriptor(), config: ["verbose": true])
        } catch {
            #expect(error.code == .invalidPayload)
            #expect(error.message.contains("verbose"))
        }
        let check = try #require(descriptor.pointee.check_config)
        var error = csop_error()
        let good = Array("{}".utf8)
        #expect(good.withUnsafeBufferPointer { check($0.baseAddress, $0.count, &error) } == 0)
        let bad = Array(#"{"verbose":true}"#.utf8)
        #expect(bad.withUnsafeBufferPointer { check($0.baseAddress, $0.count, &error) } != 0)
        #expect(CSOPError(abi: error, plugin: "diag").message.contains("verbose"))
        let notObject = Array("[1]".utf8)
        #expect(notObject.withUnsafeBufferPointer { check($0.baseAddress, $0.count, &error) } != 0)
    }

    @Test func aHostTableTooSmallIsRefusedAtCreate() throws {
        do {
            _ = try PluginHarness(descriptor: diagPluginDescriptor(), config: [:], hostAPISize: 16)
            Issue.record("create accepted a 16-byte host table")
        } catch {
            #expect(error.code == .pluginFault)
            #expect(error.message.contains("16 bytes"))
        }
    }
}
