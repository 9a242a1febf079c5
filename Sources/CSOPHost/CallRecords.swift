import CSOPCore
import CSOPHostShims
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

    /// How many completed calls stay readable (a power of two).
    static let quarantine = 4096

    // The ring: `quarantine` pointer slots written with an atomic exchange at a position
    // taken from an atomic counter, so retiring a call takes no lock on the hot path.
    private nonisolated(unsafe) let slots: UnsafeMutablePointer<UnsafeMutableRawPointer?>  // Touched only through csop_exchange_pointer.
    private let next = Atomic<Int>(0)
    private let plugins = Mutex<[(name: String, logger: Logger)]>([])
    private let secondCompletions = Atomic<Int>(0)

    private init() {
        slots = .allocate(capacity: Self.quarantine)
        slots.initialize(repeating: nil, count: Self.quarantine)
    }

    /// Registers a plugin for fault reports. - Returns: its id for `csop_call.reserved`.
    func register(plugin name: String, logger: Logger) -> UInt32 {
        plugins.withLock { plugins in
            plugins.append((name, logger))
            return UInt32(plugins.count - 1)
        }
    }

    /// A call completed for the first time: keep its struct readable, free the oldest.
    func retire(_ call: UnsafeMutablePointer<csop_call>) {
        let position = next.add(1, ordering: .relaxed).oldValue & (Self.quarantine - 1)
        let oldest = csop_exchange_pointer(slots + position, UnsafeMutableRawPointer(call))
        oldest?.assumingMemoryBound(to: csop_call.self).deallocate()
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

    /// The logger of the plugin that registered `id` (`csop_call.reserved`), for a log line
    /// about a call that was already completed.
    func logger(of id: UInt32) -> Logger? {
        plugins.withLock { Int(id) < $0.count ? $0[Int(id)].logger : nil }
    }

    /// Second completions seen in this process.
    var secondCompletionCount: Int { secondCompletions.load(ordering: .relaxed) }
}
