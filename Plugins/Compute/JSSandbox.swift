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
        /// The result cannot be expressed as JSON.
        case notSerializable(String)
        /// The watchdog terminated the script.
        case terminated
    }

    /// JSObjectMakeFunction compiles "(function anonymous(data\n) {\n" + body, so the body starts on line 3.
    private static let bodyLineOffset = 2

    private let group: JSContextGroupRef
    private let context: JSGlobalContextRef
    private let after: JSObjectRef
    private let promise: JSObjectRef
    private var compiled: [String: CachedFunction] = [:]
    private var useCounter: UInt64 = 0
    private let cacheCapacity: Int
    /// Set when the last task added globals; the owner must replace this sandbox.
    private(set) var isPolluted = false

    private struct CachedFunction {
        let function: JSObjectRef
        var lastUse: UInt64
    }

    /// - Throws: `CSOPError` when the prelude fails (a JavaScriptCore incompatibility).
    init(watch: ExecutionWatch, maxConsoleChars: Int, cacheCapacity: Int = 256) throws(CSOPError) {
        self.cacheCapacity = cacheCapacity
        let group = JSContextGroupCreate()!
        let context = JSGlobalContextCreateInGroup(group, nil)!
        self.group = group
        self.context = context
        watch.install(on: group)
        var exception: JSValueRef?
        let factory = JSString(SandboxPrelude.source).withRef { JSEvaluateScript(context, $0, nil, nil, 1, &exception) }
        var argument: JSValueRef? = JSValueMakeNumber(context, Double(maxConsoleChars))
        if exception == nil, let factory, let factoryObject = JSValueToObject(context, factory, nil),
            let made = JSObjectCallAsFunction(context, factoryObject, nil, 1, &argument, &exception),
            exception == nil, let madeObject = JSValueToObject(context, made, nil)
        {
            after = madeObject
            JSValueProtect(context, after)
            let global = JSContextGetGlobalObject(context)
            let constructor = JSString("Promise").withRef { JSObjectGetProperty(context, global, $0, nil) }
            promise = JSValueToObject(context, constructor, nil)
            JSValueProtect(context, promise)
        } else {
            let reason = exception.map { Self.describe(context, $0) } ?? "unknown"
            JSGlobalContextRelease(context)
            JSContextGroupRelease(group)
            throw CSOPError(.workerCrashed, "the worker's JavaScript sandbox could not be prepared: \(reason); another attempt may land on a healthy worker", retryable: true)
        }
    }

    deinit {
        for entry in compiled.values { JSValueUnprotect(context, entry.function) }
        JSValueUnprotect(context, after)
        JSValueUnprotect(context, promise)
        JSGlobalContextRelease(context)
        JSContextGroupRelease(group)
    }

    /// Runs `source` as the body of `function (data) { … }` with `data`.
    /// - Returns: the result as JSON bytes, and the console lines the run wrote.
    func run(source: String, data: JSONValue?, watch: ExecutionWatch) -> Result<TaskOutput, Failure> {
        let function: JSObjectRef
        switch compile(source) {
        case .success(let f): function = f
        case .failure(let failure): return .failure(failure)
        }
        var exception: JSValueRef?
        var argument: JSValueRef?
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
        let value = JSObjectCallAsFunction(context, function, nil, 1, &argument, &exception)
        var outcome: Result<TaskOutput, Failure>
        if watch.stopReason != nil {
            return .failure(.terminated)
        } else if let exception {
            outcome = .failure(.thrown(Self.describe(context, exception, lineOffset: Self.bodyLineOffset)))
        } else if let value {
            outcome = serialize(value, watch: watch)
        } else {
            outcome = .failure(.thrown("the function ended without a value"))
        }
        if watch.stopReason != nil { return .failure(.terminated) }
        collectReport(into: &outcome)
        return outcome
    }

    private func serialize(_ value: JSValueRef, watch: ExecutionWatch) -> Result<TaskOutput, Failure> {
        if JSValueIsUndefined(context, value) { return .success(TaskOutput(resultJSON: Array("null".utf8))) }
        if JSValueIsObject(context, value), JSValueIsInstanceOfConstructor(context, value, promise, nil) {
            return .failure(.notSerializable("the result is a Promise; tasks run synchronously, so return the value itself"))
        }
        var exception: JSValueRef?
        guard let json = JSValueCreateJSONString(context, value, 0, &exception) else {
            if watch.stopReason != nil { return .failure(.terminated) }
            if let exception {
                return .failure(.notSerializable(Self.describe(context, exception)))
            }
            let kind = JSValueIsObject(context, value) ? "a function" : "a symbol"
            return .failure(.notSerializable("the result is \(kind), which has no JSON form"))
        }
        defer { JSStringRelease(json) }
        return .success(TaskOutput(resultJSON: JSString.utf8(json)))
    }

    /// Reads `after()`: console lines, and whether globals were added.
    private func collectReport(into outcome: inout Result<TaskOutput, Failure>) {
        guard let report = JSObjectCallAsFunction(context, after, nil, 0, nil, nil), !JSValueIsNull(context, report),
            let json = JSValueCreateJSONString(context, report, 0, nil)
        else { return }
        defer { JSStringRelease(json) }
        guard let parsed = try? JSONValue(parsing: JSString.utf8(json)) else { return }
        if parsed["polluted"]?.boolValue == true { isPolluted = true }
        guard case .success(var output) = outcome else { return }
        output.logs = (parsed["logs"]?.arrayValue ?? []).compactMap(\.stringValue)
        output.logsTruncated = parsed["truncated"]?.boolValue ?? false
        outcome = .success(output)
    }

    /// The cached compiled function for `source`, compiling it on a miss.
    func compile(_ source: String) -> Result<JSObjectRef, Failure> {
        useCounter &+= 1
        if let entry = compiled[source] {
            compiled[source]?.lastUse = useCounter
            return .success(entry.function)
        }
        var exception: JSValueRef?
        let made = JSString(source).withRef { body in
            JSString.data.withRef { parameter in
                var parameters: JSStringRef? = parameter
                return JSObjectMakeFunction(context, nil, 1, &parameters, body, nil, 1, &exception)
            }
        }
        guard let function = made, exception == nil else {
            return .failure(.compile(exception.map { Self.describe(context, $0, lineOffset: Self.bodyLineOffset) } ?? "it does not compile"))
        }
        if compiled.count >= cacheCapacity, let oldest = compiled.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            JSValueUnprotect(context, oldest.value.function)
            compiled.removeValue(forKey: oldest.key)
        }
        JSValueProtect(context, function)
        compiled[source] = CachedFunction(function: function, lastUse: useCounter)
        return .success(function)
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
