public import CSOPCore
import CSOPPluginABI
import Glibc
import Synchronization

/// The host's services, as a plugin sees them. Thread-safe.
public final class PluginHost: Sendable {
    public enum LogLevel: Int32, Sendable {
        case trace = 0, debug, info, warning, error
    }

    // The table is owned by the host, valid until the plugin is destroyed, and thread-safe.
    // Every use is inside `gate`, which destroy closes before returning (see `close()`).
    private nonisolated(unsafe) let api: UnsafePointer<csop_host_api>
    /// Callbacks under way (the low bits) and, in the sign bit, closed.
    private let gate = Atomic<Int>(0)

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

    /// Writes a line to the host's log; nothing once the plugin is destroyed (a background task
    /// that outlives `shutdown` may still call it).
    public func log(_ level: LogLevel, _ message: String) {
        guard enter() else { return }
        defer { leave() }
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

    /// Pushes an event that is already a serialized JSON object; nothing once the plugin is
    /// destroyed.
    public func emit(rawJSON bytes: [UInt8]) {
        guard enter() else { return }
        defer { leave() }
        bytes.withUnsafeBufferPointer { buffer in
            api.pointee.emit_event(api.pointee.host_context, buffer.baseAddress, buffer.count)
        }
    }

    @inline(__always) private func enter() -> Bool {
        guard gate.wrappingAdd(1, ordering: .acquiring).newValue < 0 else { return true }
        gate.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    @inline(__always) private func leave() {
        gate.wrappingSubtract(1, ordering: .releasing)
    }

    /// Called by destroy after the plugin's `shutdown`, before the host frees its table: later
    /// calls do nothing, and this returns once the calls under way have returned.
    func close() {
        gate.bitwiseOr(Int.min, ordering: .acquiringAndReleasing)
        while gate.load(ordering: .acquiring) & Int.max != 0 { sched_yield() }
    }
}
