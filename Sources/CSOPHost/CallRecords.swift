import CSOPCore
import CSOPPluginABI
import Logging
import Synchronization

/// Keeps completed `csop_call` structs readable for a while, so a plugin that completes a call
/// twice (a contract violation) finds `host_reserved` empty and is reported as `PLUGIN_FAULT`
/// in the log, changing nothing, instead of corrupting the host.
///
/// A completed struct waits in a ring of ``quarantine`` entries before it is freed: a second
/// completion later than that many other completions still reads freed memory — the guard
/// covers the bugs that happen (a completion doubled on an error path, or from two threads),
/// not a plugin that keeps call pointers forever.
final class CallRecords: Sendable {
    static let shared = CallRecords()

    /// How many completed calls stay readable.
    static let quarantine = 4096

    private struct Ring: @unchecked Sendable {  // Raw pointers owned by the ring, touched under its lock only.
        var slots = [UnsafeMutablePointer<csop_call>?](repeating: nil, count: CallRecords.quarantine)
        var next = 0
    }

    private let ring = Mutex(Ring())
    private let plugins = Mutex<[(name: String, logger: Logger)]>([])
    private let secondCompletions = Atomic<Int>(0)

    /// Registers a plugin for fault reports. - Returns: its id for `csop_call.reserved`.
    func register(plugin name: String, logger: Logger) -> UInt32 {
        plugins.withLock { plugins in
            plugins.append((name, logger))
            return UInt32(plugins.count - 1)
        }
    }

    /// A call completed for the first time: keep its struct readable, free the oldest.
    func retire(_ call: UnsafeMutablePointer<csop_call>) {
        let oldest = ring.withLock { ring -> UnsafeMutablePointer<csop_call>? in
            defer { ring.next = (ring.next + 1) % Self.quarantine }
            let oldest = ring.slots[ring.next]
            ring.slots[ring.next] = call
            return oldest
        }
        oldest?.deallocate()
    }

    /// A completion of a call that was already completed.
    func reportSecondCompletion(_ call: UnsafeMutablePointer<csop_call>) {
        secondCompletions.add(1, ordering: .relaxed)
        let id = Int(call.pointee.reserved)
        let plugin = plugins.withLock { id < $0.count ? $0[id] : nil }
        let message: Logger.Message =
            "PLUGIN_FAULT: plugin \(plugin?.name ?? "unknown") completed call \(call.pointee.call_id) again; the second completion was ignored (complete each call exactly once)"
        if let plugin { plugin.logger.error(message) } else { Logger(label: "csop").error(message) }
    }

    /// Second completions seen in this process.
    var secondCompletionCount: Int { secondCompletions.load(ordering: .relaxed) }
}
