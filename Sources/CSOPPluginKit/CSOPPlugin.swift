public import CSOPCore

/// A capability plugin written in Swift.
///
/// The host creates one instance per plugins.d entry with ``init(config:host:)``, calls
/// ``invoke(_:_:)`` concurrently from any thread, ``cancel(callID:)`` when it abandons a call
/// (timeouts), and ``shutdown()`` once every call has completed.
///
/// Conformers declare their operations as an ``Operation`` enum and must complete every call
/// exactly once, from any thread. Quick work (a few microseconds) may complete inline; anything
/// slower belongs on the plugin's own threads or in a task (see ``CallTaskRegistry``), so the
/// host's threads never wait on it. For an ordinary async type, adopt ``AsyncCSOPPlugin`` and
/// implement one `handle` method.
///
/// Export the type from the library with:
/// ```swift
/// @_cdecl("csop_plugin_register")
/// public func csopPluginRegister() -> UnsafeRawPointer { PluginExport.register(MyPlugin.self) }
/// ```
public protocol CSOPPlugin: AnyObject, Sendable {
    /// The operations, in the order the descriptor lists them.
    associatedtype Operation: PluginOperation

    /// The capability (domain) this plugin serves, e.g. `"storage"`.
    static var name: String { get }
    /// The plugin's version.
    static var version: String { get }

    /// Checks a plugins.d config without creating anything: no files opened, no connections
    /// made (`csop check` calls it). The default accepts every config.
    /// - Throws: a ``CSOPError`` whose message names the bad config key.
    static func checkConfig(_ config: JSONValue) throws(CSOPError)

    /// Creates the plugin from its plugins.d config (an object; empty when none was given).
    /// - Throws: a ``CSOPError`` whose message names the bad config key or resource.
    init(config: JSONValue, host: PluginHost) throws(CSOPError)

    /// Starts a call of `operation`. Complete it with ``PluginCall/succeed(_:)`` or
    /// ``PluginCall/fail(_:)``.
    func invoke(_ operation: Operation, _ call: PluginCall)

    /// The host abandoned the call (it timed out): stop its work if possible. The call must
    /// still be completed; the host ignores that outcome.
    func cancel(callID: UInt64)

    /// Releases resources. No call is running and none will start.
    func shutdown()

    /// Appends the plugin's own metrics in Prometheus's text format, each name starting
    /// `csop_<name>_` (the host drops other lines). Called when the host is scraped, on any
    /// thread, while calls run: set gauges from live counts, then emit a ``MetricsRegistry``.
    /// The host counts requests by action itself. The default writes nothing.
    func writeMetrics(into buffer: inout [UInt8])
}

extension CSOPPlugin {
    public static func checkConfig(_ config: JSONValue) throws(CSOPError) {}
    public func cancel(callID: UInt64) {}
    public func shutdown() {}
    public func writeMetrics(into buffer: inout [UInt8]) {}

    /// The operation names the descriptor lists: the ``Operation`` raw values in case order.
    public static var operationNames: [String] { Operation.allCases.map(\.rawValue) }
}
