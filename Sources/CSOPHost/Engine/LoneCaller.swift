import CSOPCore
import Synchronization

/// `await`s a dispatch, and when it is the only one the process has in flight, waits for a quick
/// answer on the calling thread for a moment before suspending.
///
/// An answer that comes from another thread (a compute worker's) resumes a suspended task
/// through the executor, which costs a thread wake-up when the executor's threads have gone
/// to sleep: 10–20 µs on top of a 10 µs task, or not, from run to run. A caller that waits
/// alone keeps its thread awake for up to ``spinMicroseconds`` (``spinWait(milliseconds:busyMilliseconds:until:)``:
/// busy at first, then yielding the CPU between looks), so the answer finds it running and the
/// task goes on without suspending. Under load (more than one `await`ed dispatch in flight)
/// nobody waits: the threads are busy anyway, and waiting would take them from other work.
/// Answers given inline never wait, nor do callers of a plugin in a child process (the child
/// needs the core; waiting tripled that round trip) or on a machine with one core.
///
/// A late answer (its caller gave up and suspended) may overwrite a newer caller's ticket in
/// ``answered``; that caller then suspends too, which costs it the wake-up, never its answer:
/// every answer also resumes its continuation.
final class LoneCaller: Sendable {
    /// One for the process, shared by its hosts: "alone" counts every host's `await`ed
    /// dispatches, as the executor's threads that a wait would hold are the process's.
    static let shared = LoneCaller()

    /// How long a lone caller looks for its answer before it suspends: a compute task's round
    /// trip on a slow machine, about a twentieth of a millisecond of one core at most.
    static let spinMicroseconds = 50.0
    /// Waiting needs two cores: on one, the thread that must answer (a worker, or the
    /// executor's only thread for an async plugin) would wait for the caller to give up.
    static let mayWait = onlineCores >= 2

    private let inFlight = Atomic<Int>(0)
    /// Numbers each lone wait, so an answer that comes after its caller gave up waiting cannot
    /// be taken for the next lone caller's.
    private let tickets = Atomic<UInt64>(0)
    /// The ticket of the last lone dispatch answered.
    private let answered = Atomic<UInt64>(0)

    /// Runs `request` through `router` and returns its response.
    func dispatch(_ request: Request, through router: Router) async -> Response {
        let alone = inFlight.add(1, ordering: .relaxed).newValue == 1
        defer { inFlight.subtract(1, ordering: .relaxed) }
        guard alone else {
            return await withUnsafeContinuation { continuation in router.dispatch(request) { continuation.resume(returning: $0) } }
        }
        let ticket = tickets.add(1, ordering: .relaxed).newValue
        return await withUnsafeContinuation { continuation in
            let inProcess = router.dispatch(request) { [self] response in
                continuation.resume(returning: response)
                answered.store(ticket, ordering: .releasing)
            }
            // Resumed before this closure returns, the task goes on on this thread.
            guard inProcess, Self.mayWait else { return }
            _ = spinWait(milliseconds: Self.spinMicroseconds / 1000) { answered.load(ordering: .acquiring) == ticket }
        }
    }
}
