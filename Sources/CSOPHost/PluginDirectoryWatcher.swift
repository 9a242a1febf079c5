import Foundation
import Glibc
import Logging
import Synchronization

/// Watches directories with inotify and calls `onChange` once changes to plugin entries
/// (`*.conf`) or libraries (`*.so`, `*.so.N`) have settled: after ``debounce`` milliseconds
/// with no further change (so a library being written, or a burst of edits, is one reload),
/// and at most ``maxDelay`` after the first. `onChange` answers the directories to watch from
/// then on (those of newly loaded libraries are added). Runs on a thread of its own.
final class PluginDirectoryWatcher: Sendable {
    static let debounce: Double = 200
    static let maxDelay: Double = 2000

    private let descriptor: Int32
    private let stopped = Atomic<Bool>(false)

    /// Nil (logged) when inotify is not available.
    init?(directories: [String], logger: Logger, onChange: @escaping @Sendable () -> [String]) {
        let descriptor = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard descriptor >= 0 else {
            logger.warning("cannot watch the plugins directory (inotify: \(String(cString: strerror(errno)))); reload with SIGHUP or host.reload")
            return nil
        }
        self.descriptor = descriptor
        Self.watch(descriptor, directories, logger: logger)
        Thread.detachNewThread { [self] in run(directories: directories, logger: logger, onChange: onChange) }
    }

    private static let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_ATTRIB)

    private static func watch(_ descriptor: Int32, _ directories: [String], logger: Logger) {
        for directory in directories where inotify_add_watch(descriptor, directory, mask) < 0 {
            logger.debug("cannot watch \(directory): \(String(cString: strerror(errno)))")
        }
    }

    private func run(directories: [String], logger: Logger, onChange: @Sendable () -> [String]) {
        var watched = Set(directories)
        var firstChange: Double?
        var lastChange = 0.0
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while !stopped.load(ordering: .acquiring) {
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&poller, 1, firstChange == nil ? 250 : 50)
            let now = monotonicMilliseconds()
            while true {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                guard count > 0 else { break }
                if Self.concernsPlugins(buffer[0..<count]) {
                    if firstChange == nil { firstChange = now }
                    lastChange = now
                }
            }
            guard let first = firstChange, now - lastChange >= Self.debounce || now - first >= Self.maxDelay else { continue }
            firstChange = nil
            if stopped.load(ordering: .acquiring) { break }
            let next = Set(onChange()).subtracting(watched)
            if !next.isEmpty {
                Self.watch(descriptor, Array(next), logger: logger)
                watched.formUnion(next)
            }
        }
        close(descriptor)
    }

    /// True when an event in `events` names a `*.conf` or `*.so*` file, or the watch itself
    /// changed (its directory moved or was deleted: the next reload says what that means).
    static func concernsPlugins(_ events: ArraySlice<UInt8>) -> Bool {
        let header = MemoryLayout<inotify_event>.size
        var offset = events.startIndex
        while offset + header <= events.endIndex {
            let (mask, length) = events.withUnsafeBytes { raw in
                let base = raw.baseAddress! + (offset - events.startIndex)
                return (base.loadUnaligned(fromByteOffset: 4, as: UInt32.self), Int(base.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
            }
            if mask & UInt32(IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW) != 0 { return true }
            let start = offset + header
            let end = min(start + length, events.endIndex)
            let name = events[start..<end].prefix { $0 != 0 }
            let text = String(decoding: name, as: UTF8.self)
            if text.hasSuffix(".conf") || text.hasSuffix(".so") || text.contains(".so.") { return true }
            offset = start + length
        }
        return false
    }

    /// Stops watching within 250 ms (the reloader itself refuses reloads once the host stops).
    func stop() {
        stopped.store(true, ordering: .releasing)
    }
}
