import CJavaScriptCore
import CSOPCore

/// One JavaScriptCore context group with its global context, prepared by
/// ``SandboxPrelude``, plus the functions compiled in it. Used only on its worker's thread;
/// thrown away after a termination or when a task added globals.
final class JSSandbox {
    /// How a script run ended.
    enum Failure: Error {
        /// The source does not compile (a `SyntaxError`), with its description.
        case compile(String)
        /// The script threw; message includes the JS error's line when known.
        case thrown(String)
        /// The Promise the script returned was rejected; the reason, described as `thrown`'s.
        case rejected(String)
        /// The Promise the script returned was still pending once nothing was left to run.
        case unsettled
        /// The result cannot be expressed as JSON.
        case notSerializable(String)
        /// The result's JSON text is longer than the limit, in UTF-8 bytes.
        case tooLarge
        /// The result nests arrays and objects deeper than ``JSSandbox/maxResultDepth``.
        case tooDeep
        /// The watchdog terminated the script.
        case terminated
    }

    /// The deepest nesting of arrays and objects a result may have. The answer wraps a result in
    /// up to four more levels (batch entry, results array, answer object, the CLI's response
    /// line), and every JSON parser in CSOP refuses more than `JSONParser.maxDepth` (512) levels.
    static let maxResultDepth = 500

    /// The factory script puts the body on line 3, as JSObjectMakeFunction does
    /// ("(function anonymous(data\n) {\n" + body).
    private static let bodyLineOffset = 2

    private let group: JSContextGroupRef
    private let context: JSGlobalContextRef
    private let watch: ExecutionWatch
    private let invoke: JSObjectRef
    private let compilesAsAsync: JSObjectRef
    private var compiled: [String: CachedFunction] = [:]
    private var compiledBytes = 0
    private var useCounter: UInt64 = 0
    private let cacheCapacity: Int
    private let cacheByteCapacity: Int
    /// Compiled functions kept, and their source in UTF-16 bytes.
    var cachedFunctionCount: Int { compiled.count }
    var cachedSourceBytes: Int { compiledBytes }
    /// Set when the last task added globals; the owner must replace this sandbox.
    private(set) var isPolluted = false

    private struct CachedFunction {
        /// `function () { return function (data) { body } }`: each call makes a fresh function
        /// object, so the cached one is never reachable from task code.
        let factory: JSObjectRef
        /// What the entry counts against `cacheByteCapacity`: the source in UTF-16.
        let bytes: Int
        var lastUse: UInt64
    }

    /// - Parameters:
    ///   - cacheCapacity: compiled functions kept, least recently used dropped first.
    ///   - cacheByteCapacity: their source, in UTF-16 bytes, kept at most (one larger
    ///     function is still kept, alone).
    /// - Throws: `CSOPError` when the prelude fails (a JavaScriptCore incompatibility).
    init(watch: ExecutionWatch, maxConsoleChars: Int, cacheCapacity: Int = 256, cacheByteCapacity: Int = 32 << 20) throws(CSOPError) {
        self.cacheCapacity = cacheCapacity
        self.cacheByteCapacity = cacheByteCapacity
        // JavaScriptCore fixes its signal when it starts, which may be right here.
        _ = JavaScriptCoreSignals.setUp
        let group = JSContextGroupCreate()!
        let context = JSGlobalContextCreateInGroup(group, nil)!
        self.group = group
        self.context = context
        self.watch = watch
        watch.install(on: group)
        var exception: JSValueRef?
        let factory = JSString(SandboxPrelude.source).withRef { JSEvaluateScript(context, $0, nil, nil, 1, &exception) }
        var arguments: [JSValueRef?] = [
            JSValueMakeNumber(context, Double(maxConsoleChars)), JSValueMakeNumber(context, Double(Self.maxResultDepth)),
            JSValueMakeNumber(context, Double(Self.bodyLineOffset)), JSObjectMakeFunctionWithCallback(context, nil, runPromiseReactions),
        ]
        if exception == nil, let factory, let factoryObject = JSValueToObject(context, factory, nil),
            let made = JSObjectCallAsFunction(context, factoryObject, nil, arguments.count, &arguments, &exception),
            exception == nil, let madeObject = JSValueToObject(context, made, nil),
            let invoke = Self.function(context, madeObject, JSString.invoke),
            let compilesAsAsync = Self.function(context, madeObject, JSString.compilesAsAsync)
        {
            self.invoke = invoke
            self.compilesAsAsync = compilesAsAsync
            JSValueProtect(context, invoke)
            JSValueProtect(context, compilesAsAsync)
        } else {
            let reason = exception.map { Self.describe(context, $0) } ?? "the prelude returned no invoke and compilesAsAsync functions"
            watch.uninstall(from: group)
            JSGlobalContextRelease(context)
            JSContextGroupRelease(group)
            throw CSOPError(.workerCrashed, "the worker's JavaScript sandbox could not be prepared: \(reason); another attempt may land on a healthy worker", retryable: true)
        }
    }

    deinit {
        for entry in compiled.values { JSValueUnprotect(context, entry.factory) }
        JSValueUnprotect(context, invoke)
        JSValueUnprotect(context, compilesAsAsync)
        watch.uninstall(from: group)
        JSGlobalContextRelease(context)
        JSContextGroupRelease(group)
    }

    /// The bytes this sandbox's VM holds (``JavaScriptCoreHeap``), read between tasks under the
    /// API lock so a concurrent collection cannot be changing them; nil without a VM meter or
    /// JavaScriptCore's lock functions.
    func heapBytes() -> UInt64? {
        let api = JavaScriptCorePrivate.shared
        guard let lock = api.lock, let unlock = api.unlock else { return nil }
        lock(context)
        defer { unlock(context) }
        return watch.heapBytes()
    }

    private static func function(_ context: JSContextRef, _ object: JSObjectRef, _ name: JSString) -> JSObjectRef? {
        guard let value = name.withRef({ JSObjectGetProperty(context, object, $0, nil) }),
            let function = JSValueToObject(context, value, nil), JSObjectIsFunction(context, function)
        else { return nil }
        return function
    }

    /// Runs `source` as the body of `function (data) { … }` with `data`, on a fresh function
    /// object. The function, its result's conversion to JSON, the description of what it threw
    /// and the promise reactions it queued all run in one call to the prelude's `invoke`, so
    /// the watchdog armed by `watch` covers every part.
    /// - Parameter maxResultBytes: the most UTF-8 bytes the result's JSON text may have.
    /// - Returns: the result as JSON bytes, and the console lines the run wrote.
    func run(source: String, data: JSONValue?, maxResultBytes: Int, watch: ExecutionWatch) -> Result<TaskOutput, Failure> {
        let factory: JSObjectRef
        switch compile(source) {
        case .success(let f): factory = f
        case .failure(let failure): return .failure(failure)
        }
        var exception: JSValueRef?
        let argument: JSValueRef?
        if let data {
            var bytes = data.serialized()
            bytes.append(0)
            let json = bytes.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { JSStringCreateWithUTF8CString($0.baseAddress) }
            }
            argument = JSValueMakeFromJSONString(context, json)
            JSStringRelease(json)
        } else {
            argument = JSValueMakeUndefined(context)
        }
        var arguments: [JSValueRef?] = [factory, argument, JSValueMakeNumber(context, Double(maxResultBytes))]
        let value = JSObjectCallAsFunction(context, invoke, nil, 3, &arguments, &exception)
        if watch.stopReason != nil { return .failure(.terminated) }
        guard exception == nil, let value else {
            // `invoke` catches what a task throws, so this is the prelude failing (its stack
            // exhausted): its end-of-task checks did not run, so this context is not reused.
            isPolluted = true
            return .failure(.thrown(exception.map { Self.describe(context, $0) } ?? "the function ended without a value"))
        }
        return outcome(value, maxResultBytes: maxResultBytes)
    }

    /// Reads what `invoke` returned: the outcome alone, or `{outcome, report}`.
    private func outcome(_ value: JSValueRef, maxResultBytes: Int) -> Result<TaskOutput, Failure> {
        guard !JSValueIsString(context, value), !JSValueIsArray(context, value), let wrapper = JSValueToObject(context, value, nil),
            let outcome = JSString.outcome.withRef({ JSObjectGetProperty(context, wrapper, $0, nil) }),
            let report = JSString.report.withRef({ JSObjectGetProperty(context, wrapper, $0, nil) })
        else { return output(value, maxResultBytes: maxResultBytes) }
        var result = output(outcome, maxResultBytes: maxResultBytes)
        readReport(report, into: &result)
        return result
    }

    /// Reads what `invoke` returned: JSON text, or `[kind, message]`.
    private func output(_ value: JSValueRef, maxResultBytes: Int) -> Result<TaskOutput, Failure> {
        guard JSValueIsString(context, value), let json = JSValueToStringCopy(context, value, nil) else {
            guard let object = JSValueToObject(context, value, nil),
                let kind = JSObjectGetPropertyAtIndex(context, object, 0, nil),
                let message = JSObjectGetPropertyAtIndex(context, object, 1, nil)
            else { return .failure(.notSerializable("it could not be converted")) }
            switch Self.string(context, kind) {
            case "thrown": return .failure(.thrown(Self.string(context, message)))
            case "rejected": return .failure(.rejected(Self.string(context, message)))
            case "unsettled": return .failure(.unsettled)
            case "size": return .failure(.tooLarge)
            case "depth": return .failure(.tooDeep)
            default: return .failure(.notSerializable(Self.string(context, message)))
            }
        }
        defer { JSStringRelease(json) }
        // UTF-8 takes at least one byte per UTF-16 unit, so a longer string is too large already.
        guard JSStringGetLength(json) <= maxResultBytes else { return .failure(.tooLarge) }
        let bytes = JSString.utf8(json)
        guard bytes.count <= maxResultBytes else { return .failure(.tooLarge) }
        if Self.mayHoldLoneSurrogate(bytes) {
            do throws(JSONParseError) {
                try bytes.withUnsafeBufferPointer { buffer throws(JSONParseError) in try JSONParser.validate(buffer) }
            } catch {
                return .failure(.notSerializable("it holds a string that is not Unicode (\(error.reason)); JSON readers refuse it"))
            }
        }
        return .success(TaskOutput(resultJSON: bytes))
    }

    /// Whether `json` has a `\uD800`–`\uDFFF` escape, which is how JSON.stringify writes a lone
    /// UTF-16 surrogate (a pair it writes as the character itself). Such text is refused by
    /// every reader that wants Unicode, the host's included, so it must become the task's error,
    /// not the plugin's. A quick scan; the parser decides when it finds one.
    static func mayHoldLoneSurrogate(_ json: [UInt8]) -> Bool {
        guard json.count >= 6 else { return false }
        for i in 0..<(json.count - 3) where json[i] == UInt8(ascii: "\\") && json[i + 1] == UInt8(ascii: "u") {
            let d = json[i + 2] | 0x20, next = json[i + 3] | 0x20
            if d == UInt8(ascii: "d"), (UInt8(ascii: "8")...UInt8(ascii: "9")).contains(next) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(next) {
                return true
            }
        }
        return false
    }

    /// Reads the report `invoke` made: console lines, and whether globals were added.
    private func readReport(_ report: JSValueRef, into outcome: inout Result<TaskOutput, Failure>) {
        guard let json = JSValueCreateJSONString(context, report, 0, nil) else { return }
        defer { JSStringRelease(json) }
        guard let parsed = try? JSONValue(parsing: JSString.utf8(json)) else { return }
        if parsed["polluted"]?.boolValue == true { isPolluted = true }
        guard case .success(var output) = outcome else { return }
        output.logs = (parsed["logs"]?.arrayValue ?? []).compactMap(\.stringValue)
        output.logsTruncated = parsed["truncated"]?.boolValue ?? false
        outcome = .success(output)
    }

    /// Whether `source` is exactly one `async` function body (the prelude's `compilesAsAsync`).
    private func asyncBody(_ source: String) -> Bool {
        JSString(source).withRef { body in
            var arguments: [JSValueRef?] = [JSValueMakeString(context, body)]
            var exception: JSValueRef?
            let result = JSObjectCallAsFunction(context, compilesAsAsync, nil, 1, &arguments, &exception)
            return exception == nil && result.map { JSValueIsBoolean(context, $0) && JSValueToBoolean(context, $0) } == true
        }
    }

    /// The cached function factory for `source`, compiling it on a miss.
    ///
    /// The body is first compiled alone by JSObjectMakeFunction, which refuses anything that is
    /// not exactly one function body (`}); (function () {` included), or when that fails by the
    /// AsyncFunction constructor, which does the same for an `async` body; only then is it
    /// wrapped in the factory (as a plain or an async function), so the wrapper cannot be
    /// broken out of.
    func compile(_ source: String) -> Result<JSObjectRef, Failure> {
        useCounter &+= 1
        if let index = compiled.index(forKey: source) {
            compiled.values[index].lastUse = useCounter
            return .success(compiled.values[index].factory)
        }
        var exception: JSValueRef?
        let checked = JSString(source).withRef { body in
            JSString.data.withRef { parameter in
                var parameters: JSStringRef? = parameter
                return JSObjectMakeFunction(context, nil, 1, &parameters, body, nil, 1, &exception)
            }
        }
        // A body that is no plain function's may be an async one's (it uses `await`); when it
        // is neither, the plain compile's error says why.
        var isAsync = false
        if checked == nil || exception != nil {
            // Described first: the exception is not protected from the collector across a call.
            let plainError = exception.map { Self.describe(context, $0, lineOffset: Self.bodyLineOffset) } ?? "it does not compile"
            guard asyncBody(source) else { return .failure(.compile(plainError)) }
            isAsync = true
            exception = nil
        }
        let wrapped = JSString("(function () { return \(isAsync ? "async " : "")function (data\n) {\n" + source + "\n}; })")
        let made = wrapped.withRef { JSEvaluateScript(context, $0, nil, nil, 1, &exception) }
        guard let made, exception == nil, let factory = JSValueToObject(context, made, nil) else {
            return .failure(.compile(exception.map { Self.describe(context, $0, lineOffset: Self.bodyLineOffset) } ?? "it does not compile"))
        }
        let bytes = source.utf16.count * 2
        while !compiled.isEmpty, compiled.count >= cacheCapacity || compiledBytes + bytes > cacheByteCapacity,
            let oldest = compiled.min(by: { $0.value.lastUse < $1.value.lastUse })
        {
            JSValueUnprotect(context, oldest.value.factory)
            compiledBytes -= oldest.value.bytes
            compiled.removeValue(forKey: oldest.key)
        }
        JSValueProtect(context, factory)
        compiled[source] = CachedFunction(factory: factory, bytes: bytes, lastUse: useCounter)
        compiledBytes += bytes
        return .success(factory)
    }

    private static func string(_ context: JSContextRef, _ value: JSValueRef) -> String {
        guard let string = JSValueToStringCopy(context, value, nil) else { return "" }
        defer { JSStringRelease(string) }
        return JSString.string(string)
    }

    /// "Name: message (line N)" for a thrown value, without calling back into user code
    /// beyond the value's own `toString`.
    /// - Parameter lineOffset: lines JavaScriptCore adds before a function body it wraps.
    static func describe(_ context: JSContextRef, _ value: JSValueRef, lineOffset: Int = 0) -> String {
        var text = "an exception"
        if let string = JSValueToStringCopy(context, value, nil) {
            text = JSString.string(string)
            JSStringRelease(string)
        }
        if JSValueIsObject(context, value), let object = JSValueToObject(context, value, nil) {
            if let line = JSString.line.withRef({ JSObjectGetProperty(context, object, $0, nil) }), JSValueIsNumber(context, line) {
                let number = JSValueToNumber(context, line, nil)
                if number.isFinite, number >= 1 { text += " (line \(max(Int(number) - lineOffset, 1)))" }
            }
        }
        return text
    }
}

/// Runs the promise reactions queued so far, for the prelude's `invoke`. JavaScriptCore would
/// otherwise run them when the host's call returns and releases the API lock, each reaction in
/// a VM entry of its own, and every entry restarts the watchdog's clock: a chain of short
/// reactions would run forever. Run from inside `invoke`, they are part of its one watched call.
/// Returns true when they ran; without JavaScriptCore's private functions this does nothing
/// (they run as before, after the call) and returns undefined.
private func runPromiseReactions(
    _ context: JSContextRef?, _ function: JSObjectRef?, _ this: JSObjectRef?, _ count: Int,
    _ arguments: UnsafePointer<JSValueRef?>?, _ exception: UnsafeMutablePointer<JSValueRef?>?
) -> JSValueRef? {
    let api = JavaScriptCorePrivate.shared
    // JavaScriptCore releases the API lock around a callback; draining needs it held.
    guard let context, let lock = api.lock, let unlock = api.unlock, let drain = api.drainMicrotasks else { return nil }
    lock(context)
    drain(JSContextGetGroup(context))
    unlock(context)
    return JSValueMakeBoolean(context, true)
}
