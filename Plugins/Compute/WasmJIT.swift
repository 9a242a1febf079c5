import CJavaScriptCore
import CSOPCore
import CSOPWasmRewrite
import Dispatch
import WasmKit

/// Runs wasm calls for one worker thread on JavaScriptCore's WebAssembly compiler, in a
/// context of its own that runs no task's JavaScript.
///
/// JavaScriptCore's execution time limit does not stop wasm code, so the module is first
/// rewritten (``WasmInstrumenter``) to call back into ``check()`` every few thousand loop
/// iterations and function calls; the callback throws once the task's time is up or its call
/// was cancelled, which unwinds every wasm frame. Each call instantiates the module afresh (no
/// memory or globals carry over). Compiled modules are kept per worker, the least recently used
/// dropped first past ``cacheCapacity`` modules: registered ones by identity, ones sent with
/// their call by their base64 text (up to ``adHocCacheBytes`` of it), so a client that sends
/// the same module with every call has it parsed and compiled once. Thread-confined: one per
/// worker.
final class WasmJIT {
    /// Compiled modules kept per worker.
    static let cacheCapacity = 64
    /// The base64 text of the kept modules that came with their calls, at most.
    static let adHocCacheBytes = 16 << 20

    /// Why a call was stopped from outside.
    enum Stop { case timeout, cancelled }

    private let group: JSContextGroupRef
    private let context: JSGlobalContextRef
    private let compileFunction: JSObjectRef
    private let instantiateFunction: JSObjectRef
    private let bigIntFunction: JSObjectRef
    /// `write(memory, offset, bytes)` and `read(memory, offset, length)`: JavaScriptCore gives
    /// no pointer into a wasm memory's buffer, so bytes cross through a typed array.
    private let writeFunction: JSObjectRef
    private let readFunction: JSObjectRef
    private let checkFunction: JSObjectRef
    private var compiled: [Key: Compiled] = [:]
    /// The base64 bytes of the `.adHoc` keys in `compiled`.
    private var adHocBytes = 0
    private var useCounter: UInt64 = 0
    /// The running call's job and deadline (`DispatchTime` uptime nanoseconds), for ``check()``.
    private var running: (job: ComputeJob, deadline: UInt64)?
    /// Set by ``check()`` when it stopped the running call.
    private var stop: Stop?

    /// A compiled module's name in the cache.
    private enum Key: Hashable {
        case registered(UInt64)
        case adHoc(String)

        /// What the key holds beside the module: an ad-hoc module's text.
        var bytes: Int {
            if case .adHoc(let text) = self { text.utf8.count } else { 0 }
        }
    }

    private struct Compiled {
        /// A `WebAssembly.Module`, protected from the collector while kept.
        let module: JSObjectRef
        let exports: [String: FunctionType]
        let exportNames: [String]
        let exportsMemory: Bool
        let initialPagesOverCap: UInt64?
        var lastUse: UInt64
    }

    /// The helper this context runs: it alone holds `WebAssembly`.
    private static let helperSource = """
        (function (WA) {
            'use strict';
            return [
                (bytes) => new WA.Module(bytes),
                (module, check) => new WA.Instance(module, { csop: { check } }).exports,
                (text) => BigInt(text),
                (memory, offset, bytes) => { new Uint8Array(memory.buffer, offset, bytes.length).set(bytes); },
                (memory, offset, length) => new Uint8Array(memory.buffer.slice(offset, offset + length)),
            ];
        })
        """

    /// The class of `check`: a callable object whose private data is its ``WasmJIT``.
    /// `nonisolated(unsafe)`: a JSClassRef is never changed once made, and JavaScriptCore lets
    /// any thread make objects of it.
    nonisolated(unsafe) private static let checkClass: JSClassRef = {
        var definition = kJSClassDefinitionEmpty
        definition.callAsFunction = { context, function, _, _, _, exception in
            if let function, let data = JSObjectGetPrivate(function),
                !Unmanaged<WasmJIT>.fromOpaque(data).takeUnretainedValue().check()
            {
                exception?.pointee = JSString.stopped.withRef { JSValueMakeString(context, $0) }
            }
            return JSValueMakeUndefined(context)
        }
        return JSClassCreate(&definition)
    }()

    /// - Throws: `WORKER_CRASHED` (retryable) when this JavaScriptCore cannot run WebAssembly.
    init() throws(CSOPError) {
        _ = JavaScriptCoreSignals.setUp
        let group = JSContextGroupCreate()!
        let context = JSGlobalContextCreateInGroup(group, nil)!
        self.group = group
        self.context = context
        var exception: JSValueRef?
        let made = JSString(Self.helperSource).withRef { JSEvaluateScript(context, $0, nil, nil, 1, &exception) }
        let global = JSContextGetGlobalObject(context)
        let webAssembly = JSString("WebAssembly").withRef { JSObjectGetProperty(context, global, $0, nil) }
        var functions: [JSObjectRef] = []
        if exception == nil, let made, let factory = JSValueToObject(context, made, nil), let webAssembly, JSValueIsObject(context, webAssembly) {
            var arguments: [JSValueRef?] = [webAssembly]
            if let list = JSObjectCallAsFunction(context, factory, nil, 1, &arguments, &exception), exception == nil,
                let array = JSValueToObject(context, list, nil)
            {
                for index in 0..<5 {
                    if let value = JSObjectGetPropertyAtIndex(context, array, UInt32(index), nil), let function = JSValueToObject(context, value, nil) {
                        functions.append(function)
                    }
                }
            }
        }
        guard functions.count == 5 else {
            JSGlobalContextRelease(context)
            JSContextGroupRelease(group)
            throw CSOPError(.workerCrashed, "this JavaScriptCore cannot run WebAssembly; another attempt may land on a healthy worker", retryable: true)
        }
        for function in functions { JSValueProtect(context, function) }
        (compileFunction, instantiateFunction, bigIntFunction) = (functions[0], functions[1], functions[2])
        (writeFunction, readFunction) = (functions[3], functions[4])
        checkFunction = JSObjectMake(context, Self.checkClass, nil)
        JSValueProtect(context, checkFunction)
        JSObjectSetPrivate(checkFunction, Unmanaged.passUnretained(self).toOpaque())
    }

    deinit {
        for entry in compiled.values { JSValueUnprotect(context, entry.module) }
        for function in [compileFunction, instantiateFunction, bigIntFunction, writeFunction, readFunction, checkFunction] { JSValueUnprotect(context, function) }
        JSGlobalContextRelease(context)
        JSContextGroupRelease(group)
    }

    /// Whether the running call may go on; records why not. Called from wasm code.
    private func check() -> Bool {
        guard let running else { return true }
        if running.job.isCancelled {
            stop = .cancelled
        } else if DispatchTime.now().uptimeNanoseconds >= running.deadline {
            stop = .timeout
        }
        return stop == nil
    }

    /// Runs `call` until `deadline` (`DispatchTime` uptime nanoseconds) or `job`'s cancellation.
    /// - Parameters:
    ///   - resolved: the call's module and input, when they were already parsed and decoded
    ///     (for the interpreter's slice), so they are not again.
    ///   - memoryLimitBytes: the most any memory of the module may hold.
    ///   - maxResultBytes: the most bytes an output may have.
    func run(
        _ call: WasmCall, resolved: WasmCall.Resolved?, job: ComputeJob, deadline: UInt64, memoryLimitBytes: Int, maxResultBytes: Int
    ) -> Result<JSONValue, WasmFailure> {
        let module: Compiled
        switch compiled(call, parsed: resolved?.module, memoryLimitBytes: memoryLimitBytes) {
        case .success(let made): module = made
        case .failure(let failure): return .failure(failure)
        }
        let input: [UInt8]?
        do throws(CSOPError) {
            try call.check(functions: module.exportNames, exportsMemory: module.exportsMemory)
            if let resolved { input = resolved.input } else { input = try call.decodedInput() }
        } catch {
            return .failure(.invalid(error))
        }
        if let pages = module.initialPagesOverCap { return .failure(.initialMemory(Int(clamping: pages * 65_536))) }
        guard let type = module.exports[call.export] else {
            return .failure(.invalid(.invalidPayload("\(call.path).export: the module exports no function \"\(call.export)\"")))
        }
        let arguments: [Value]
        do throws(CSOPError) { arguments = try call.arguments(for: type) } catch { return .failure(.invalid(error)) }
        running = (job, deadline)
        stop = nil
        defer { running = nil }
        var exception: JSValueRef?
        var instantiateArguments: [JSValueRef?] = [module.module, checkFunction]
        guard let made = JSObjectCallAsFunction(context, instantiateFunction, nil, 2, &instantiateArguments, &exception), exception == nil,
            let exports = JSValueToObject(context, made, nil)
        else { return .failure(failure(exception)) }
        var values: [JSValueRef?] = []
        if let input {
            guard module.exports["alloc"] == WasmCall.allocType else { return .failure(.invalid(WasmCall.badAlloc)) }
            switch copyIn(input, exports: exports) {
            case .success(let pointer):
                values += [JSValueMakeNumber(context, Double(Int32(bitPattern: pointer))), JSValueMakeNumber(context, Double(input.count))]
            case .failure(let failure): return .failure(failure)
            }
        }
        for argument in arguments { values.append(jsValue(argument)) }
        guard let function = property(exports, call.export) else { return .failure(.badOutput("the export is not a function")) }
        let result = JSObjectCallAsFunction(context, function, nil, values.count, &values, &exception)
        guard exception == nil, let result else { return .failure(failure(exception)) }
        let results: [Value]
        switch self.results(result, type.results) {
        case .success(let read): results = read
        case .failure(let failure): return .failure(failure)
        }
        guard let output = call.output else { return .success(WasmRunner.answer(results)) }
        let memory = property(exports, "memory")
        return WasmRunner.readOutput(results, as: output, memoryByteCount: memory.map(byteCount), maxResultBytes: maxResultBytes) { offset, count in
            read(memory!, offset: offset, count: count)
        }
    }

    /// The call's module, compiled: from the cache, or parsed (ad hoc, unless `parsed` is it),
    /// checked, rewritten and compiled, then kept.
    private func compiled(_ call: WasmCall, parsed: WasmModule?, memoryLimitBytes: Int) -> Result<Compiled, WasmFailure> {
        useCounter &+= 1
        let key: Key
        switch call.source {
        case .registered(let module): key = .registered(module.id)
        case .base64(let text): key = .adHoc(text)
        }
        if let index = compiled.index(forKey: key) {
            compiled.values[index].lastUse = useCounter
            return .success(compiled.values[index])
        }
        let module: WasmModule
        switch (call.source, parsed) {
        case (_, let parsed?):
            module = parsed
        case (.registered(let registered), nil):
            module = registered
        case (.base64(let text), nil):
            do throws(CSOPError) { module = try WasmModule(base64: text, path: "\(call.path).module") } catch { return .failure(.invalid(error)) }
        }
        let made = compile(module, memoryLimitBytes: memoryLimitBytes)
        guard case .success(let entry) = made, key.bytes <= Self.adHocCacheBytes else { return made }
        while !compiled.isEmpty, compiled.count >= Self.cacheCapacity || adHocBytes + key.bytes > Self.adHocCacheBytes,
            let oldest = compiled.min(by: { $0.value.lastUse < $1.value.lastUse })
        {
            JSValueUnprotect(context, oldest.value.module)
            adHocBytes -= oldest.key.bytes
            compiled.removeValue(forKey: oldest.key)
        }
        JSValueProtect(context, entry.module)
        compiled[key] = entry
        adHocBytes += key.bytes
        return made
    }

    /// `module` rewritten (``WasmInstrumenter``) and compiled.
    private func compile(_ module: WasmModule, memoryLimitBytes: Int) -> Result<Compiled, WasmFailure> {
        let instrumented: WasmInstrumenter.Output
        do throws(WasmInstrumenter.Failure) {
            instrumented = try WasmInstrumenter.instrument(
                module.bytes, maxMemoryPages: UInt32(min(memoryLimitBytes >> 16, 65_536)), maxTableElements: UInt32(WasmMemoryCap.maxTableElements))
        } catch {
            switch error {
            case .unsupported(let what):
                return .failure(.invalid(.invalidPayload("the module uses \(what), which wasm tasks do not support; compile it without that feature")))
            case .malformed(let why):
                return .failure(.invalid(.invalidPayload("the module could not be prepared to run: \(why)")))
            }
        }
        var exception: JSValueRef?
        var arguments: [JSValueRef?] = [typedArray(instrumented.bytes)]
        let made = JSObjectCallAsFunction(context, compileFunction, nil, 1, &arguments, &exception)
        guard exception == nil, let made, let object = JSValueToObject(context, made, nil) else {
            return .failure(.invalid(.invalidPayload("the module is not valid WebAssembly: \(describe(exception))")))
        }
        return .success(
            Compiled(
                module: object, exports: instrumented.exports.mapValues(FunctionType.init), exportNames: instrumented.exportNames, exportsMemory: instrumented.exportsMemory,
                initialPagesOverCap: instrumented.initialPagesOverCap, lastUse: useCounter))
    }

    /// Copies `input` to what the module's `alloc` hands out. - Returns: the pointer.
    private func copyIn(_ input: [UInt8], exports: JSObjectRef) -> Result<UInt32, WasmFailure> {
        guard let alloc = property(exports, "alloc") else {
            return .failure(.invalid(WasmCall.badAlloc))
        }
        var exception: JSValueRef?
        var arguments: [JSValueRef?] = [JSValueMakeNumber(context, Double(input.count))]
        guard let value = JSObjectCallAsFunction(context, alloc, nil, 1, &arguments, &exception), exception == nil else {
            return .failure(failure(exception))
        }
        guard let returned = int32(value) else { return .failure(.badOutput("alloc returned no pointer")) }
        let pointer = UInt32(bitPattern: returned)
        let memory = property(exports, "memory")
        let size = memory.map(byteCount) ?? 0
        guard let memory, Int(pointer) + input.count <= size else {
            return .failure(
                .invalid(.executionFailed("alloc(\(input.count)) returned \(pointer), but the input does not fit in the module's memory of \(size) bytes there")))
        }
        if !input.isEmpty {
            let array = typedArray(input)
            var arguments: [JSValueRef?] = [memory, JSValueMakeNumber(context, Double(pointer)), array]
            _ = JSObjectCallAsFunction(context, writeFunction, nil, 3, &arguments, &exception)
            if exception != nil { return .failure(failure(exception)) }
        }
        return .success(pointer)
    }

    /// A Uint8Array holding a copy of `bytes`.
    private func typedArray(_ bytes: [UInt8]) -> JSObjectRef? {
        guard let array = JSObjectMakeTypedArray(context, kJSTypedArrayTypeUint8Array, bytes.count, nil) else { return nil }
        if let base = JSObjectGetTypedArrayBytesPtr(context, array, nil), !bytes.isEmpty {
            bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        return array
    }

    /// The size of a `WebAssembly.Memory` now.
    private func byteCount(_ memory: JSObjectRef) -> Int {
        guard let buffer = property(memory, "buffer") else { return 0 }
        return JSObjectGetArrayBufferByteLength(context, buffer, nil)
    }

    /// `count` bytes of `memory` from `offset` (in bounds: checked by the caller).
    private func read(_ memory: JSObjectRef, offset: Int, count: Int) -> [UInt8] {
        var arguments: [JSValueRef?] = [memory, JSValueMakeNumber(context, Double(offset)), JSValueMakeNumber(context, Double(count))]
        guard let value = JSObjectCallAsFunction(context, readFunction, nil, 3, &arguments, nil), let array = JSValueToObject(context, value, nil),
            let base = JSObjectGetTypedArrayBytesPtr(context, array, nil)
        else { return [] }
        let length = JSObjectGetTypedArrayByteLength(context, array, nil)
        return Array(UnsafeRawBufferPointer(start: base, count: length))
    }

    private func property(_ object: JSObjectRef, _ name: String) -> JSObjectRef? {
        guard let value = JSString(name).withRef({ JSObjectGetProperty(context, object, $0, nil) }), JSValueIsObject(context, value) else { return nil }
        return JSValueToObject(context, value, nil)
    }

    /// An i32 as JavaScriptCore hands it over: a number that is a 32-bit integer.
    private func int32(_ value: JSValueRef) -> Int32? {
        Int32(exactly: JSValueToNumber(context, value, nil))
    }

    private func jsValue(_ value: Value) -> JSValueRef? {
        switch value {
        case .i32(let bits): return JSValueMakeNumber(context, Double(Int32(bitPattern: bits)))
        case .i64(let bits):
            var arguments: [JSValueRef?] = [JSString(String(Int64(bitPattern: bits))).withRef { JSValueMakeString(context, $0) }]
            return JSObjectCallAsFunction(context, bigIntFunction, nil, 1, &arguments, nil)
        case .f32(let bits): return JSValueMakeNumber(context, Double(Float(bitPattern: bits)))
        case .f64(let bits): return JSValueMakeNumber(context, Double(bitPattern: bits))
        default: return JSValueMakeUndefined(context)  // refused before the call (WasmCall.arguments)
        }
    }

    /// The call's results as values of `types`: none, one, or an array of several.
    private func results(_ value: JSValueRef, _ types: [ValueType]) -> Result<[Value], WasmFailure> {
        var items: [JSValueRef] = []
        if types.count == 1 {
            items = [value]
        } else if types.count > 1 {
            guard let array = JSValueToObject(context, value, nil) else { return .failure(.badOutput("its results are not an array")) }
            for index in 0..<types.count {
                guard let item = JSObjectGetPropertyAtIndex(context, array, UInt32(index), nil) else { return .failure(.badOutput("result \(index) is missing")) }
                items.append(item)
            }
        }
        var values: [Value] = []
        for (item, type) in zip(items, types) {
            switch type {
            case .i32:
                guard let int = int32(item) else { return .failure(.badOutput("an i32 result is not an integer")) }
                values.append(.i32(UInt32(bitPattern: int)))
            case .i64:
                guard let text = JSValueToStringCopy(context, item, nil) else { return .failure(.badOutput("an i64 result could not be read")) }
                let decimal = JSString.string(text)
                JSStringRelease(text)
                guard let int = Int64(decimal) ?? UInt64(decimal).map({ Int64(bitPattern: $0) }) else {
                    return .failure(.badOutput("an i64 result read as \(decimal)"))
                }
                values.append(.i64(UInt64(bitPattern: int)))
            case .f32: values.append(.f32(Float(JSValueToNumber(context, item, nil)).bitPattern))
            case .f64: values.append(.f64(JSValueToNumber(context, item, nil).bitPattern))
            default: return .failure(.badOutput("a result of type \(type)"))  // refused before the call
            }
        }
        return .success(values)
    }

    /// What a thrown exception means: the stop ``check()`` asked for, or a trap with its kind.
    private func failure(_ exception: JSValueRef?) -> WasmFailure {
        if let stop { return .stopped(stop) }
        return .trap(Self.trapKind(describe(exception)), refusedMemory: nil)
    }

    private func describe(_ exception: JSValueRef?) -> String {
        guard let exception, let text = JSValueToStringCopy(context, exception, nil) else { return "an exception" }
        defer { JSStringRelease(text) }
        return JSString.string(text)
    }

    /// JavaScriptCore's trap messages in the words WasmKit (and the README) use.
    static func trapKind(_ message: String) -> String {
        let known: [(String, String)] = [
            ("Unreachable code should not be executed", "unreachable"),
            ("Out of bounds memory access", "out of bounds memory access"),
            ("Division by zero", "integer divide by zero"),
            ("Integer overflow", "integer overflow"),
            ("Out of bounds Trunc operation", "invalid conversion to integer"),
            ("Maximum call stack size exceeded", "call stack exhausted"),
            ("call_indirect to a null table entry", "indirect call to null"),
            ("call_indirect to a signature that does not match", "indirect call type mismatch"),
            ("Out of bounds call_indirect", "undefined element"),
            ("Out of bounds table access", "out of bounds table access"),
        ]
        for (text, kind) in known where message.contains(text) { return kind }
        var text = message
        for prefix in ["RuntimeError: ", "RangeError: ", "LinkError: ", "Error: "] where text.hasPrefix(prefix) { text.removeFirst(prefix.count) }
        return text
    }
}

extension JSString {
    /// The exception `check` throws to stop a wasm call.
    static let stopped = JSString("csop: the wasm task was stopped")
}

extension FunctionType {
    /// WasmKit's form of a type the rewriter read.
    init(_ type: WasmInstrumenter.FunctionType) {
        self.init(parameters: type.parameters.map(ValueType.init), results: type.results.map(ValueType.init))
    }
}

extension ValueType {
    init(_ type: WasmInstrumenter.ValueType) {
        switch type {
        case .i32: self = .i32
        case .i64: self = .i64
        case .f32: self = .f32
        case .f64: self = .f64
        case .v128: self = .v128
        case .funcRef: self = .ref(.funcRef)
        case .externRef: self = .ref(.externRef)
        }
    }
}
