import CSOPCore
import Testing

@testable import ComputePlugin

@Suite struct CustomScriptTests {
    let h = ComputeHarness()

    @Test func runsTheBodyWithArgsAsData() async throws {
        let value = try await h.custom("return data.a + data.b", args: ["a": 2, "b": 40]).get()
        #expect(value == ["result": 42])
        let shaped = try await h.custom("return {sum: data.reduce((s, x) => s + x, 0), text: 'ok', list: [null, true]}", args: [1, 2, 3]).get()
        #expect(shaped["result"] == ["sum": 6, "text": "ok", "list": [nil, true]])
    }

    @Test func missingArgsAndMissingReturn() async throws {
        #expect(try await h.call("execute", ["task": "custom", "data": ["fn": "return typeof data"]]).get()["result"] == "undefined")
        #expect(try await h.custom("let x = 1").get()["result"] == .null)
    }

    @Test func unicodeAndNulCharactersSurvive() async throws {
        let value = try await h.custom("return data + '\\u0000' + '✓'", args: "héllo").get()
        #expect(value["result"] == .string("héllo\u{0}✓"))
    }

    @Test func thrownErrorsReportMessageAndLine() async throws {
        let error = try #require(await h.custom("let x = 1;\n\nthrow new TypeError('bad input ' + x)").error)
        #expect(error.code == .executionFailed)
        #expect(error.message.contains("TypeError: bad input 1"))
        #expect(error.message.contains("(line 3)"))
        #expect(!error.retryable)
        let thrownString = try #require(await h.custom("throw 'plain'").error)
        #expect(thrownString.code == .executionFailed)
        #expect(thrownString.message.contains("plain"))
        let reference = try #require(await h.custom("return notDefined + 1").error)
        #expect(reference.message.contains("ReferenceError"))
        #expect(reference.message.contains("(line 1)"))
    }

    @Test func syntaxErrorsAreInvalidPayloadWithLine() async throws {
        let error = try #require(await h.custom("let a = 1;\nreturn a +;").error)
        #expect(error.code == .invalidPayload)
        #expect(error.message.contains("SyntaxError"))
        #expect(error.message.contains("(line 2)"))
        let unbalanced = try #require(await h.custom("}); (function () {").error)
        #expect(unbalanced.code == .invalidPayload)
    }

    @Test(arguments: [
        "return function () {}", "return Symbol('s')", "let a = {}; a.self = a; return a", "return 10n",
        "return {toJSON() { throw new Error('no json') }}",
    ])
    func nonSerializableResultsFailClearly(_ fn: String) async throws {
        let error = try #require(await h.custom(fn).error)
        #expect(error.code == .executionFailed)
        #expect(error.message.contains("not JSON-serializable"), "\(error.message)")
    }

    /// A returned Promise answers with the value it settles to: its reactions, and every
    /// `await` before it, run inside the task (under its timeout).
    @Test func aReturnedPromiseAnswersWithItsValue() async throws {
        #expect(try await h.custom("return Promise.resolve(1)").get()["result"] == 1)
        let awaited = try await h.custom(
            "return (async () => { const x = await Promise.resolve(data); const y = await (x * 3); return {x, y} })()", args: 2
        ).get()
        #expect(awaited["result"] == ["x": 2, "y": 6])
        let chained = try await h.custom("return Promise.resolve(data).then(x => x + 1).then(x => [x, 'done'])", args: 1).get()
        #expect(chained["result"] == [2, "done"])
        let logged = try await h.custom("return (async () => { await null; console.log('after await'); return 'v' })()").get()
        #expect(logged == ["result": "v", "logs": ["after await"]])
        // A fulfilled value that has no JSON form is refused as a plain one is.
        let function = try #require(await h.custom("return Promise.resolve(() => 1)").error)
        #expect(function.code == .executionFailed)
        #expect(function.message.contains("not JSON-serializable"), "\(function.message)")
    }

    /// A body that uses `await` runs as an async function's (a plain body stays plain).
    @Test func aBodyMayAwait() async throws {
        let value = try await h.custom("const x = await Promise.resolve(data.a);\nreturn x + await data.b", args: ["a": 40, "b": 2]).get()
        #expect(value["result"] == 42)
        let error = try #require(await h.custom("await null;\n\nthrow new TypeError('late ' + data)", args: 1).error)
        #expect(error.code == .executionFailed)
        #expect(error.message.contains("was rejected: TypeError: late 1 (line 3)"), "\(error.message)")
        let never = try #require(await h.custom("await new Promise(() => {}); return 1").error)
        #expect(never.message.contains("never settled"), "\(never.message)")
        // In a plain body `await` is an identifier still.
        #expect(try await h.custom("var await = 5; return await").get()["result"] == 5)
        // Neither body compiles: the plain compile's error and line.
        let syntax = try #require(await h.custom("return 1;\nawait +;").error)
        #expect(syntax.code == .invalidPayload)
        #expect(syntax.message.contains("SyntaxError"), "\(syntax.message)")
    }

    /// An async body is checked alone as well: text that would close the wrapper and run
    /// outside the task's function never compiles.
    @Test(arguments: [
        "await 1; }); (async function () {", "await 1; }; globalThis.escaped = 1; (async function () {",
        "await 1 }) + (async function () {", "await 1; } /*", "await 1; }\n//",
    ])
    func anAsyncBodyCannotBreakOutOfItsFunction(_ fn: String) async throws {
        let error = try #require(await h.custom(fn).error, "\(fn)")
        #expect(error.code == .invalidPayload, "\(fn): \(error.message)")
        #expect(try await h.custom("return typeof globalThis.escaped").get()["result"] == "undefined")
    }

    @Test func aRejectedPromiseIsExecutionFailedWithItsReason() async throws {
        let error = try #require(await h.custom("return (async () => {\n  await null;\n  throw new RangeError('too far') })()").error)
        #expect(error.code == .executionFailed)
        #expect(!error.retryable)
        #expect(error.message.contains("was rejected: RangeError: too far (line 3)"), "\(error.message)")
        let plain = try #require(await h.custom("return Promise.reject('nope')").error)
        #expect(plain.message.contains("was rejected: nope"), "\(plain.message)")
        // JavaScriptCore's own out-of-memory error is the memory cap's code, thrown or rejected.
        let memory = try #require(await h.custom("await null; return 'x'.repeat(2 ** 31)").error)
        #expect(memory.code == .resourceExhausted, "\(memory.message)")
        #expect(memory.message.contains("ran out of memory: RangeError: Out of memory"), "\(memory.message)")
    }

    /// A task has no timers or I/O: a Promise nobody settles never will, and the answer says so
    /// at once instead of waiting for the timeout.
    @Test func aPromiseThatNeverSettlesIsAClearError() async throws {
        for fn in ["return new Promise(() => {})", "return (async () => { await new Promise(() => {}); return 1 })()"] {
            let error = try #require(await h.custom(fn, timeout: 60_000).error, "\(fn)")
            #expect(error.code == .executionFailed, "\(fn)")
            #expect(error.message.contains("never settled"), "\(error.message)")
        }
        let error = try #require(await h.custom("return (async () => { for (;;) await null })()", timeout: 100).error)
        #expect(error.code == .timeout, "\(error.message)")
        #expect(try await h.custom("return 'alive'").get()["result"] == "alive")
    }

    @Test func deepRecursionIsAnErrorNotACrash() async throws {
        let error = try #require(await h.custom("const f = (n) => f(n + 1) + 1; return f(0)").error)
        #expect(error.code == .executionFailed)
        #expect(error.message.contains("RangeError"))
        #expect(try await h.custom("return 7").get()["result"] == 7)
    }

    @Test func consoleOutputIsCapturedWithTheResult() async throws {
        let value = try await h.custom(
            "console.log('a', 1, {b: [2]}); console.info('i'); console.warn('w'); console.error('e'); console.debug(null); return 0"
        ).get()
        #expect(value["logs"] == ["a 1 {\"b\":[2]}", "i", "[warn] w", "[error] e", "null"])
        #expect(value["logsTruncated"] == nil)
        let quiet = try await h.custom("return 0").get()
        #expect(quiet["logs"] == nil)
    }

    @Test func consoleOutputIsBoundedAndDoesNotCarryOver() async throws {
        let small = ComputeHarness(ComputeConfiguration(workers: 1, maxConsoleBytes: 100))
        let value = try await small.custom("for (let i = 0; i < 1000; i++) console.log('line ' + i); return 1").get()
        let logs = try #require(value["logs"]?.arrayValue)
        #expect(logs.reduce(0) { $0 + ($1.stringValue?.count ?? 0) } <= 100)
        #expect(value["logsTruncated"] == true)
        let next = try await small.custom("console.log('fresh'); return 2").get()
        #expect(next["logs"] == ["fresh"])
        #expect(next["logsTruncated"] == nil)
    }

    @Test func logsOfAFailedTaskAreDropped() async throws {
        let single = ComputeHarness(ComputeConfiguration(workers: 1))
        _ = await single.custom("console.log('before'); throw new Error('x')")
        #expect(try await single.custom("return 1").get()["logs"] == nil)
    }
}
