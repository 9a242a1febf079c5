import CJavaScriptCore

/// One bare JavaScriptCore context in a group of its own, used by one thread at a time: the
/// baseline the pool is measured against.
final class BareJavaScript: @unchecked Sendable {  // Used by one thread at a time: a caller that hands it to another thread joins that thread before it uses it again.
    private let group = JSContextGroupCreate()
    private let context: JSGlobalContextRef
    private var heavy: JSObjectRef?

    init() { context = JSGlobalContextCreateInGroup(group, nil) }

    deinit {
        JSGlobalContextRelease(context)
        JSContextGroupRelease(group)
    }

    private func function(_ body: String) throws -> JSObjectRef {
        let parameter = JSStringCreateWithUTF8CString("data")
        let source = JSStringCreateWithUTF8CString(body)
        defer {
            JSStringRelease(parameter)
            JSStringRelease(source)
        }
        var parameters: JSStringRef? = parameter
        guard let function = JSObjectMakeFunction(context, nil, 1, &parameters, source, nil, 1, nil) else {
            throw BenchError(message: "bare JSC: compile failed")
        }
        JSValueProtect(context, function)
        return function
    }

    /// JSON in, call, JSON out: what one custom task costs without the pool and the host.
    func measureAdd(_ bench: BenchContext, iterations: Int) throws -> LatencyStats {
        let add = try function("return data.a + data.b")
        let json = JSStringCreateWithUTF8CString("{\"a\":1,\"b\":2}")
        defer { JSStringRelease(json) }
        return bench.measure(iterations: iterations, warmup: 2000) {
            var argument = JSValueMakeFromJSONString(context, json)
            let result = JSObjectCallAsFunction(context, add, nil, 1, &argument, nil)
            if let out = JSValueCreateJSONString(context, result, 0, nil) { JSStringRelease(out) }
        }
    }

    /// Compiles the heavy task (``ComputeBench/heavySource``) for ``runHeavy(count:)``.
    func prepareHeavy() throws { heavy = try function(ComputeBench.heavySource) }

    /// The heavy task `count` times in a row on this one context, on the calling thread;
    /// ``prepareHeavy()`` first.
    func runHeavy(count: Int) {
        guard let heavy else { return }
        for _ in 0..<count {
            var argument = JSValueMakeUndefined(context)
            let result = JSObjectCallAsFunction(context, heavy, nil, 1, &argument, nil)
            if let out = JSValueCreateJSONString(context, result, 0, nil) { JSStringRelease(out) }
        }
    }
}
