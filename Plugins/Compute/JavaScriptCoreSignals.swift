import Glibc

/// Moves JavaScriptCore's thread suspend/resume signal off SIGUSR1.
///
/// JavaScriptCore (WTF, `Thread::initializePlatformThreading`) suspends threads for its
/// garbage collector with a signal, SIGUSR1 unless `JSC_SIGNAL_FOR_GC` names another, and
/// installs a process-wide handler for it that assumes every delivery comes from its own
/// `Thread::suspend`: a SIGUSR1 from outside (`kill -USR1`, a log-rotation script) makes that
/// handler dereference a null thread and the whole host dies with SIGSEGV.
///
/// Libraries should not set process-wide state lightly, so this does the least that helps,
/// once per process and before any worker starts JavaScriptCore: when the user has not set
/// `JSC_SIGNAL_FOR_GC`, it calls JavaScriptCore's own `JSConfigureSignalForGC` (exported on
/// Linux, not in the public headers) with a real-time signal nobody handles yet, the highest
/// of SIGRTMIN…SIGRTMAX (signals no one sends by habit). The environment is left
/// untouched (`setenv` is unsafe in a threaded host). SIGUSR1 then keeps its default action
/// for the host to handle or not, as SIGUSR2 does (this JavaScriptCore installs no handler for
/// it: its VM traps poll).
enum JavaScriptCoreSignals {
    /// What the set-up came to.
    enum Outcome: Sendable, Equatable, CustomStringConvertible {
        /// JavaScriptCore suspends threads with this real-time signal.
        case moved(signal: Int32)
        /// `JSC_SIGNAL_FOR_GC` is set: JavaScriptCore uses what it names.
        case chosenByEnvironment(String)
        /// JavaScriptCore had started before, already off SIGUSR1 (another copy of this plugin
        /// in the process, or the embedder, moved it).
        case movedEarlier
        /// JavaScriptCore had started before the compute plugin loaded; its signal stays.
        case tooLate
        /// This JavaScriptCore cannot be configured, or no real-time signal is free.
        case unavailable(String)

        var description: String {
            switch self {
            case .moved(let signal):
                "JavaScriptCore suspends threads with signal \(signal) (a real-time signal) instead of SIGUSR1"
            case .chosenByEnvironment(let value):
                "JavaScriptCore suspends threads with JSC_SIGNAL_FOR_GC=\(value) from the environment"
            case .movedEarlier:
                "JavaScriptCore had started already, suspending threads with a signal other than SIGUSR1"
            case .tooLate:
                "JavaScriptCore started before the compute plugin, so it still suspends threads with SIGUSR1 and a SIGUSR1 from outside crashes the process; set JSC_SIGNAL_FOR_GC to a free real-time signal"
            case .unavailable(let reason):
                "JavaScriptCore still suspends threads with SIGUSR1 (\(reason)); a SIGUSR1 from outside crashes the process; set JSC_SIGNAL_FOR_GC to a free real-time signal"
            }
        }
    }

    /// Runs the set-up on first use; later uses return the same outcome.
    static let setUp: Outcome = configure()

    private static func configure() -> Outcome {
        if let value = getenv("JSC_SIGNAL_FOR_GC") { return .chosenByEnvironment(String(cString: value)) }
        guard let configureSignal = JavaScriptCorePrivate.shared.configureSignalForGC else {
            return .unavailable("this JavaScriptCore does not export JSConfigureSignalForGC")
        }
        guard let signal = freeRealTimeSignal() else { return .unavailable("no real-time signal is free") }
        if configureSignal(signal) { return .moved(signal: signal) }
        // Started already: its handler is installed on whichever signal it uses.
        var current = sigaction()
        let onSIGUSR1 = sigaction(SIGUSR1, nil, &current) == 0 && current.sa_flags & SA_SIGINFO != 0
        return onSIGUSR1 ? .tooLate : .movedEarlier
    }

    /// The highest real-time signal whose action is still the default. (Whether a thread blocks
    /// it does not matter: JavaScriptCore unblocks it on every thread that enters its VM.)
    private static func freeRealTimeSignal() -> Int32? {
        var signal = __libc_current_sigrtmax()
        while signal >= __libc_current_sigrtmin() {
            var current = sigaction()
            if sigaction(signal, nil, &current) == 0, current.__sigaction_handler.sa_handler == nil, current.sa_flags & SA_SIGINFO == 0 {
                return signal
            }
            signal -= 1
        }
        return nil
    }
}
