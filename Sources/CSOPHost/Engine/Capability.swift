import CSOPCore
/// Something the router can send operations to: a loaded plugin, or a built-in.
///
/// `invoke` may complete the attempt inline (before it returns) or later from any thread,
/// exactly once. `cancel` asks the capability to stop a call the router abandoned; the
/// capability still completes it, and the router ignores that completion. Before an effect
/// that cannot be undone, a capability calls ``Attempt/beginCommit()`` and makes the effect
/// only if it returns true. `caller` is who the request runs for (nil: the local owner);
/// the router has already checked that it may call the action, and a capability keeps each
/// caller's tenant apart in what it stores and shows.
protocol Capability: AnyObject, Sendable {
    /// The domain it serves, e.g. `"storage"`.
    var name: String { get }
    var version: String { get }
    var operations: [String] { get }

    /// The index of `operation` in ``operations``, or nil.
    func operationIndex(_ operation: String) -> Int?

    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, _ attempt: Attempt)

    func cancel(callID: UInt64)

    /// Its circuit breaker, when its plugins.d entry configures one; the router consults it
    /// before each attempt.
    var circuit: CircuitBreaker? { get }

    /// A request was routed here and is not answered yet (its attempts and the waits between
    /// them); ``leave()`` follows exactly once. A reload destroys a capability it replaced
    /// only once no request uses it.
    func enter()
    func leave()

    /// Which instance of its domain it is (1, then one more per reload that replaced it); 0 for built-ins.
    var generation: Int { get }

    /// Whether its answers come from threads of this process (false for a plugin in a child
    /// process): only then may a lone caller look for the answer before suspending
    /// (``LoneCaller``), as a caller spinning would take a core the child needs.
    var answersInProcess: Bool { get }
}

extension Capability {
    func operationIndex(_ operation: String) -> Int? { operations.firstIndex(of: operation) }

    var answersInProcess: Bool { true }

    var circuit: CircuitBreaker? { nil }

    func enter() {}
    func leave() {}

    var generation: Int { 0 }
}
