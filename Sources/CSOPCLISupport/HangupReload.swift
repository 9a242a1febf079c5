import CSOPHost
import Dispatch
import Glibc
import Synchronization

/// SIGHUP reloads the serving host's plugins (``CSOPHost/reload()``), as daemons have done
/// since inetd, instead of ending the process. One per process: the latest host installed.
enum HangupReload {
    /// The signal source, kept for the life of the process, and the host it reloads (weak, so
    /// a command's host still goes when the command ends).
    nonisolated(unsafe) private static var source: (any DispatchSourceSignal)?  // Set on the first install only, under `lock`.
    private static let lock = Mutex(())
    private static let target = Mutex<WeakHost?>(nil)

    private final class WeakHost: Sendable {
        weak let host: CSOPHost?
        init(_ host: CSOPHost) { self.host = host }
    }

    static func install(for host: CSOPHost) {
        target.withLock { $0 = WeakHost(host) }
        lock.withLock { _ in
            guard source == nil else { return }
            signal(SIGHUP, SIG_IGN)
            let signalSource = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
            signalSource.setEventHandler {
                guard let host = target.withLock({ $0?.host }) else { return }
                Task { _ = await host.reload() }
            }
            signalSource.resume()
            source = signalSource
        }
    }
}
