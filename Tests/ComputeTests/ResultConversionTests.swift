import CSOPCore
import Testing

@testable import ComputePlugin

/// Converting a task's result to JSON is part of the task: it runs under the task's timeout,
/// cancellation and memory cap, and its text is bounded by `maxResultBytes` and by how deep
/// an answer may nest.
@Suite struct ResultConversionTests {
    /// Getters that each spin for 1 ms: every one is short, but 3000 of them take 3 s.
    static let slowGetters = "const o = {get x() { const end = Date.now() + 1; while (Date.now() < end) {} return 1 }}; return new Array(3000).fill(o)"

    /// The sandbox writes results itself (to count bytes as it goes); what it writes must be
    /// what JSON.stringify writes.
    @Test func conversionMatchesJSONStringify() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let fixtures = [
            "{a: 1, b: 'two', c: [1, 2, {d: null}], e: {f: {g: true}}}",
            "[1, , 3, undefined, function () {}, Symbol('s'), null]",
            "({u: undefined, f() {}, s: Symbol('s'), n: null, z: -0, big: 1e21, small: 5e-7, frac: 0.1})",
            "({2: 'two', b: 'b', 1: 'one', a: 'a', [Symbol('hidden')]: 1})",
            "JSON.parse('{\"__proto__\": {\"x\": 1}, \"y\": 2}')",
            "({date: new Date(0), bad: new Date(NaN), num: new Number(3), str: new String('s'), bool: new Boolean(false)})",
            "({toJSON(key) { return {key, nested: {toJSON(k) { return 'inner ' + k }}} }})",
            "[{toJSON(k) { return 'at ' + k }}, {toJSON(k) { return 'at ' + k }}]",
            "({text: 'quote \" backslash \\\\ newline \\n tab \\t nul \\u0000 é 😀 pair \\ud83d\\ude00 end'})",
            "(() => { class P { constructor() { this.x = 1; this.y = [2] } get z() { return 3 } }; return new P() })()",
            "({map: new Map([[1, 2]]), set: new Set([1]), bytes: new Uint8Array([1, 2, 3]), error: new Error('e'), re: /x/g})",
            "({get computed() { return [1, 2, 3] }, plain: 'p'})",
            "new Proxy({a: 1, b: [2]}, {})",
            "new Proxy([1, 2, 3], {get(t, k) { return k === 'length' ? 2 : t[k] }})",
            "Object.create({inherited: 1}, {own: {value: 2, enumerable: true}, hidden: {value: 3, enumerable: false}})",
            "[[[[[]]]], {}, [{}], '']",
        ]
        for fixture in fixtures {
            // Index 0 in both, so toJSON gets the same key.
            let value = try await h.custom("const v = (\(fixture)); return [v, JSON.stringify([v])]").get()
            let pair = try #require(value["result"]?.arrayValue, "\(fixture)")
            let written = try #require(pair.last?.stringValue, "\(fixture)")
            #expect(pair.first == (try JSONValue(parsing: written)).arrayValue?.first, "\(fixture): \(written)")
        }
    }

    /// JSON.stringify writes a lone surrogate as `\ud800`, which no Unicode JSON reader takes
    /// (the host's parser refuses it): that is the task's error, not a PLUGIN_FAULT.
    @Test func loneSurrogatesAreTheTasksError() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        for fn in ["return 'a\\ud800'", "return {k: ['\\udfff x']}", "return {['\\udbff']: 1}", "return 'x'.repeat(10) + '\\ud83d'"] {
            let error = try #require(await h.custom(fn).error, "\(fn)")
            #expect(error.code == .executionFailed, "\(fn): \(error)")
            #expect(error.message.contains("lone UTF-16 surrogate"), "\(fn): \(error.message)")
        }
        // An escaped backslash before "ud800" is text, not an escape.
        #expect(try await h.custom("return '\\\\ud800'").get()["result"] == "\\ud800")
        #expect(try await h.custom("return '\\ud83d\\ude00'").get()["result"] == "😀")
    }

    @Test func conversionRunsUnderTheTaskTimeout() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let error = try #require(await h.custom(Self.slowGetters, timeout: 100).error)
        #expect(error.code == .timeout)
        #expect(error.retryable)
        #expect(try await h.custom("return 'alive'").get()["result"] == "alive")
        let stats = try await h.stats()
        #expect(stats["timedOut"] == 1)
        #expect(stats["busy"] == 0)
    }

    @Test func conversionStopsWhenTheCallIsCancelled() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let fn = Self.slowGetters.replacingOccurrences(of: "3000", with: "20000")
        let call = h.start("execute", ["task": "custom", "data": ["fn": .string(fn)], "options": ["timeout": 600_000]])
        try await WorkerPoolTests.waitFor(h) { $0["busy"] == 1 }
        // The function returns at once; give the conversion time to be under way.
        try await Task.sleep(for: .milliseconds(300))
        h.service.cancel(callID: call.id)
        #expect(await call.outcome.value.error?.code == .timeout)
        #expect(try await h.stats()["cancelled"] == 1)
        #expect(try await h.custom("return 'alive'").get()["result"] == "alive")
    }

    @Test func conversionRunsUnderTheMemoryCap() async throws {
        // Each toJSON keeps 100 kB alive: up to 2 GB over the whole array, all of it while
        // converting. Only the cap stops it early.
        let h = ComputeHarness(ComputeConfiguration(workers: 1, memoryLimitMB: 16))
        let fn = "const keep = []; return new Array(20000).fill({toJSON() { keep.push(new Array(12500).fill(1)); return keep.length }})"
        let error = try #require(await h.custom(fn, timeout: 60_000).error)
        #expect(error.code == .resourceExhausted)
        #expect(error.message.contains("16 MiB"), "\(error.message)")
        #expect(try await h.stats()["memoryStops"] == 1)
        #expect(try await h.custom("return 'alive'").get()["result"] == "alive")
    }

    @Test func resultsLargerThanTheLimitAreResourceExhausted() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1, maxResultBytes: 1 << 20))
        let large = [
            // A million getters: 8 MB of JSON.
            "return new Array(1e6).fill({get x() { return 1 }})",
            // 24 levels of shared halves: 16 million leaves, ~64 MB of JSON from 24 small arrays.
            "let x = [1]; for (let i = 0; i < 24; i++) x = [x, x]; return x",
            // The same string a million times: 100 MB of JSON from one 100-character string.
            "return new Array(1e6).fill('y'.repeat(100))",
            // An array that claims a billion elements.
            "const a = []; a.length = 1e9; return a",
            "return {text: 'z'.repeat(2 << 20)}",
            "return 'z'.repeat(2 << 20)",
        ]
        for fn in large {
            let error = try #require(await h.custom(fn, timeout: 120_000).error, "\(fn)")
            #expect(error.code == .resourceExhausted, "\(fn)")
            #expect(error.message.contains("larger than 1048576 bytes"), "\(fn): \(error.message)")
            #expect(error.message.contains("maxResultBytes"), "\(fn): \(error.message)")
            #expect(!error.retryable)
        }
        #expect(try await h.custom("return 'alive'").get()["result"] == "alive")
    }

    @Test func defaultResultLimitIs16MiB() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let error = try #require(await h.custom("return 'z'.repeat(16 << 20)").error)
        #expect(error.code == .resourceExhausted)
        #expect(error.message.contains("larger than 16777216 bytes"), "\(error.message)")
    }

    @Test func resultLimitCountsUTF8BytesExactly() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1, maxResultBytes: 1000))
        // "…" with quotes: 998 + 2 bytes fit, one more does not.
        #expect(try await h.custom("return 'x'.repeat(998)").get()["result"]?.stringValue?.count == 998)
        #expect(await h.custom("return 'x'.repeat(999)").error?.code == .resourceExhausted)
        // é is one UTF-16 unit but two UTF-8 bytes.
        #expect(try await h.custom("return 'é'.repeat(499)").get()["result"]?.stringValue?.count == 499)
        #expect(await h.custom("return 'é'.repeat(500)").error?.code == .resourceExhausted)
        // {"k":"…"}: 8 bytes around the value.
        #expect(try await h.custom("return {k: 'x'.repeat(992)}").get()["result"]?["k"]?.stringValue?.count == 992)
        #expect(await h.custom("return {k: 'x'.repeat(993)}").error?.code == .resourceExhausted)
        // [1,1,…]: 2 bytes per element, 1 for the brackets.
        #expect(try await h.custom("return new Array(499).fill(1)").get()["result"]?.arrayValue?.count == 499)
        #expect(await h.custom("return new Array(500).fill(1)").error?.code == .resourceExhausted)
    }

    /// Issue 10: a proxy claiming a billion elements kept its worker busy forever.
    @Test func hugeProxyResultsAreAnsweredAndFreeTheirWorkers() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 2))
        let fn = "return new Proxy([], {get(t, k) { if (k === 'length') return 1e9; return 1 }})"
        let calls = (0..<2).map { _ in h.start("execute", ["task": "custom", "data": ["fn": .string(fn)], "options": ["timeout": 3000]]) }
        for call in calls {
            let code = await call.outcome.value.error?.code
            #expect(code == .resourceExhausted || code == .timeout, "\(String(describing: code))")
        }
        try await WorkerPoolTests.waitFor(h) { $0["busy"] == 0 }
        let batch = try await h.call("batch", ["tasks": [["task": "custom", "data": ["fn": "return 1"]], ["task": "custom", "data": ["fn": "return 2"]]]]).get()
        #expect(batch["completed"] == 2)
    }

    @Test func batchResultsTogetherAreLimited() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 2, maxResultBytes: 1000))
        // Each result is 302 bytes: three fit in 1000, the other two are dropped.
        let task: JSONValue = ["task": "custom", "data": ["fn": "return 'x'.repeat(300)"]]
        let value = try await h.call("batch", ["tasks": .array(Array(repeating: task, count: 5))]).get()
        #expect(value["completed"] == 3)
        #expect(value["failed"] == 2)
        let errors = value["results"]?.arrayValue?.compactMap { $0["error"] } ?? []
        #expect(errors.count == 2)
        #expect(errors.allSatisfy { $0["code"] == "RESOURCE_EXHAUSTED" && $0["message"]?.stringValue?.contains("maxResultBytes") == true })
    }

    @Test func resultsNestedTooDeepAreExecutionFailed() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let deep = "let x = null; for (let i = 0; i < data; i++) x = i % 2 ? [x] : {x}; return x"
        let error = try #require(await h.custom(deep, args: 600).error)
        #expect(error.code == .executionFailed)
        #expect(error.message.contains("deeper than 500 levels"), "\(error.message)")
        #expect(await h.custom(deep, args: 501).error?.code == .executionFailed)
        // Strings that look like brackets do not count.
        let value = await h.custom(deep + ".x", args: 501)
        #expect(value.error == nil)
        #expect(try await h.custom("return '['.repeat(1000) + '\\\"{'.repeat(1000)").get()["result"]?.stringValue?.count == 3000)
    }

    @Test func nonFiniteNumbersAreExecutionFailed() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        for fn in ["return NaN", "return -Infinity", "return {a: 1, b: 1 / 0}", "return [1, 2, 0 / 0]", "return {toJSON() { return NaN }}"] {
            let error = try #require(await h.custom(fn).error, "\(fn)")
            #expect(error.code == .executionFailed, "\(fn)")
            #expect(error.message.contains("NaN or Infinity"), "\(fn): \(error.message)")
        }
        #expect(await h.custom("return {a: 1, b: 1 / 0}").error?.message.contains("at key \"b\"") == true)
    }
}
