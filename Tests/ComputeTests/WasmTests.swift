import CSOPCore
import CSOPTestSupport
import CSOPWasmRewrite
import Dispatch
import Foundation
import Testing

@testable import ComputePlugin

/// WebAssembly tasks through the real service and WasmKit, with the modules in
/// `Tests/Fixtures/Wasm` (each `.wasm` built from the `.wat` beside it by wabt's `wat2wasm`).
@Suite struct WasmTests {
    /// Calls without `fuel` run compiled from the start, so every test below but the fuel ones
    /// exercises JavaScriptCore's engine; `tiered` runs them as the plugin does by default.
    let h = ComputeHarness(
        {
            var settings = ComputeConfiguration(workers: 2, memoryLimitMB: 16)
            settings.wasmInterpreterSlice = 0
            return settings
        }())

    static func module(_ name: String) throws -> JSONValue {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(CCompiler.packageRoot)/Tests/Fixtures/Wasm/\(name).wasm"))
        return .string(data.base64EncodedString())
    }

    /// `execute {task: "wasm", data: {module, export, …}}` on `harness` (default `h`).
    func wasm(
        _ module: String, _ export: String, _ data: JSONObject = [:], timeout: Double? = nil, on harness: ComputeHarness? = nil
    ) async throws -> Result<JSONValue, CSOPError> {
        var data = data
        data["module"] = try Self.module(module)
        data["export"] = .string(export)
        var payload: JSONObject = ["task": "wasm", "data": .object(data)]
        if let timeout { payload["options"] = ["timeout": .double(timeout)] }
        return await (harness ?? h).call("execute", .object(payload)).map { $0["result"] ?? "<no result>" }
    }

    @Test func numbersInAndOut() async throws {
        #expect(try await wasm("arith", "add", ["args": [2, 3]]).get() == 5)
        #expect(try await wasm("arith", "add", ["args": [-7, 2]]).get() == -5)
        // i32 arguments may be given unsigned; i32 results read signed.
        #expect(try await wasm("arith", "add", ["args": [4_294_967_295, 0]]).get() == -1)
        // An exact 64-bit product past 2^53 comes back as a decimal string; i64 arguments may be strings.
        #expect(try await wasm("arith", "mul64", ["args": [3_037_000_499, 3_037_000_499]]).get() == "9223372030926249001")
        #expect(try await wasm("arith", "mul64", ["args": ["-9007199254740993", "1"]]).get() == "-9007199254740993")
        #expect(try await wasm("arith", "mul64", ["args": [.int(1 << 26), .int(1 << 27)]]).get() == .int(1 << 53))
        #expect(try await wasm("arith", "mul64", ["args": ["18446744073709551615", "1"]]).get() == -1)
        #expect(try await wasm("arith", "hypot", ["args": [3, 4.0]]).get() == .double(5))
        #expect(try await wasm("arith", "hypot", ["args": ["Infinity", 1]]).get() == "Infinity")
        // Several results make an array; none make null.
        #expect(try await wasm("arith", "divmod", ["args": [-7, 2]]).get() == [-3, -1])
        #expect(try await wasm("arith", "nothing").get() == .null)
    }

    @Test func bytesInAndOutThroughMemory() async throws {
        var fnv: UInt32 = 0x811c_9dc5
        for byte in "hello, wasm".utf8 { fnv = (fnv ^ UInt32(byte)) &* 0x0100_0193 }
        #expect(try await wasm("bytes", "fnv1a", ["input": "hello, wasm"]).get() == .int(Int64(Int32(bitPattern: fnv))))
        #expect(try await wasm("bytes", "upper", ["input": "héllo, wasm", "output": "string"]).get() == "HéLLO, WASM")
        #expect(try await wasm("bytes", "upper_packed", ["input": "abc", "output": "string"]).get() == "ABC")
        #expect(try await wasm("bytes", "upper", ["input": "", "output": "string"]).get() == "")
        // Binary in and out: every byte value survives, and only a–z change.
        let all = Data((0...255).map { UInt8($0) })
        let upper = Data((0...255).map { UInt8($0) >= 97 && UInt8($0) <= 122 ? UInt8($0) - 32 : UInt8($0) })
        #expect(
            try await wasm("bytes", "upper", ["inputBase64": .string(all.base64EncodedString()), "output": "base64"]).get()
                == .string(upper.base64EncodedString()))
        #expect(try await wasm("bytes", "json", ["output": "json"]).get() == ["ok": true, "n": [1, 2, 3]])
        // Not UTF-8, not JSON, outside memory: said so.
        let latin1 = try #require(try await wasm("bytes", "upper", ["inputBase64": "/w==", "output": "string"]).error)
        #expect(latin1.code == .executionFailed && latin1.message.contains("not UTF-8"), "\(latin1)")
        let notJSON = try #require(try await wasm("bytes", "upper", ["input": "{", "output": "json"]).error)
        #expect(notJSON.code == .executionFailed && notJSON.message.contains("not JSON"), "\(notJSON)")
        let outside = try #require(try await wasm("bytes", "bad_range", ["output": "base64"]).error)
        #expect(outside.code == .executionFailed && outside.message.contains("outside its memory"), "\(outside)")
    }

    @Test func eachCallGetsAFreshInstance() async throws {
        // alloc bumps a global: a second call that saw the first one's state would get another pointer.
        let first = try await wasm("bytes", "alloc", ["args": [100]]).get()
        #expect(first == 1024)
        for _ in 0..<4 { #expect(try await wasm("bytes", "alloc", ["args": [100]]).get() == first) }
    }

    @Test func anEndlessLoopEndsAtTheTimeoutAndTheWorkerServesOn() async throws {
        let error = try #require(try await wasm("traps", "spin", timeout: 200).error)
        #expect(error.code == .timeout)
        #expect(error.retryable)
        #expect(error.message.contains("timeout of 200 ms"), "\(error.message)")
        #expect(try await h.stats()["timedOut"] == 1)
        for _ in 0..<4 { #expect(try await wasm("arith", "add", ["args": [1, 1]]).get() == 2) }
    }

    @Test func theCallsDeadlineBoundsTheLoopWhenItComesFirst() async throws {
        // A long task timeout, but the host gives the call 300 ms: the loop gets no more fuel than that.
        let payload: JSONValue = ["task": "wasm", "data": ["module": try Self.module("traps"), "export": "spin"], "options": ["timeout": 600_000]]
        let deadline = DispatchTime.now().uptimeNanoseconds + 300_000_000
        let error = try #require(await h.start("execute", payload, deadline: deadline).outcome.value.error)
        #expect(error.code == .timeout)
        #expect(error.message.contains("its call had left"), "\(error.message)")
    }

    @Test func aFuelBudgetBoundsTheWorkExactly() async throws {
        #expect(try await wasm("heavy", "heavy", ["args": [1000], "fuel": 1_000_000]).get() != .null)
        let error = try #require(try await wasm("heavy", "heavy", ["args": [1_000_000], "fuel": 1000]).error)
        #expect(error.code == .executionFailed)
        #expect(error.message.contains("used up the fuel it was given"), "\(error.message)")
        #expect(try await wasm("heavy", "heavy", ["args": [1], "fuel": 0]).error?.code == .invalidPayload)
    }

    @Test func memoryIsCapped() async throws {
        // The bomb grows by 16 pages until memory.grow fails: it fails at the 16 MiB cap (256 pages).
        let pages = try await wasm("traps", "grow").get()
        guard case .int(let count) = pages else { Issue.record("grow answered \(pages)"); return }
        #expect(count > 240 && count <= 256, "\(count)")
        // Initial memory over the cap: refused when called, and when registered.
        let big = try #require(try await wasm("bigmemory", "start").error)
        #expect(big.code == .resourceExhausted)
        #expect(big.message.contains("asks for 4096 MiB of memory at the start"), "\(big.message)")
        let initial = try #require(await h.error("register", ["name": "big", "wasm": try Self.module("bigmemory")]))
        #expect(initial.code == .invalidPayload)
        #expect(initial.message.contains("4096 MiB of initial memory"), "\(initial.message)")
        #expect(initial.message.contains("memoryLimitMB"), "\(initial.message)")
    }

    @Test func trapsAreExecutionFailedWithTheirKind() async throws {
        for (export, kind, args) in [
            ("unreachable", "unreachable", [] as [JSONValue]), ("oob", "out of bounds memory access", []),
            ("divzero", "integer divide by zero", [0]), ("recurse", "call stack exhausted", [0]),
        ] {
            let error = try #require(try await wasm("traps", export, ["args": .array(args)]).error, "\(export)")
            #expect(error.code == .executionFailed, "\(export): \(error)")
            #expect(error.message.contains("trapped: \(kind)"), "\(export): \(error.message)")
            #expect(!error.retryable)
        }
        #expect(try await wasm("traps", "divzero", ["args": [1]]).get() == 1)
    }

    @Test func badModulesAreInvalidPayload() async throws {
        let invalid = try #require(try await wasm("invalid", "bad").error)
        #expect(invalid.code == .invalidPayload)
        #expect(invalid.message.contains("not valid WebAssembly"), "\(invalid.message)")
        let imports = try #require(try await wasm("imports", "run").error)
        #expect(imports.code == .invalidPayload)
        #expect(imports.message.contains("imports env.read_file"), "\(imports.message)")
        for (module, message) in [
            ("not base64 at all!", "base64"), ("aGVsbG8=", "not a WebAssembly binary"), ("AGFzbQEAAAAB", "not a valid WebAssembly module"),
        ] {
            let error = try #require(await h.error("execute", ["task": "wasm", "data": ["module": .string(module), "export": "x"]]))
            #expect(error.code == .invalidPayload, "\(module)")
            #expect(error.message.contains(message), "\(module): \(error.message)")
        }
        let registered = try #require(await h.error("register", ["name": "bad", "wasm": try Self.module("invalid")]))
        #expect(registered.code == .invalidPayload)
        #expect(registered.message.contains("Expected i32"), "\(registered.message)")
        #expect(try await h.call("tasks", [:]).get()["registered"] == [])
    }

    @Test func badCallsSayWhatTheExportTakes() async throws {
        let cases: [(JSONObject, String, String)] = [
            (["args": [1]], "add", "takes 2 arguments (i32, i32); 1 given"),
            (["args": ["one", 2]], "add", "payload.data.args[0] must be an integer"),
            (["args": [4_294_967_296, 2]], "add", "from -2147483648 to 4294967295"),
            (["args": [1.5, 2]], "add", "payload.data.args[0] must be an integer"),
            (["args": ["18446744073709551616", 1]], "mul64", "from -2^63 to 2^64-1"),
            (["args": [true, 1]], "hypot", "must be a number"),
            ([:], "missing", "exports no function \"missing\"; it exports \"add\""),
            (["output": "string"], "nothing", "must export its memory"),
            (["output": "text"], "add", "output must be one of"),
            (["input": "x", "inputBase64": "eA=="], "add", "not both"),
            (["unknown": 1], "add", "unknown"),
        ]
        for (data, export, message) in cases {
            let error = try #require(try await wasm("arith", export, data).error, "\(data)")
            #expect(error.code == .invalidPayload, "\(data): \(error)")
            #expect(error.message.contains(message), "\(data): \(error.message)")
        }
        let noAlloc = try #require(try await wasm("traps", "oob", ["input": "x"]).error)
        #expect(noAlloc.message.contains("must export its memory") || noAlloc.message.contains("alloc"), "\(noAlloc.message)")
        let wrongOutput = try #require(try await wasm("bytes", "fnv1a", ["input": "x", "output": "string"]).error)
        #expect(wrongOutput.message.contains("must return (pointer: i32, length: i32) or one i64"), "\(wrongOutput.message)")
        let wrongInput = try #require(try await wasm("bytes", "json", ["input": "x"]).error)
        #expect(wrongInput.message.contains("must take (pointer: i32, length: i32) first"), "\(wrongInput.message)")
        #expect(await h.error("execute", ["task": "wasm", "data": ["export": "add"]])?.message.contains("payload.data.module is required") == true)
    }

    @Test func registerOnceCallByName() async throws {
        #expect(try await h.call("register", ["name": "text", "wasm": try Self.module("bytes")]).get() == ["name": "text", "replaced": false])
        #expect(try await h.result("text", ["export": "upper", "input": "shout", "output": "string"]) == "SHOUT")
        let batch = try await h.call(
            "batch",
            ["tasks": [["task": "text", "data": ["export": "json", "output": "json"]], ["task": "text", "data": ["export": "nope"]]]]
        ).get()
        #expect(batch["results"]?.arrayValue?.first?["result"] == ["ok": true, "n": [1, 2, 3]])
        #expect(batch["results"]?.arrayValue?.last?["error"]?["code"] == "INVALID_PAYLOAD")
        let size = try Data(contentsOf: URL(fileURLWithPath: "\(CCompiler.packageRoot)/Tests/Fixtures/Wasm/bytes.wasm")).count
        #expect(try await h.stats()["registeredBytes"] == .int(Int64(size)))
        #expect(try await h.call("tasks", [:]).get()["registered"] == ["text"])
        // A registered module's data names no module.
        #expect(await h.error("execute", ["task": "text", "data": ["module": "AA==", "export": "json"]])?.code == .invalidPayload)
        #expect(await h.error("register", ["name": "both", "fn": "return 1", "wasm": try Self.module("arith")])?.message.contains("not both") == true)
        #expect(await h.error("register", ["name": "wasm", "wasm": try Self.module("arith")])?.message.contains("built-in") == true)
        #expect(try await h.call("unregister", ["name": "text"]).get()["removed"] == true)
        #expect(await h.error("execute", ["task": "text", "data": ["export": "json"]])?.code == .invalidTask)
    }

    @Test func fuelRateIsMeasured() {
        #expect(WasmRunner.fuelPerMillisecond > 100)
        #expect(WasmRunner.budget(milliseconds: 10) > WasmRunner.budget(milliseconds: 1))
        #expect(WasmRunner.budget(milliseconds: 1e300) == UInt64(Int64.max))
    }

    /// What `export(args)` of `module` answers in JavaScriptCore (no fuel) and in WasmKit's
    /// interpreter (a fuel budget picks it).
    func bothEngines(_ module: String, _ export: String, _ args: [JSONValue]) async throws -> (jit: JSONValue, interpreter: JSONValue) {
        let jit = try await wasm(module, export, ["args": .array(args)]).get()
        let interpreter = try await wasm(module, export, ["args": .array(args), "fuel": .int(1 << 40)]).get()
        return (jit, interpreter)
    }

    @Test func theCompilerAndTheInterpreterAgreeOnControlFlow() async throws {
        func nested(_ n: Int64, _ limit: Int64) -> Int64 {
            var sum: Int64 = 0
            for i in 0..<n {
                for j in 0..<n {
                    sum += i * j
                    if sum > limit { return sum }
                }
            }
            return sum
        }
        var calls: Int32 = 0
        for n in (1...Int32(100_000)).reversed() { calls = calls &+ n }
        let cases: [(String, [JSONValue], JSONValue)] = [
            ("started", [], 7),
            ("nested", [50, 1_000_000_000], .int(nested(50, 1_000_000_000))),
            ("nested", [50, 5000], .int(nested(50, 5000))),
            ("table", [10], 30_403),
            ("carry", [3, 5], 96),
            ("power", [1000], 1024),
            ("power", [1], 2),
            ("fold", [0, 10], 56),
            ("fold", [1, 4], -9),
            ("fold", [2, 10], 3_628_800),
            ("fold", [3, 5], 120),
            ("fib", [20], 6765),
            ("calls", [100_000], .int(Int64(calls))),
        ]
        for (export, args, expected) in cases {
            let (jit, interpreter) = try await bothEngines("loops", export, args)
            #expect(jit == expected, "\(export)\(args): the compiler answered \(jit)")
            #expect(interpreter == expected, "\(export)\(args): the interpreter answered \(interpreter)")
        }
        let (jit, interpreter) = try await bothEngines("heavy", "heavy", [1_000_000])
        #expect(jit == interpreter)
    }

    @Test func byDefaultASmallCallEndsInTheInterpreterAndALongOneRunsCompiled() async throws {
        let tiered = ComputeHarness(ComputeConfiguration(workers: 1, memoryLimitMB: 16))
        func run(_ module: String, _ export: String, _ data: JSONObject, timeout: Double? = nil) async throws -> Result<JSONValue, CSOPError> {
            try await wasm(module, export, data, timeout: timeout, on: tiered)
        }
        #expect(try await run("arith", "add", ["args": [2, 3]]).get() == 5)
        #expect(try await run("bytes", "upper", ["input": "tiers", "output": "string"]).get() == "TIERS")
        #expect(try await run("heavy", "heavy", ["args": [3_000_000]]).get() == (try await wasm("heavy", "heavy", ["args": [3_000_000]]).get()))
        let trap = try #require(try await run("traps", "divzero", ["args": [0]]).error)
        #expect(trap.message.contains("trapped: integer divide by zero"), "\(trap.message)")
        let endless = try #require(try await run("traps", "spin", [:], timeout: 300).error)
        #expect(endless.code == .timeout, "\(endless)")
        #expect(endless.message.contains("timeout of 300 ms"), "\(endless.message)")
    }

    @Test func aCancelledCallStopsItsRunningLoop() async throws {
        let payload: JSONValue = ["task": "wasm", "data": ["module": try Self.module("traps"), "export": "spin"], "options": ["timeout": 600_000]]
        let spinner = h.start("execute", payload)
        // Cancelled once it runs: the pool's busy count says a worker took it.
        while try await h.stats()["busy"] == 0 { try await Task.sleep(for: .milliseconds(5)) }
        h.service.cancel(callID: spinner.id)
        let error = try #require(await spinner.outcome.value.error)
        #expect(error.code == .timeout, "\(error)")
        #expect(try await h.stats()["cancelled"] == 1)
        #expect(try await wasm("arith", "add", ["args": [2, 2]]).get() == 4)
    }

    @Test func theRewriterRefusesWhatCouldEscapeItsChecks() throws {
        // A shared memory (threads) and a module that is not one.
        let shared: [UInt8] = [0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00, 0x05, 0x04, 0x01, 0x03, 0x01, 0x01]
        #expect(throws: WasmInstrumenter.Failure.unsupported("shared memory (threads)")) {
            try WasmInstrumenter.instrument(shared, maxMemoryPages: 16, maxTableElements: 16)
        }
        #expect(throws: WasmInstrumenter.Failure.self) {
            try WasmInstrumenter.instrument([0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00, 0x0A, 0x05], maxMemoryPages: 16, maxTableElements: 16)
        }
        // Memories get a maximum no larger than the cap, and say when they start over it.
        let memory: [UInt8] = [0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00, 0x05, 0x03, 0x01, 0x00, 0x20]
        let capped = try WasmInstrumenter.instrument(memory, maxMemoryPages: 16, maxTableElements: 16)
        #expect(capped.initialPagesOverCap == 32)
        #expect(try WasmInstrumenter.instrument(memory, maxMemoryPages: 64, maxTableElements: 16).initialPagesOverCap == nil)
    }
}
