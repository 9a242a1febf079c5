import CSOPHost
import Glibc
import Synchronization

/// SIGHUP reloads the serving host's plugins (``CSOPHost/reload()``), as daemons have done
/// since inetd, instead of ending the process. One per process: the latest host installed.
enum HangupReload {
    /// The watcher, kept for the life of the process once installed, and the host it reloads
    /// (weak, so a command's host still goes when the command ends).
    private static let watcher = Mutex<SignalWatcher?>(nil)
    private static let target = Mutex<WeakHost?>(nil)

    private final class WeakHost: Sendable {
        weak let host: CSOPHost?
        init(_ host: CSOPHost) { self.host = host }
    }

    static func install(for host: CSOPHost) {
        target.withLock { $0 = WeakHost(host) }
        watcher.withLock { watcher in
            guard watcher == nil else { return }
            watcher = SignalWatcher([SIGHUP]) {
                guard let host = target.withLock({ $0?.host }) else { return }
                Task { _ = await host.reload() }
            }
        }
    }
}
