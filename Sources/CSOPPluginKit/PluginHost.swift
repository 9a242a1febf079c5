public import CSOPCore
import CSOPPluginABI

/// The host's services, as a plugin sees them. Thread-safe.
public final class PluginHost: Sendable {
    public enum LogLevel: Int32, Sendable {
        case trace = 0, debug, info, warning, error
    }

    // The table is owned by the host, valid until the plugin is destroyed, and thread-safe.
    private nonisolated(unsafe) let api: UnsafePointer<csop_host_api>

    /// The least table this kit can use: one with `log` and `emit_event`.
    static let minimumTableSize = MemoryLayout<csop_host_api>.offset(of: \csop_host_api.emit_event)! + MemoryLayout<UnsafeRawPointer>.size

    /// - Throws: `PLUGIN_FAULT` when the host's table is smaller than the functions this kit calls.
    init(api: UnsafePointer<csop_host_api>) throws(CSOPError) {
        guard Int(api.pointee.struct_size) >= Self.minimumTableSize else {
            throw CSOPError(
                .pluginFault,
                "the host's service table is \(api.pointee.struct_size) bytes, this plugin needs at least \(Self.minimumTableSize); use a newer host")
        }
        self.api = api
    }

    /// Writes a line to the host's log.
    public func log(_ level: LogLevel, _ message: String) {
        var message = message
        message.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { chars in
                api.pointee.log(api.pointee.host_context, level.rawValue, chars.baseAddress, chars.count)
            }
        }
    }

    /// Pushes an event object to the host's listeners.
    public func emit(_ event: JSONValue) {
        emit(rawJSON: event.serialized())
    }

    /// Pushes an event that is already a serialized JSON object.
    public func emit(rawJSON bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { buffer in
            api.pointee.emit_event(api.pointee.host_context, buffer.baseAddress, buffer.count)
        }
    }
}
