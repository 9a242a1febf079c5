import CSOPCore
import CSOPPluginKit
import Synchronization

/// A diagnostics capability: a no-op for measuring dispatch overhead, and operations
/// that misbehave on purpose so the router's retry, timeout and cancellation can be seen.
final class DiagPlugin: CSOPPlugin {
    static let name = "diag"
    static let version = "1.0.0"
    static let operations = ["noop", "echo", "sleep", "flaky", "fail", "cancelled"]

    private let host: PluginHost
    private let flakyCounts = Mutex<[String: Int64]>([:])
    private let sleepers = Mutex<[UInt64: Task<Void, Never>]>([:])
    private let cancelledCount = Atomic<Int64>(0)

    init(config: JSONValue, host: PluginHost) throws(CSOPError) {
        _ = try Fields(config, path: "config", allowed: [])
        self.host = host
    }

    func invoke(_ call: PluginCall) {
        do {
            switch call.operation {
            case "noop": call.succeed(rawJSON: Self.nullBytes)
            case "echo": call.succeed(call.payload)
            case "sleep": try sleep(call)
            case "flaky": try flaky(call)
            case "fail":
                let fields = try Fields(call.payload, path: "payload", allowed: ["code", "message", "retry"])
                call.fail(
                    CSOPError(
                        ErrorCode(try fields.string("code") ?? "EXECUTION_FAILED"),
                        try fields.string("message") ?? "failed on request",
                        retryable: try fields.bool("retry") ?? false))
            case "cancelled": call.succeed(.int(cancelledCount.load(ordering: .relaxed)))
            default: call.fail(CSOPError(.operationNotFound, "diag has no operation \(call.operation)"))
            }
        } catch {
            call.fail(error)
        }
    }

    func cancel(callID: UInt64) {
        guard let task = sleepers.withLock({ $0.removeValue(forKey: callID) }) else { return }
        cancelledCount.add(1, ordering: .relaxed)
        task.cancel()
    }

    private static let nullBytes: [UInt8] = Array("null".utf8)

    /// `{ms}`: completes after ms milliseconds unless cancelled first.
    private func sleep(_ call: PluginCall) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: ["ms"])
        let ms = try fields.int("ms", in: 0...600_000) ?? 0
        sleepers.withLock { sleepers in
            sleepers[call.id] = Task { [weak self] in
                do {
                    try await Task.sleep(for: .milliseconds(ms))
                    call.succeed(["slept": .int(ms)])
                } catch {
                    call.fail(CSOPError(.executionFailed, "sleep was cancelled"))
                }
                _ = self?.sleepers.withLock { $0.removeValue(forKey: call.id) }
            }
        }
    }

    /// `{key, failures}`: fails retryably `failures` times per key, then succeeds with the attempt count.
    private func flaky(_ call: PluginCall) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: ["key", "failures"])
        let key = try fields.requiredString("key")
        let failures = try fields.requiredInt("failures", in: 0...1000)
        let attempt = flakyCounts.withLock { counts -> Int64 in
            counts[key, default: 0] += 1
            return counts[key]!
        }
        if attempt <= failures {
            call.fail(CSOPError(.executionFailed, "flaky failure \(attempt) of \(failures)", retryable: true))
        } else {
            call.succeed(["attempts": .int(attempt)])
        }
    }
}

/// The descriptor the library exports. The `csop_plugin_register` symbol itself lives in
/// Plugins/Diag/Export, so tests can link this module without a duplicate symbol.
public func diagPluginDescriptor() -> UnsafeRawPointer { PluginExport.register(DiagPlugin.self) }
