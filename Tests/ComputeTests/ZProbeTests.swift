import CSOPCore
import CJavaScriptCore
import Testing
@testable import ComputePlugin

@Test func zprobe() async throws {
    let src = "let s=0; for (let i=0;i<2e6;i++) s+=i; return s"
    func time(_ label: String, _ body: () -> Void) {
        let t = MonotonicClock.now(); body(); print(label, Double(MonotonicClock.now() - t) / 1e6, "ms")
    }
    func bare(watch: Bool, prelude: Bool, limit: Double = 0.01) {
        let g = JSContextGroupCreate()!
        let c = JSGlobalContextCreateInGroup(g, nil)!
        let w = ExecutionWatch(memoryLimitBytes: 1 << 40)
        if watch { JSContextGroupSetExecutionTimeLimit(g, limit, { _, _ in false }, nil) }
        if prelude && !watch { _ = JSString(SandboxPrelude.source).withRef { JSEvaluateScript(c, $0, nil, nil, 1, nil) } }
        var p: JSStringRef? = JSStringCreateWithUTF8CString("data")
        let f = JSObjectMakeFunction(c, nil, 1, &p, JSStringCreateWithUTF8CString(src), nil, 1, nil)
        time("watch=\(watch) limit=\(limit) x100") {
            for _ in 0..<100 { var a: JSValueRef? = JSValueMakeUndefined(c); _ = JSObjectCallAsFunction(c, f, nil, 1, &a, nil) }
        }
    }
    bare(watch: false, prelude: false)
    bare(watch: true, prelude: false)
    bare(watch: false, prelude: true)
    for l in [0.01, 0.03, 0.05, 0.1, 0.25, 0.01, 1000] { bare(watch: true, prelude: true, limit: l) }
    let sandbox = try JSSandbox(watch: ExecutionWatch(memoryLimitBytes: 1 << 40), maxConsoleChars: 100)
    let w = ExecutionWatch(memoryLimitBytes: 1 << 40)
    let s2 = try JSSandbox(watch: w, maxConsoleChars: 100)
    let job = ComputeJob(taskName: "x", work: .compile(source: ""), timeoutMilliseconds: 100000) { _ in }
    time("sandbox.run x100") { for _ in 0..<100 { w.begin(job); _ = s2.run(source: src, data: nil, watch: w); w.end() } }
    _ = sandbox
}
