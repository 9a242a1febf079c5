import CSOPCore
import CSOPPluginKit
import Dispatch

/// The `sync` capability: broadcasts, subscriptions and presence, within one host process
/// or, with `postgresUrl`, across processes through PostgreSQL LISTEN/NOTIFY.
final class SyncPlugin: CSOPPlugin {
    typealias Operation = SyncEngine.Operation

    static let name = "sync"
    static let version = "1.0.0"

    let engine: SyncEngine
    private let metrics: SyncMetrics

    static func checkConfig(_ config: JSONValue) throws(CSOPError) {
        _ = try SyncConfiguration(config: config)
    }

    init(config: JSONValue, host: PluginHost) throws(CSOPError) {
        let configuration = try SyncConfiguration(config: config)
        engine = SyncEngine(
            configuration: configuration,
            emit: { bytes in host.emit(rawJSON: bytes) },
            log: { level, message in host.log(level, message) })
        metrics = SyncMetrics(cluster: engine.cluster != nil)
        host.log(.info, "sync plugin ready in \(engine.mode) mode as instance \(engine.instanceID)")
    }

    func invoke(_ operation: Operation, _ call: PluginCall) {
        // Traced in cluster mode: the publish through PostgreSQL (NOTIFY) as a span of its own.
        let start = call.isTraced && operation == .broadcast && engine.cluster != nil ? WallClock.nanoseconds() : nil
        engine.perform(operation, call.payload, caller: call.caller, commit: { call.beginCommit() }) { result in
            if let start {
                let error: String? = if case .failure(let failure) = result { failure.code.rawValue } else { nil }
                call.recordSpan("sync.publish", start: start, end: WallClock.nanoseconds(), attributes: ["sync.mode": "cluster"], error: error)
            }
            call.complete(result)
        }
    }

    func writeMetrics(into buffer: inout [UInt8]) { metrics.write(into: &buffer, engine: engine) }

    func shutdown() {
        guard engine.cluster != nil else { return }
        // The host's destroy is synchronous; give the goodbye a bounded time.
        let done = DispatchSemaphore(value: 0)
        let engine = self.engine
        Task {
            await engine.shutdown(goodbye: true)
            done.signal()
        }
        _ = done.wait(timeout: .now() + .seconds(3))
    }
}

/// The descriptor the library exports. The `csop_plugin_register` symbol itself lives in
/// Plugins/Sync/Export, so tests can link this module without a duplicate symbol.
public func syncPluginDescriptor() -> UnsafeRawPointer { PluginExport.register(SyncPlugin.self) }
