import Dispatch
import Glibc

/// Turns signals into a call: graceful shutdown, and SIGHUP's reload (``HangupReload``).
public final class SignalWatcher: @unchecked Sendable {  // Dispatch sources are thread-safe; the array is immutable.
    private let sources: [any DispatchSourceSignal]

    /// The signals that stop a serving command gracefully: SIGINT, SIGTERM and SIGQUIT (which
    /// would otherwise print a crash report and, with the Swift backtracer, keep serving).
    public static let stopSignals = [SIGINT, SIGTERM, SIGQUIT]

    public init(_ signals: [Int32], handler: @escaping @Sendable () -> Void) {
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }

    public func cancel() { for source in sources { source.cancel() } }
}
