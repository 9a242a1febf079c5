public import CSOPCore
import CSOPPluginABI
import Glibc
import Synchronization

/// Drives a plugin through its exported C descriptor, as the host does, without the router:
/// for plugin tests that need the C boundary but not the loader.
public final class PluginHarness: @unchecked Sendable {  // `instance` is set once in init and freed once in close.
    /// One completed call: the raw result bytes or the error.
    public struct Reply: Sendable {
        public var raw: [UInt8]?
        public var error: CSOPError?

        public var value: JSONValue? { raw.flatMap { try? JSONValue(parsing: $0) } }
        public var isOK: Bool { error == nil }
        public var code: String? { error?.code.rawValue }
        public subscript(key: String) -> JSONValue? { value?[key] }
    }

    private static let nextCallID = Atomic<UInt64>(1)
    private let descriptor: UnsafePointer<csop_plugin_descriptor>
    private let hostAPI: UnsafeMutablePointer<csop_host_api>
    private var instance: UnsafeMutableRawPointer?
    private let commits = CommitLedger()
    /// The events the plugin emitted (`emit_event`), in order.
    public let events = EventRecorder()

    /// The descriptor's domain name.
    public var name: String { String(cString: descriptor.pointee.name) }

    /// Creates an instance of the plugin `descriptor` (what its `csop_plugin_register`
    /// returns) from `config`; throws the plugin's create error.
    /// - Parameter hostAPISize: the `struct_size` the host table claims (tests of older hosts).
    public init(descriptor: UnsafeRawPointer, config: JSONValue, hostAPISize: UInt32? = nil) throws(CSOPError) {
        self.descriptor = descriptor.assumingMemoryBound(to: csop_plugin_descriptor.self)
        hostAPI = .allocate(capacity: 1)
        hostAPI.initialize(
            to: csop_host_api(
                struct_size: hostAPISize ?? UInt32(MemoryLayout<csop_host_api>.size), abi_version: CSOP_ABI_VERSION,
                // Unretained: `events` lives as long as the harness, which destroys the instance first.
                host_context: Unmanaged.passUnretained(events).toOpaque(),
                log: { _, _, _, _ in },
                emit_event: { context, json, length in
                    guard let context, let json else { return }
                    Unmanaged<EventRecorder>.fromOpaque(context).takeUnretainedValue().record(Array(UnsafeBufferPointer(start: json, count: length)))
                }))
        let bytes = config.serialized()
        var created: UnsafeMutableRawPointer?
        var error = csop_error()
        let status = bytes.withUnsafeBufferPointer { buffer in
            self.descriptor.pointee.create(hostAPI, buffer.baseAddress, buffer.count, &created, &error)
        }
        guard status == 0, let created else {
            hostAPI.deallocate()
            throw CSOPError(abi: error, plugin: String(cString: self.descriptor.pointee.name), fallback: "INIT_FAILED")
        }
        instance = created
    }

    deinit { close() }

    /// Destroys the instance (idempotent).
    public func close() {
        guard let instance else { return }
        descriptor.pointee.destroy(instance)
        self.instance = nil
        hostAPI.deallocate()
    }

    /// Runs `operation` with a payload (an object in normal use) and waits for its completion.
    /// - Parameters:
    ///   - caller: who the call runs for, in the `csop_call` caller fields; nil for the owner.
    ///   - callStructSize: the `struct_size` the call claims (tests of older hosts, e.g. the
    ///     offset of `tenant` for a host without the caller fields).
    public func call(
        _ operation: String, _ payload: JSONValue, callID: UInt64? = nil, caller: Caller? = nil, callStructSize: UInt32? = nil
    ) async -> Reply {
        await call(operation, rawPayload: payload.serialized(), callID: callID, caller: caller, callStructSize: callStructSize)
    }

    /// The `struct_size` of a `csop_call` from a host older than the caller fields.
    public static let callSizeWithoutCaller = UInt32(MemoryLayout<csop_call>.offset(of: \csop_call.tenant)!)

    /// Runs `operation` with raw payload bytes; an unknown name is sent as operation number 999.
    public func call(
        _ operation: String, rawPayload: [UInt8], callID: UInt64? = nil, caller: Caller? = nil, callStructSize: UInt32? = nil
    ) async -> Reply {
        let id = callID ?? Self.newCallID()
        let index = operationIndex(operation)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Reply, Never>) in
            let box = Unmanaged.passRetained(CallBox(continuation, commits: commits))
            let name = strdup(operation)!
            let payload = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(rawPayload.count, 1))
            _ = payload.initialize(from: rawPayload)
            let call = UnsafeMutablePointer<csop_call>.allocate(capacity: 1)
            call.initialize(to: csop_call())
            call.pointee.struct_size = callStructSize ?? UInt32(MemoryLayout<csop_call>.size)
            call.pointee.call_id = id
            call.pointee.operation = UnsafePointer(name)
            call.pointee.operation_length = operation.utf8.count
            call.pointee.operation_index = UInt32(index)
            call.pointee.payload = UnsafePointer(payload.baseAddress)
            call.pointee.payload_length = rawPayload.count
            call.pointee.timeout_ms = 30_000
            call.pointee.host_reserved = box.toOpaque()
            call.pointee.begin_commit = { call in
                guard let call else { return 0 }
                let box = Unmanaged<CallBox>.fromOpaque(call.pointee.host_reserved).takeUnretainedValue()
                return box.commits.beginCommit(call.pointee.call_id) ? 1 : 0
            }
            call.pointee.complete = { call, outcome in
                guard let call, let outcome else { return }
                let box = Unmanaged<CallBox>.fromOpaque(call.pointee.host_reserved).takeRetainedValue()
                var reply = Reply()
                if outcome.pointee.status == Int32(CSOP_STATUS_OK) {
                    reply.raw = outcome.pointee.data.map { Array(UnsafeBufferPointer(start: $0, count: outcome.pointee.data_length)) } ?? Array("null".utf8)
                } else {
                    reply.error = CSOPError(abi: outcome.pointee.error, plugin: "plugin")
                }
                free(UnsafeMutableRawPointer(mutating: call.pointee.operation))
                let mutableCall = UnsafeMutablePointer(mutating: call)
                mutableCall.deallocate()
                box.continuation.resume(returning: reply)
            }
            // The caller's strings, like the payload, are valid only during invoke.
            let callerStrings = caller.map { [strdup($0.tenant)!, strdup($0.subject)!, strdup($0.actions.description)!] } ?? []
            if callerStrings.count == 3 {
                call.pointee.tenant = UnsafePointer(callerStrings[0])
                call.pointee.tenant_length = strlen(callerStrings[0])
                call.pointee.subject = UnsafePointer(callerStrings[1])
                call.pointee.subject_length = strlen(callerStrings[1])
                call.pointee.actions = UnsafePointer(callerStrings[2])
                call.pointee.actions_length = strlen(callerStrings[2])
            }
            descriptor.pointee.invoke(instance, call)
            payload.deallocate()
            for string in callerStrings { free(string) }
        }
    }

    /// Tells the plugin the host abandoned `callID`, as a router timeout does: from now on the
    /// call's `begin_commit` answers 0, unless the plugin began committing already.
    /// - Returns: false when the call had begun committing (a router would have waited for it
    ///   instead of cancelling; the plugin is told anyway).
    @discardableResult
    public func cancel(_ callID: UInt64) -> Bool {
        let abandoned = commits.abandon(callID)
        descriptor.pointee.cancel?(instance, callID)
        return abandoned
    }

    /// Calls that began committing (`begin_commit` answered 1), in order.
    public var committedCalls: [UInt64] { commits.committed }

    public static func newCallID() -> UInt64 { nextCallID.add(1, ordering: .relaxed).newValue + 1_000_000 }

    private func operationIndex(_ name: String) -> Int {
        for i in 0..<descriptor.pointee.operation_count where String(cString: descriptor.pointee.operations[i]!) == name {
            return i
        }
        return 999
    }
}

private final class CallBox {
    let continuation: CheckedContinuation<PluginHarness.Reply, Never>
    let commits: CommitLedger
    init(_ continuation: CheckedContinuation<PluginHarness.Reply, Never>, commits: CommitLedger) {
        self.continuation = continuation
        self.commits = commits
    }
}

/// What the router decides about commits, for the harness: a call may begin committing until
/// it is abandoned, and is not abandoned once committing.
final class CommitLedger: Sendable {
    private let state = Mutex<(abandoned: Set<UInt64>, committing: Set<UInt64>, order: [UInt64])>(([], [], []))

    func beginCommit(_ id: UInt64) -> Bool {
        state.withLock { state in
            guard !state.abandoned.contains(id) else { return false }
            if state.committing.insert(id).inserted { state.order.append(id) }
            return true
        }
    }

    func abandon(_ id: UInt64) -> Bool {
        state.withLock { state in
            guard !state.committing.contains(id) else { return false }
            state.abandoned.insert(id)
            return true
        }
    }

    var committed: [UInt64] { state.withLock { $0.order } }
}

