import CSOPCore
import Testing

@testable import ComputePlugin

@Suite struct SandboxTests {
    @Test func hostFacilitiesAreAbsent() async throws {
        let h = ComputeHarness()
        let names = [
            "require", "fetch", "process", "XMLHttpRequest", "WebSocket", "setTimeout", "setInterval", "setImmediate",
            "clearTimeout", "queueMicrotask", "importScripts", "print", "$vm", "$", "gc", "load", "readFile", "read",
            "quit", "module", "exports", "global", "Deno", "Bun", "WebAssembly", "SharedArrayBuffer", "Atomics",
            "Worker", "navigator", "document", "window", "self", "Buffer", "os",
        ]
        let fn = "return data.map(n => [n, typeof globalThis[n]]).filter(p => p[1] !== 'undefined')"
        let present = try await h.custom(fn, args: .array(names.map { .string($0) })).get()["result"]
        #expect(present == [])
        let typeofRequire = try await h.custom("return typeof require").get()["result"]
        #expect(typeofRequire == "undefined")
    }

    @Test func dynamicImportCannotLoadAnything() async throws {
        let h = ComputeHarness()
        // Promise reactions run when the script's VM entry ends, so the outcome shows up in the logs.
        let value = try await h.custom(
            "import('/etc/passwd').then(m => console.log('loaded'), e => console.log('rejected'));"
                + "import('fs').then(m => console.log('loaded'), e => console.log('rejected')); return 1"
        ).get()
        #expect(value["logs"] == ["rejected", "rejected"])
    }

    @Test func evalAndFunctionStayInsideTheSandbox() async throws {
        let h = ComputeHarness()
        let value = try await h.custom("return [eval('1 + 1'), Function('return typeof require')(), typeof this]").get()
        #expect(value["result"] == [2, "undefined", "undefined"] || value["result"] == [2, "undefined", "object"])
    }

    /// One worker, so every task runs in the same context as the one that tried to leak.
    @Test(arguments: [
        "leaked = 1", "globalThis.leaked = 1", "Object.defineProperty(globalThis, 'leaked', {value: 1})",
        "globalThis[Symbol.for('leaked')] = 1; globalThis.leaked = 1", "(0, eval)('var leaked = 1')",
        "Reflect.defineProperty(globalThis, 'leaked', {value: 1})",
        "Object.defineProperties(globalThis, {leaked: {value: 1}})",
        "Object.prototype.__defineGetter__.call(globalThis, 'leaked', () => 1)",
        "Object.defineProperty(globalThis, Symbol.for('leaked'), {value: 1}); var leaked = 1",
        "globalThis[Symbol.for('leaked')] = 1; var leaked = 1",
        "(0, eval)('function leaked() {}'); leaked = 1",
        "Object.assign(globalThis, {leaked: 1})",
    ])
    func globalsDoNotLeakToTheNextTask(_ polluter: String) async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        _ = try await h.custom(polluter + "; return leaked").get()
        let check = try await h.custom("return [typeof leaked, typeof globalThis[Symbol.for('leaked')]]").get()
        #expect(check["result"] == ["undefined", "undefined"])
        #expect(try await h.stats()["recycled"] == 1)
    }

    @Test(arguments: [
        "Array.prototype.evil = 1", "Object.prototype.evil = 1", "Math.random = () => 4", "JSON.stringify = () => 'x'",
        "String.prototype.trim = null", "delete Math.max", "Array.prototype.push = null", "console.log = null",
        "Object.getPrototypeOf(function* () {}).evil = 1", "Object.setPrototypeOf(Array.prototype, null)",
        "Math = null", "delete globalThis.JSON", "Object.getPrototypeOf([].values().map(x => x)).evil = 1",
        "Object.getPrototypeOf(new Intl.Segmenter().segment('a')).evil = 1",
    ])
    func intrinsicsCannotBeChanged(_ mutation: String) async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        _ = await h.custom(mutation)  // Throws in strict code, silently ignored in sloppy code.
        let check = try await h.custom(
            """
            return [[].evil, ({}).evil, Math.random() < 1, JSON.stringify([1]), ' a '.trim(), Math.max(1, 2),
                    (() => { const a = []; a.push(1); return a.length })(), typeof console.log,
                    (function* () {}).evil, Array.isArray(Object.getPrototypeOf([])), typeof JSON,
                    [].values().map(x => x).evil, new Intl.Segmenter().segment('a').evil]
            """
        ).get()
        #expect(check["result"] == [nil, nil, true, "[1]", "a", 2, 1, "function", nil, true, "object", nil, nil])
    }

    /// Each worker's compiled functions are bounded by their source's size, not only by count.
    @Test func compiledFunctionCacheIsBoundedInBytes() throws {
        let watch = ExecutionWatch(memoryLimitBytes: 512 << 20)
        let sandbox = try JSSandbox(watch: watch, maxConsoleChars: 0, cacheCapacity: 256, cacheByteCapacity: 10_000)
        for i in 0..<50 {
            // About 2020 bytes in UTF-16: four fit in 10000.
            _ = try sandbox.compile("return \(i + 10) // " + String(repeating: "x", count: 1000)).get()
            #expect(sandbox.cachedSourceBytes <= 10_000)
        }
        #expect(sandbox.cachedFunctionCount == 4)
        // A function larger than the whole budget is still kept, alone.
        _ = try sandbox.compile("return 1 // " + String(repeating: "y", count: 20_000)).get()
        #expect(sandbox.cachedFunctionCount == 1)
    }

    @Test func ordinaryObjectPatternsStillWork() async throws {
        let h = ComputeHarness()
        let value = try await h.custom(
            """
            function F() {}
            F.prototype.toString = function () { return 'F!' };
            const o = Object.create(Object.prototype); o.constructor = F; o.valueOf = () => 5;
            const e = new Error('m'); e.name = 'Custom'; e.message = 'changed';
            class K { toString() { return 'K' } }
            return [String(new F()), o.constructor === F, o + 1, String(e), String(new K()), [3, 1, 2].sort().join()]
            """
        ).get()
        #expect(value["result"] == ["F!", true, 6, "Custom: changed", "K", "1,2,3"])
    }
}
