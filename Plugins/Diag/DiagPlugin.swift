import CSOPCore
import CSOPPluginKit
import Synchronization

/// A diagnostics capability, and the short example of ``AsyncCSOPPlugin``: a no-op and an
/// echo answered inline (the fast path for measuring dispatch), the count of cancellations
/// (inline too, so reading it never waits for a busy pool), and operations that misbehave
/// on purpose, each in its own task, so the router's retry, timeout and cancellation can be seen.
final class DiagPlugin: AsyncCSOPPlugin {
    enum Operation: String, PluginOperation {
        case noop, echo, sleep, flaky, fail, cancelled
    }

    static let name = "diag"
    static let version = "1.0.0"

    let calls = CallTaskRegistry()
    private let flakyCounts = Mutex<[String: Int64]>([:])
    private let cancelledCount = Atomic<Int64>(0)

    static func checkConfig(_ config: JSONValue) throws(CSOPError) {
        _ = try Fields(config, path: "config", allowed: [])
    }

    init(config: JSONValue, host: PluginHost) throws(CSOPError) {
        try Self.checkConfig(config)
    }

    func invoke(_ operation: Operation, _ call: PluginCall) {
        switch operation {
        case .noop: call.succeed(rawJSON: Self.nullBytes)
        case .echo: call.succeed(call.payload)
        case .cancelled: call.succeed(.int(cancelledCount.load(ordering: .relaxed)))
        default: runAsync(operation, call)
        }
    }

    func handle(_ operation: Operation, _ call: PluginCall) async throws(CSOPError) -> JSONValue {
        switch operation {
        case .noop: return .null
        case .echo: return call.payload
        case .sleep: return try await sleep(call.payload)
        case .flaky: return try flaky(call.payload)
        case .fail:
            let fields = try Fields(call.payload, path: "payload", allowed: ["code", "message", "retry"])
            throw CSOPError(
                ErrorCode(try fields.string("code") ?? "EXECUTION_FAILED"),
                try fields.string("message") ?? "failed on request",
                retryable: try fields.bool("retry") ?? false)
        case .cancelled: return .int(cancelledCount.load(ordering: .relaxed))
        }
    }

    /// Counts every cancellation the host asks for (a timeout), then cancels the call's task.
    func cancel(callID: UInt64) {
        cancelledCount.add(1, ordering: .relaxed)
        calls.cancel(callID)
    }

    private static let nullBytes: [UInt8] = Array("null".utf8)

    /// `{ms, pad?}`: answers after ms milliseconds unless cancelled first; `pad` (anything) is
    /// ignored, so tests can make a slow request of any size.
    private func sleep(_ payload: JSONValue) async throws(CSOPError) -> JSONValue {
        let fields = try Fields(payload, path: "payload", allowed: ["ms", "pad"])
        let ms = try fields.int("ms", in: 0...600_000) ?? 0
        do {
            try await Task.sleep(for: .milliseconds(ms))
        } catch {
            throw CSOPError(.executionFailed, "sleep was cancelled")
        }
        return ["slept": .int(ms)]
    }

    /// `{key, failures}`: fails retryably `failures` times per key, then succeeds with the attempt count.
    private func flaky(_ payload: JSONValue) throws(CSOPError) -> JSONValue {
        let fields = try Fields(payload, path: "payload", allowed: ["key", "failures"])
        let key = try fields.requiredString("key")
        let failures = try fields.requiredInt("failures", in: 0...1000)
        let attempt = flakyCounts.withLock { counts -> Int64 in
            counts[key, default: 0] += 1
            return counts[key]!
        }
        guard attempt > failures else {
            throw CSOPError(.executionFailed, "flaky failure \(attempt) of \(failures)", retryable: true)
        }
        return ["attempts": .int(attempt)]
    }
}

/// The descriptor the library exports. The `csop_plugin_register` symbol itself lives in
/// Plugins/Diag/Export, so tests can link this module without a duplicate symbol.
public func diagPluginDescriptor() -> UnsafeRawPointer { PluginExport.register(DiagPlugin.self) }
