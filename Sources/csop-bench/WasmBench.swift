import CSOPCore
import CSOPHost
import Foundation

/// The compute suite's WebAssembly rows: one CPU-heavy loop in wasm (JavaScriptCore's compiler,
/// and WasmKit's interpreter, which a `fuel` budget picks) and in JavaScript against the same
/// loop in native Swift, and a byte function over 1 MiB in wasm against native.
struct WasmBench {
    /// `Tests/Fixtures/Wasm/heavy.wasm`: `heavy(n)` sums `(i * i) ^ (i >> 3)` over `i < n`, wrapping at 32 bits.
    static let heavyModule =
        "AGFzbQEAAAABBgFgAX8BfwMCAQAHCQEFaGVhdnkAAAouASwBAn8CQANAIAEgAE8NASACIAEgAWwgAUEDdnNqIQIgAUEBaiEBDAALCyACCw=="
    /// `Tests/Fixtures/Wasm/bytes.wasm`: `alloc`, and `fnv1a(pointer, length)` over its input.
    static let bytesModule =
        "AGFzbQEAAAABHgVgAX8Bf2ACf38Bf2ACf38Cf39gAn9/AX5gAAJ/fwMIBwABAQIDBAQFBQEBAYACBgcBfwFBgAgLB0QHBm1lbW9yeQIABWFsbG9jAAAFZm52MWEAAQV1cHBlcgADDHVwcGVyX3BhY2tlZAAEBGpzb24ABQliYWRfcmFuZ2UABgrzAQc5AQJ/IwAhASABIABqQQdqQXhxJAAjAEH//wNqQRB2IQIgAj8ASwRAIAI/AGtAAEF/RgRAAAsLIAELOwECf0HFu/KIeCECIAAgAWohAwJAA0AgACADTw0BIAIgAC0AAHNBk4OACGwhAiAAQQFqIQAMAAsLIAILTQEDfyABEAAhAgJAA0AgAyABTw0BIAAgA2otAAAhBCAEQeEATyAEQfoATXEEQCAEQSBrIQQLIAIgA2ogBDoAACADQQFqIQMMAAsLIAILCgAgACABEAIgAQsQACAAIAEQAq1CIIYgAa2ECwYAQRBBFwsKAEHo+wNBoI0GCwsdAQBBEAsXeyJvayI6dHJ1ZSwibiI6WzEsMiwzXX0="
    /// The JavaScript of `heavy`, for the same work on the JavaScriptCore pool.
    static let heavySource = "let acc = 0; for (let i = 0; i < data.n; i++) acc = (acc + (Math.imul(i, i) ^ (i >>> 3))) | 0; return acc"
    static let loopCount = 1_000_000

    /// `heavy` in Swift: the native baseline. `n` comes from outside so nothing folds it away.
    static func heavy(_ n: Int) -> Int32 {
        var acc: UInt32 = 0
        var i: UInt32 = 0
        while i < UInt32(n) {
            acc &+= (i &* i) ^ (i >> 3)
            i &+= 1
        }
        return Int32(bitPattern: acc)
    }

    static func fnv1a(_ bytes: [UInt8]) -> Int32 {
        var hash: UInt32 = 0x811c_9dc5
        for byte in bytes { hash = (hash ^ UInt32(byte)) &* 0x0100_0193 }
        return Int32(bitPattern: hash)
    }

    func rows(_ context: BenchContext, host: CSOPHost, suite: String) async throws -> [BenchRow] {
        let n = Self.loopCount
        let register = Request(id: "reg", action: "compute.register", payload: ["name": "bench-heavy", "wasm": .string(Self.heavyModule)])
        let registerBytes = Request(id: "reg2", action: "compute.register", payload: ["name": "bench-bytes", "wasm": .string(Self.bytesModule)])
        try Self.check(await host.dispatch(register), "register heavy.wasm")
        try Self.check(await host.dispatch(registerBytes), "register bytes.wasm")
        let wasmLoop = Request(id: "wasm", action: "compute.execute", payload: ["task": "bench-heavy", "data": ["export": "heavy", "args": [.int(Int64(n))]]])
        let interpretedLoop = Request(
            id: "wasmkit", action: "compute.execute",
            payload: ["task": "bench-heavy", "data": ["export": "heavy", "args": [.int(Int64(n))], "fuel": .int(1 << 40)]])
        let jsLoop = Request(
            id: "js", action: "compute.execute", payload: ["task": "custom", "data": ["fn": .string(Self.heavySource), "args": ["n": .int(Int64(n))]]])
        var random = SystemRandomNumberGenerator()
        let mebibyte = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &random) }
        let hashRequest = Request(
            id: "fnv", action: "compute.execute",
            payload: ["task": "bench-bytes", "data": ["export": "fnv1a", "inputBase64": .string(Data(mebibyte).base64EncodedString())]])

        // All three must compute the same thing, or the comparison means nothing.
        let expected = JSONValue.int(Int64(Self.heavy(n)))
        for (request, what) in [(wasmLoop, "wasm loop"), (interpretedLoop, "interpreted wasm loop"), (jsLoop, "JavaScript loop")] {
            let answer = await host.dispatch(request)
            try Self.check(answer, what)
            guard answer.data?["result"] == expected else {
                throw BenchError(message: "compute bench: the \(what) answered \(String(describing: answer.data)), native Swift \(expected)")
            }
        }
        let hashed = await host.dispatch(hashRequest)
        guard hashed.data?["result"] == .int(Int64(Self.fnv1a(mebibyte))) else {
            throw BenchError(message: "compute bench: wasm fnv1a answered \(String(describing: hashed.data)), native Swift \(Self.fnv1a(mebibyte))")
        }

        let iterations = context.quick ? 5 : 40
        let wasm = try await context.measure(iterations: iterations, warmup: 3) { try Self.check(await host.dispatch(wasmLoop), "wasm loop") }
        let interpreted = try await context.measure(iterations: context.quick ? 3 : 10, warmup: 1) {
            try Self.check(await host.dispatch(interpretedLoop), "interpreted wasm loop")
        }
        let js = try await context.measure(iterations: iterations, warmup: 3) { try Self.check(await host.dispatch(jsLoop), "JavaScript loop") }
        var sink: Int32 = 0
        let native = context.measure(iterations: iterations, warmup: 3) { sink ^= Self.heavy(n + Int(sink & 1)) }
        let hash = try await context.measure(iterations: iterations, warmup: 3) { try Self.check(await host.dispatch(hashRequest), "wasm fnv1a") }
        let nativeHash = context.measure(iterations: iterations, warmup: 3) { sink ^= Self.fnv1a(mebibyte) }
        if sink == 42 { print("", terminator: "") }  // keeps the native loops' results alive

        let compiled =
            "JavaScriptCore's compiler, the module rewritten to check its time every 8,192 iterations (see README)"
        return [
            BenchRow(
                suite: suite, name: "wasm CPU-heavy loop (\(n / 1_000_000)M iterations)", stats: wasm,
                baseline: "the same loop in native Swift, in-process", baselineStats: native, targets: [.maxRatio(2)], note: compiled),
            BenchRow(
                suite: suite, name: "wasm CPU-heavy loop in WasmKit's interpreter (fuel given)", stats: interpreted,
                baseline: "the same loop in native Swift, in-process", baselineStats: native),
            BenchRow(
                suite: suite, name: "JavaScript CPU-heavy loop (same loop)", stats: js,
                baseline: "the same loop in native Swift, in-process", baselineStats: native),
            BenchRow(
                suite: suite, name: "wasm fnv1a over 1 MiB (input as base64)", stats: hash,
                baseline: "native Swift fnv1a over the same 1 MiB", baselineStats: nativeHash, targets: [.maxRatio(2)],
                note: "includes the request's 1.4 MB of JSON and base64, and the copy into the module's memory"),
        ]
    }

    private static func check(_ response: Response, _ what: String) throws {
        if let error = response.error { throw BenchError(message: "compute bench: \(what) failed: \(error)") }
    }
}
