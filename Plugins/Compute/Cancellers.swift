import Synchronization

/// How to stop each call in flight, by call id — and the ids whose cancel came before their
/// call got this far (the host's timer can fire while `invoke` is still reading the payload),
/// so such a call is never started.
final class Cancellers: Sendable {
    /// Early cancels remembered at most; the oldest are forgotten first.
    static let earlyLimit = 1024

    private struct State {
        var actions: [UInt64: @Sendable () -> Void] = [:]
        var early: [UInt64] = []
    }
    private let state = Mutex(State())

    /// Registers how to stop `callID`.
    /// - Returns: false when the call was cancelled already: nothing is registered, and the
    ///   call must be answered as cancelled without starting.
    func register(_ callID: UInt64, _ action: @escaping @Sendable () -> Void) -> Bool {
        state.withLock { state in
            if let index = state.early.firstIndex(of: callID) {
                state.early.remove(at: index)
                return false
            }
            state.actions[callID] = action
            return true
        }
    }

    /// Forgets `callID` (it finished).
    func remove(_ callID: UInt64) {
        _ = state.withLock { $0.actions.removeValue(forKey: callID) }
    }

    /// Stops `callID` now, or as soon as it registers.
    func cancel(_ callID: UInt64) {
        let action = state.withLock { state -> (@Sendable () -> Void)? in
            if let action = state.actions.removeValue(forKey: callID) { return action }
            if state.early.count >= Self.earlyLimit { state.early.removeFirst() }
            state.early.append(callID)
            return nil
        }
        action?()
    }
}
