import CSOPCore
import CSOPPluginABI
import Synchronization
import Glibc

/// Builds the C descriptor for a Swift plugin type. Call it from the library's
/// `csop_plugin_register` function; each library exports one plugin type.
public enum PluginExport {
    /// Returns the static descriptor for `type` (a `const csop_plugin_descriptor *`).
    public static func register<P: CSOPPlugin>(_ type: P.Type) -> UnsafeRawPointer {
        exported.withLock { state in
            if let descriptor = state.descriptor { return UnsafeRawPointer(descriptor) }
            let descriptor = makeDescriptor(type)
            state.type = type
            state.descriptor = descriptor
            return UnsafeRawPointer(descriptor)
        }
    }

    private struct State: @unchecked Sendable {  // The descriptor is immutable once built.
        var type: (any CSOPPlugin.Type)?
        var descriptor: UnsafeMutablePointer<csop_plugin_descriptor>?
    }

    private static let exported = Mutex(State())

    static var pluginType: (any CSOPPlugin.Type)? { exported.withLock { $0.type } }

    private static func makeDescriptor<P: CSOPPlugin>(_ type: P.Type) -> UnsafeMutablePointer<csop_plugin_descriptor> {
        let operations = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: P.operations.count)
        for (i, name) in P.operations.enumerated() { operations[i] = UnsafePointer(strdup(name)) }
        let descriptor = UnsafeMutablePointer<csop_plugin_descriptor>.allocate(capacity: 1)
        descriptor.initialize(
            to: csop_plugin_descriptor(
                magic: CSOP_PLUGIN_MAGIC,
                abi_version: CSOP_ABI_VERSION,
                struct_size: UInt32(MemoryLayout<csop_plugin_descriptor>.size),
                reserved: 0,
                name: UnsafePointer(strdup(P.name)),
                version: UnsafePointer(strdup(P.version)),
                operations: UnsafePointer(operations),
                operation_count: P.operations.count,
                create: pluginCreate,
                invoke: pluginInvoke,
                cancel: pluginCancel,
                destroy: pluginDestroy))
        return descriptor
    }
}

/// What the host's `void *instance` points at.
private final class PluginInstance {
    let plugin: any CSOPPlugin
    init(plugin: any CSOPPlugin) { self.plugin = plugin }
}

private func pluginCreate(
    host: UnsafePointer<csop_host_api>?, config: UnsafePointer<UInt8>?, configLength: Int,
    instance: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, error: UnsafeMutablePointer<csop_error>?
) -> Int32 {
    func fail(_ failure: CSOPError) -> Int32 {
        // The host reads these after create returns; they live for the library's lifetime.
        error?.pointee = csop_error(
            code: UnsafePointer(strdup(failure.code.rawValue)),
            message: UnsafePointer(strdup(failure.message)),
            message_length: failure.message.utf8.count,
            retryable: failure.retryable ? 1 : 0)
        return 1
    }
    guard let host, let instance, let type = PluginExport.pluginType else {
        return fail(CSOPError(.notInitialized, "plugin registration incomplete"))
    }
    let configValue: JSONValue
    if let config, configLength > 0 {
        do {
            configValue = try JSONParser.parse(UnsafeBufferPointer(start: config, count: configLength))
        } catch {
            return fail(.invalidPayload("plugin config is not valid JSON: \(error)"))
        }
    } else {
        configValue = .object(JSONObject())
    }
    do {
        let plugin = try type.init(config: configValue, host: PluginHost(api: host))
        instance.pointee = Unmanaged.passRetained(PluginInstance(plugin: plugin)).toOpaque()
        return 0
    } catch {
        return fail(error)
    }
}

private func pluginInvoke(instance: UnsafeMutableRawPointer?, call: UnsafePointer<csop_call>?) {
    guard let instance, let call else { return }
    let plugin = Unmanaged<PluginInstance>.fromOpaque(instance).takeUnretainedValue().plugin
    let payload: JSONValue
    if let bytes = call.pointee.payload, call.pointee.payload_length > 0 {
        do {
            payload = try JSONParser.parse(UnsafeBufferPointer(start: bytes, count: call.pointee.payload_length))
        } catch {
            PluginCall(raw: call, payload: .null).fail(.invalidPayload("payload is not valid JSON: \(error)"))
            return
        }
    } else {
        payload = .object(JSONObject())
    }
    plugin.invoke(PluginCall(raw: call, payload: payload))
}

private func pluginCancel(instance: UnsafeMutableRawPointer?, callID: UInt64) {
    guard let instance else { return }
    Unmanaged<PluginInstance>.fromOpaque(instance).takeUnretainedValue().plugin.cancel(callID: callID)
}

private func pluginDestroy(instance: UnsafeMutableRawPointer?) {
    guard let instance else { return }
    let box = Unmanaged<PluginInstance>.fromOpaque(instance)
    box.takeUnretainedValue().plugin.shutdown()
    box.release()
}
