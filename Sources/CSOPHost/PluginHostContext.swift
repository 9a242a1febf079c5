import CSOPCore
import CSOPPluginABI
import Logging
import Synchronization

/// What `csop_host_api.host_context` points at for one plugin: its logger and the event hub.
/// Owns the `csop_host_api` table it hands the plugin and frees it when it goes; the plugin
/// capability keeps the context alive until the plugin is destroyed.
final class PluginHostContext: @unchecked Sendable {  // `api` is written once in init and read-only after.
    let name: String
    let logger: Logger
    let events: EventHub
    /// The generation of the instance, set once it is created (its events carry it).
    let generation = Atomic<Int>(0)
    /// The function table for `create`; valid as long as this context.
    let api: UnsafeMutablePointer<csop_host_api>

    init(name: String, logger: Logger, events: EventHub) {
        var logger = logger
        logger[metadataKey: "plugin"] = .string(name)
        self.name = name
        self.logger = logger
        self.events = events
        api = .allocate(capacity: 1)
        api.initialize(
            to: csop_host_api(
                struct_size: UInt32(MemoryLayout<csop_host_api>.size),
                abi_version: CSOP_ABI_VERSION,
                host_context: Unmanaged.passUnretained(self).toOpaque(),
                log: hostLog,
                emit_event: hostEmitEvent))
    }

    deinit {
        api.deinitialize(count: 1)
        api.deallocate()
    }
}

private func hostLog(context: UnsafeMutableRawPointer?, level: Int32, message: UnsafePointer<CChar>?, length: Int) {
    guard let context, let message else { return }
    let host = Unmanaged<PluginHostContext>.fromOpaque(context).takeUnretainedValue()
    let text = String(decoding: UnsafeRawBufferPointer(start: message, count: length), as: UTF8.self)
    host.logger.log(level: PluginHostContext.logLevel(level), "\(text)")
}

extension PluginHostContext {
    /// A `csop_log_level` as swift-log's level (unknown values are errors).
    static func logLevel(_ level: Int32) -> Logger.Level {
        switch level {
        case Int32(CSOP_LOG_TRACE.rawValue): .trace
        case Int32(CSOP_LOG_DEBUG.rawValue): .debug
        case Int32(CSOP_LOG_INFO.rawValue): .info
        case Int32(CSOP_LOG_WARNING.rawValue): .warning
        default: .error
        }
    }
}

private func hostEmitEvent(context: UnsafeMutableRawPointer?, json: UnsafePointer<UInt8>?, length: Int) {
    guard let context, let json, length > 0 else { return }
    let host = Unmanaged<PluginHostContext>.fromOpaque(context).takeUnretainedValue()
    let buffer = UnsafeBufferPointer(start: json, count: length)
    if let problem = HostEvent.problem(buffer) {
        host.logger.error("dropped an event that \(problem)")
        return
    }
    host.events.publish(
        HostEvent(plugin: host.name, generation: host.generation.load(ordering: .relaxed), json: RawJSON(unchecked: Array(buffer))))
}
