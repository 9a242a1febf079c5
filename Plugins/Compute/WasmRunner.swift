import CSOPCore
import Foundation
@_spi(Fuzzing) import WasmKit  // Store.resourceLimiter: the only way to cap a memory's growth

/// Runs wasm calls for one worker thread, in WasmKit's interpreter with fuel metering.
///
/// Each call gets a store and an instance of its own, so nothing carries over from one call to
/// the next. WasmKit cannot be interrupted from another thread, so the task's timeout becomes a
/// fuel budget: the fuel this machine burns in that time, measured once per process
/// (``fuelPerMillisecond``). A call past it stops with an out-of-fuel trap, answered as
/// `TIMEOUT`. Thread-confined: one per worker.
final class WasmRunner {
    private let engine = Engine(configuration: EngineConfiguration(fuelMetering: true))

    /// Fuel this machine's interpreter burns per millisecond: the best of three runs of a
    /// small loop (`Tests/Fixtures/Wasm/heavy.wat`), taken once per process on first use.
    /// The best, so that a budget errs on the side of running a little past the timeout
    /// rather than stopping work that would have fit.
    static let fuelPerMillisecond: Double = {
        let runner = WasmRunner()
        guard let module = try? parseWasm(bytes: calibrationModule) else { return 1e6 }
        var best = 0.0
        for _ in 0..<3 {
            let store = Store(engine: runner.engine)
            guard let heavy = try? module.instantiate(store: store).exports[function: "heavy"] else { return 1e6 }
            let budget: UInt64 = 1 << 40
            store.fuel = Fuel(remaining: budget)
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try? heavy.invoke([.i32(200_000)])
            let nanoseconds = Double(DispatchTime.now().uptimeNanoseconds - start)
            let burnt = Double(budget - (store.fuel?.remaining ?? budget))
            if nanoseconds > 0 { best = max(best, burnt / nanoseconds * 1e6) }
        }
        return best > 0 ? best : 1e6
    }()

    /// The fuel `milliseconds` buy at ``fuelPerMillisecond``.
    static func budget(milliseconds: Double) -> UInt64 {
        let fuel = milliseconds * fuelPerMillisecond
        return fuel >= 0x1p63 ? UInt64(Int64.max) : UInt64(max(fuel, 1))
    }

    /// Runs `call`, its module and input `resolved` (``WasmCall/resolve()``), with at most
    /// `budget` fuel, each memory capped at `memoryLimitBytes`.
    /// - Returns: the answer's result; an output of more than `maxResultBytes` is `tooLarge`.
    func run(_ call: WasmCall, _ resolved: WasmCall.Resolved, budget: UInt64, memoryLimitBytes: Int, maxResultBytes: Int) -> Result<JSONValue, WasmFailure> {
        let store = Store(engine: engine)
        let cap = WasmMemoryCap(maxBytes: memoryLimitBytes)
        store.resourceLimiter = cap
        store.fuel = Fuel(remaining: budget)
        do {
            let instance: Instance
            do {
                instance = try resolved.module.module.instantiate(store: store)
            } catch {
                if let refused = cap.refusedBytes { return .failure(.initialMemory(refused)) }
                throw error
            }
            guard let function = instance.exports[function: call.export] else {
                return .failure(.invalid(.invalidPayload("\(call.path).export: the module exports no function \"\(call.export)\"")))
            }
            var arguments = try call.arguments(for: function.type)
            if let input = resolved.input {
                let pointer = try copyIn(input, instance: instance)
                arguments.insert(contentsOf: [.i32(pointer), .i32(UInt32(input.count))], at: 0)
            }
            let results = try function.invoke(arguments)
            guard let output = call.output else { return .success(Self.answer(results)) }
            let memory = instance.exports[memory: "memory"]
            return Self.readOutput(results, as: output, memoryByteCount: memory?.byteCount, maxResultBytes: maxResultBytes) { offset, count in
                memory!.withUnsafeBufferPointer(offset: UInt(offset), count: count) { Array($0) }
            }
        } catch let error as CSOPError {
            return .failure(.invalid(error))
        } catch let trap as Trap {
            let reason = WasmModule.reason(trap)
            if reason == "out of fuel" { return .failure(.outOfFuel(budget: budget)) }
            return .failure(.trap(reason, refusedMemory: cap.refusedBytes))
        } catch {
            // WasmKit translates a function at its first call: a body that does not validate fails here.
            return .failure(.invalid(.invalidPayload("\(call.path): the module is not valid WebAssembly: \(WasmModule.reason(error))")))
        }
    }

    /// Copies `input` to what the module's `alloc` hands out.
    private func copyIn(_ input: [UInt8], instance: Instance) throws -> UInt32 {
        guard let alloc = instance.exports[function: "alloc"], alloc.type == WasmCall.allocType,
            let memory = instance.exports[memory: "memory"]
        else {
            throw WasmCall.badAlloc
        }
        guard case .i32(let pointer)? = try alloc.invoke([.i32(UInt32(input.count))]).first else {
            throw CSOPError.executionFailed("alloc returned no pointer")
        }
        guard Int(pointer) + input.count <= memory.byteCount else {
            throw CSOPError.executionFailed(
                "alloc(\(input.count)) returned \(pointer), but the input does not fit in the module's memory of \(memory.byteCount) bytes there")
        }
        if !input.isEmpty {
            memory.withUnsafeMutableBufferPointer(offset: UInt(pointer), count: input.count) { $0.copyBytes(from: input) }
        }
        return pointer
    }

    /// The answer of a call without `output`: one result as itself, none as null, several as an array.
    static func answer(_ results: [Value]) -> JSONValue {
        results.count == 1 ? WasmCall.json(results[0]) : results.isEmpty ? .null : .array(results.map(WasmCall.json))
    }

    /// The output `results` point at, `(pointer, length)` or one packed i64, read from a memory
    /// of `memoryByteCount` bytes (nil: the module exports none) by `read(offset, count)`.
    static func readOutput(
        _ results: [Value], as output: WasmCall.Output, memoryByteCount: Int?, maxResultBytes: Int, read: (Int, Int) -> [UInt8]
    ) -> Result<JSONValue, WasmFailure> {
        let pointer: UInt32
        let length: UInt32
        switch (results.first, results.dropFirst().first) {
        case (.i32(let p)?, .i32(let l)?):
            (pointer, length) = (p, l)
        case (.i64(let packed)?, nil):
            (pointer, length) = (UInt32(truncatingIfNeeded: packed >> 32), UInt32(truncatingIfNeeded: packed))
        default:
            return .failure(.badOutput("it returned \(results.count) values, not (pointer, length)"))
        }
        guard let byteCount = memoryByteCount else { return .failure(.badOutput("it exports no memory")) }
        guard UInt64(pointer) + UInt64(length) <= UInt64(byteCount) else {
            return .failure(.badOutput("its output [\(pointer), \(UInt64(pointer) + UInt64(length))) lies outside its memory of \(byteCount) bytes"))
        }
        // base64 grows by a third, a string by its escapes; JSON is checked after parsing.
        guard Int(length) <= maxResultBytes else { return .failure(.tooLarge) }
        let bytes = length == 0 ? [] : read(Int(pointer), Int(length))
        switch output {
        case .base64:
            guard (Int(length) + 2) / 3 * 4 <= maxResultBytes else { return .failure(.tooLarge) }
            return .success(.string(Data(bytes).base64EncodedString()))
        case .string:
            guard let text = String(validating: bytes, as: UTF8.self) else {
                return .failure(.badOutput("its output is not UTF-8; ask for output \"base64\" for bytes"))
            }
            return .success(.string(text))
        case .json:
            do {
                return .success(try JSONValue(parsing: bytes))
            } catch {
                return .failure(.badOutput("its output is not JSON: \(error)"))
            }
        }
    }

    /// `Tests/Fixtures/Wasm/heavy.wasm`, which ``fuelPerMillisecond`` runs.
    private static let calibrationModule: [UInt8] = [
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x03, 0x02, 0x01, 0x00,
        0x07, 0x09, 0x01, 0x05, 0x68, 0x65, 0x61, 0x76, 0x79, 0x00, 0x00, 0x0a, 0x2e, 0x01, 0x2c, 0x01, 0x02, 0x7f, 0x02, 0x40,
        0x03, 0x40, 0x20, 0x01, 0x20, 0x00, 0x4f, 0x0d, 0x01, 0x20, 0x02, 0x20, 0x01, 0x20, 0x01, 0x6c, 0x20, 0x01, 0x41, 0x03,
        0x76, 0x73, 0x6a, 0x21, 0x02, 0x20, 0x01, 0x41, 0x01, 0x6a, 0x21, 0x01, 0x0c, 0x00, 0x0b, 0x0b, 0x20, 0x02, 0x0b,
    ]
}
