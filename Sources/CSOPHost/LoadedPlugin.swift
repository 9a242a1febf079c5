import CSOPCore

/// A plugin a plugins.d entry loaded: in the host's process (``PluginCapability``) or in a
/// child process of its own (``IsolatedPlugin``). What the reloader, `host.info` and
/// shutdown need of either.
protocol LoadedPlugin: Capability {
    /// The plugins.d entry it was loaded from.
    var file: String { get }
    /// The library's resolved path.
    var libraryPath: String { get }
    /// When it was created (UTC, ISO 8601).
    var loadedAt: String { get }
    /// Calls invoked and not yet completed.
    var runningCount: Int { get }
    /// Calls that timed out and that the plugin has still not completed, oldest id first.
    var abandonedCalls: [UInt64] { get }
    /// No request uses it and no call of it runs: a reload that took it out may destroy it.
    var isIdle: Bool { get }
    /// Destroys the instance; the caller has waited for running calls.
    func destroy()
    /// More `host.info` members describing it (an isolated plugin's child process).
    var infoDetails: JSONObject { get }
    /// Appends the plugin's own metrics (its `write_metrics`), only its own series kept
    /// (``PluginMetricsText``). May block briefly (an isolated plugin's child is asked).
    func writeMetrics(into buffer: inout [UInt8])
}

extension LoadedPlugin {
    var infoDetails: JSONObject { JSONObject() }

    var info: LoadedPluginInfo {
        LoadedPluginInfo(
            name: name, version: version, operations: operations, library: libraryPath, file: file, generation: generation,
            loadedAt: loadedAt)
    }
}
