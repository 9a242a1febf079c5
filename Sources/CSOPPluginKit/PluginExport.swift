public import CSOPCore
import CSOPPluginABI
import Glibc
import Synchronization

/// Builds the C descriptor for a Swift plugin type. Call it from the library's
/// `csop_plugin_register` function; each library exports one plugin type.
///
/// `create` and `check_config` receive no descriptor, so each registered type gets its own
/// pair of C entry points from a fixed set of slots: a library holds one type, and a process
/// that links several plugin modules statically (a test bundle) up to ``maxTypes``.
public enum PluginExport {
    /// How many plugin types one process can register.
    public static let maxTypes = 8

    /// Returns the static descriptor for `type` (a `const csop_plugin_descriptor *`).
    ///
    /// Inlinable so that the per-call path (``TypedInstance``) is specialized for `type` in the
    /// plugin's own module: unspecialized generic code cost the no-op dispatch about 0.2 µs.
    @inlinable
    public static func register<P: CSOPPlugin>(_ type: P.Type) -> UnsafeRawPointer {
        register(
            ObjectIdentifier(type), name: P.name, version: P.version, operations: P.operationNames,
            factory: PluginFactory(
                create: { config, host throws(CSOPError) in TypedInstance(try P(config: config, host: host)) },
                check: { config throws(CSOPError) in try P.checkConfig(config) }))
    }

    @usableFromInline
    static func register(
        _ key: ObjectIdentifier, name: String, version: String, operations: [String], factory: PluginFactory
    ) -> UnsafeRawPointer {
        exported.withLock { state in
            if let slot = state.slots[key] { return UnsafeRawPointer(state.descriptors[slot]) }
            let slot = state.descriptors.count
            precondition(slot < maxTypes, "PluginExport: more than \(maxTypes) plugin types registered in one process")
            state.factories.append(factory)
            state.descriptors.append(makeDescriptor(name: name, version: version, operations: operations, slot: slot))
            state.slots[key] = slot
            return UnsafeRawPointer(state.descriptors[slot])
        }
    }

    private struct State: @unchecked Sendable {  // Appended to under the lock only; each descriptor is immutable once built.
        var slots: [ObjectIdentifier: Int] = [:]
        var factories: [PluginFactory] = []
        var descriptors: [UnsafeMutablePointer<csop_plugin_descriptor>] = []
    }

    private static let exported = Mutex(State())

    static func factory(slot: Int) -> PluginFactory? {
        exported.withLock { slot < $0.factories.count ? $0.factories[slot] : nil }
    }

    // The descriptor and its strings live as long as the library: the host may read them at any time.
    private static func makeDescriptor(name: String, version: String, operations names: [String], slot: Int) -> UnsafeMutablePointer<csop_plugin_descriptor> {
        let operations = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: names.count)
        for (i, name) in names.enumerated() { operations[i] = UnsafePointer(strdup(name)) }
        let descriptor = UnsafeMutablePointer<csop_plugin_descriptor>.allocate(capacity: 1)
        descriptor.initialize(
            to: csop_plugin_descriptor(
                magic: CSOP_PLUGIN_MAGIC,
                abi_version: CSOP_ABI_VERSION,
                struct_size: UInt32(MemoryLayout<csop_plugin_descriptor>.size),
                reserved: 0,
                name: UnsafePointer(strdup(name)),
                version: UnsafePointer(strdup(version)),
                operations: UnsafePointer(operations),
                operation_count: names.count,
                create: createEntryPoints[slot],
                invoke: pluginInvoke,
                cancel: pluginCancel,
                destroy: pluginDestroy,
                check_config: checkEntryPoints[slot],
                write_metrics: pluginWriteMetrics))
        return descriptor
    }
}

private typealias CreateFunction = @convention(c) (
    UnsafePointer<csop_host_api>?, UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    UnsafeMutablePointer<csop_error>?
) -> Int32
private typealias CheckFunction = @convention(c) (UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<csop_error>?) -> Int32

// One entry point per slot: a C function cannot capture which type it creates.
private let createEntryPoints: [CreateFunction] = [
    { pluginCreate(slot: 0, $0, $1, $2, $3, $4) }, { pluginCreate(slot: 1, $0, $1, $2, $3, $4) },
    { pluginCreate(slot: 2, $0, $1, $2, $3, $4) }, { pluginCreate(slot: 3, $0, $1, $2, $3, $4) },
    { pluginCreate(slot: 4, $0, $1, $2, $3, $4) }, { pluginCreate(slot: 5, $0, $1, $2, $3, $4) },
    { pluginCreate(slot: 6, $0, $1, $2, $3, $4) }, { pluginCreate(slot: 7, $0, $1, $2, $3, $4) },
]
private let checkEntryPoints: [CheckFunction] = [
    { pluginCheckConfig(slot: 0, $0, $1, $2) }, { pluginCheckConfig(slot: 1, $0, $1, $2) },
    { pluginCheckConfig(slot: 2, $0, $1, $2) }, { pluginCheckConfig(slot: 3, $0, $1, $2) },
    { pluginCheckConfig(slot: 4, $0, $1, $2) }, { pluginCheckConfig(slot: 5, $0, $1, $2) },
    { pluginCheckConfig(slot: 6, $0, $1, $2) }, { pluginCheckConfig(slot: 7, $0, $1, $2) },
]

/// How the C entry points make and check instances of the exported type.
@usableFromInline
struct PluginFactory: Sendable {
    var create: @Sendable (JSONValue, PluginHost) throws(CSOPError) -> PluginInstance
    var check: @Sendable (JSONValue) throws(CSOPError) -> Void

    @usableFromInline
    init(
        create: @escaping @Sendable (JSONValue, PluginHost) throws(CSOPError) -> PluginInstance,
        check: @escaping @Sendable (JSONValue) throws(CSOPError) -> Void
    ) {
        self.create = create
        self.check = check
    }
}

/// What the host's `void *instance` points at.
@usableFromInline
class PluginInstance {
    /// The host's services the instance was made with; closed by destroy.
    var host: PluginHost?
    @usableFromInline init() {}
    @usableFromInline func invoke(_ call: PluginCall, index: Int) {}
    @usableFromInline func cancel(callID: UInt64) {}
    @usableFromInline func shutdown() {}
    @usableFromInline func writeMetrics(into buffer: inout [UInt8]) {}
}

@usableFromInline
final class TypedInstance<P: CSOPPlugin>: PluginInstance {
    @usableFromInline let plugin: P
    @usableFromInline let operations: [P.Operation]

    @inlinable
    init(_ plugin: P) {
        self.plugin = plugin
        self.operations = Array(P.Operation.allCases)
    }

    @inlinable
    override func invoke(_ call: PluginCall, index: Int) {
        guard index >= 0, index < operations.count else {
            return call.fail(CSOPError(.operationNotFound, "\(P.name) has no operation number \(index)"))
        }
        plugin.invoke(operations[index], call)
    }

    @inlinable override func cancel(callID: UInt64) { plugin.cancel(callID: callID) }
    @inlinable override func shutdown() { plugin.shutdown() }
    @inlinable override func writeMetrics(into buffer: inout [UInt8]) { plugin.writeMetrics(into: &buffer) }
}

/// The strings of the last failed `create` or `check_config` on one thread: the host copies
/// them as soon as the call returns (see csop_plugin.h), and the next failure on that thread
/// frees them, so failures cost no leak.
private struct ErrorStrings: @unchecked Sendable {  // Owned by the table below; freed only under its lock.
    let code: UnsafeMutablePointer<CChar>
    let message: UnsafeMutablePointer<CChar>
}

private let lastErrors = Mutex<[UInt: ErrorStrings]>([:])

private func report(_ failure: CSOPError, into error: UnsafeMutablePointer<csop_error>?) -> Int32 {
    guard let error else { return 1 }
    let strings = ErrorStrings(code: strdup(failure.code.rawValue)!, message: strdup(failure.message)!)
    let thread = UInt(bitPattern: Int(bitPattern: pthread_self()))
    if let previous = lastErrors.withLock({ $0.updateValue(strings, forKey: thread) }) {
        free(previous.code)
        free(previous.message)
    }
    error.pointee = csop_error(
        code: UnsafePointer(strings.code), message: UnsafePointer(strings.message), message_length: strlen(strings.message),
        retryable: failure.retryable ? 1 : 0)
    return 1
}

private func parseConfig(_ config: UnsafePointer<UInt8>?, _ length: Int) throws(CSOPError) -> JSONValue {
    guard let config, length > 0 else { return .object(JSONObject()) }
    let value: JSONValue
    do throws(JSONParseError) {
        value = try JSONParser.parse(UnsafeBufferPointer(start: config, count: length))
    } catch {
        throw .invalidPayload("plugin config is not valid JSON: \(error)")
    }
    guard case .object = value else { throw .invalidPayload("plugin config must be a JSON object, got \(value.typeName)") }
    return value
}

private func pluginCreate(
    slot: Int, _ host: UnsafePointer<csop_host_api>?, _ config: UnsafePointer<UInt8>?, _ configLength: Int,
    _ instance: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ errorOut: UnsafeMutablePointer<csop_error>?
) -> Int32 {
    guard let host, let instance, let factory = PluginExport.factory(slot: slot) else {
        return report(CSOPError(.notInitialized, "plugin registration incomplete"), into: errorOut)
    }
    do throws(CSOPError) {
        let services = try PluginHost(api: host)
        let created = try factory.create(try parseConfig(config, configLength), services)
        created.host = services
        instance.pointee = Unmanaged.passRetained(created).toOpaque()
        return 0
    } catch {
        return report(error, into: errorOut)
    }
}

private func pluginCheckConfig(
    slot: Int, _ config: UnsafePointer<UInt8>?, _ configLength: Int, _ errorOut: UnsafeMutablePointer<csop_error>?
) -> Int32 {
    guard let factory = PluginExport.factory(slot: slot) else {
        return report(CSOPError(.notInitialized, "plugin registration incomplete"), into: errorOut)
    }
    do throws(CSOPError) {
        try factory.check(try parseConfig(config, configLength))
        return 0
    } catch {
        return report(error, into: errorOut)
    }
}

private func pluginInvoke(instance: UnsafeMutableRawPointer?, call: UnsafePointer<csop_call>?) {
    guard let instance, let call else { return }
    let plugin = Unmanaged<PluginInstance>.fromOpaque(instance).takeUnretainedValue()
    let caller: Caller?
    do throws(CSOPError) {
        caller = try PluginCall.caller(of: call)
    } catch {
        PluginCall(raw: call, payload: .null, caller: nil).fail(error)
        return
    }
    let payload: JSONValue
    if let bytes = call.pointee.payload, call.pointee.payload_length > 0 {
        do {
            payload = try JSONParser.parse(UnsafeBufferPointer(start: bytes, count: call.pointee.payload_length))
        } catch {
            PluginCall(raw: call, payload: .null, caller: caller).fail(.invalidPayload("payload is not valid JSON: \(error)"))
            return
        }
    } else {
        payload = .object(JSONObject())
    }
    plugin.invoke(PluginCall(raw: call, payload: payload, caller: caller), index: Int(call.pointee.operation_index))
}

private func pluginCancel(instance: UnsafeMutableRawPointer?, callID: UInt64) {
    guard let instance else { return }
    Unmanaged<PluginInstance>.fromOpaque(instance).takeUnretainedValue().cancel(callID: callID)
}

private func pluginWriteMetrics(
    instance: UnsafeMutableRawPointer?, context: UnsafeMutableRawPointer?,
    write: (@convention(c) (UnsafeMutableRawPointer?, UnsafePointer<UInt8>?, Int) -> Void)?
) {
    guard let instance, let write else { return }
    var text: [UInt8] = []
    Unmanaged<PluginInstance>.fromOpaque(instance).takeUnretainedValue().writeMetrics(into: &text)
    text.withUnsafeBufferPointer { write(context, $0.baseAddress, $0.count) }
}

private func pluginDestroy(instance: UnsafeMutableRawPointer?) {
    guard let instance else { return }
    let box = Unmanaged<PluginInstance>.fromOpaque(instance)
    box.takeUnretainedValue().shutdown()
    // Background work the plugin did not stop may still log or emit: from here on that does
    // nothing, so it never reaches the table the host frees once this returns.
    box.takeUnretainedValue().host?.close()
    box.release()
}
