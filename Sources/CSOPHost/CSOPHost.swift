@_exported public import CSOPCore
import CSOPPluginABI
import Foundation
import Logging
import Synchronization

/// The CSOP host: loads the plugins of a plugins.d directory and routes requests to them.
///
/// ```swift
/// let host = await CSOPHost.load(HostConfiguration(pluginsDirectory: "plugins.d"))
/// let response = await host.dispatch("storage.get", ["key": "user:1"])
/// for await event in host.events() { ... }
/// await host.shutdown()
/// ```
/// Thread-safe. A broken plugins.d entry never stops the others: see ``failures``.
public final class CSOPHost: Sendable {
    /// The host's version.
    public static let version = "0.1.0"
    /// The plugin ABI version this host loads.
    public static let abiVersion = Int(CSOP_ABI_VERSION)

    /// Plugins serving now, in entry order (a reload changes them: ``reload()``).
    public var plugins: [LoadedPluginInfo] { reloader.capabilities.map(\.info) }
    /// Entries that did not load at the last load or reload, with the reason.
    public var failures: [PluginLoadFailure] { reloader.failures }
    /// The plugins.d directory the host loaded from.
    public let pluginsDirectory: String
    /// The audit log of ``HostConfiguration/auditLog``, for the host's front ends (the
    /// gateway records authentication failures in it).
    public let auditLog: AuditLog?
    /// The metrics of ``HostConfiguration/metrics``, for the host's front ends (the gateway
    /// adds its own series); nil when metrics are off.
    public let metrics: HostMetrics?

    private let router: Router
    private let reloader: PluginReloader
    private let watcher: PluginDirectoryWatcher?
    private let hub: EventHub
    private let logger: Logger
    private let stopped = Mutex(false)
    private let afterShutdown: (@Sendable () async -> Void)?

    /// Loads every enabled entry of `configuration.pluginsDirectory`, in name order.
    public static func load(_ configuration: HostConfiguration) async -> CSOPHost {
        CSOPHost(configuration: configuration, scheduler: TimerThread.shared)
    }

    /// Loads with an explicit scheduler (tests drive time by hand).
    public init(configuration: HostConfiguration, scheduler: any Scheduler, backoff: BackoffPolicy = .standard) {
        let hub = EventHub()
        let reloader = PluginReloader(configuration: configuration, events: hub)
        self.pluginsDirectory = configuration.pluginsDirectory
        self.auditLog = configuration.auditLog
        self.metrics = configuration.metrics
        self.reloader = reloader
        self.hub = hub
        self.logger = configuration.logger
        self.afterShutdown = configuration.afterShutdown
        let info = HostInfoCapability(reloader: reloader, scheduler: scheduler)
        let router = Router(
            capabilities: [info] + reloader.capabilities,
            scheduler: scheduler, backoff: backoff, maxInFlightBytes: configuration.maxInFlightBytes, audit: configuration.auditLog,
            metrics: configuration.metrics, tracer: configuration.tracer, missingDomainHint: { [reloader] domain in reloader.whyMissing(domain) })
        self.router = router
        reloader.onInstall { [weak router] capabilities in router?.replaceCapabilities([info] + capabilities) }
        if let metrics = configuration.metrics {
            for plugin in reloader.capabilities { metrics.pluginChanged(plugin.name, "loaded") }
            for failure in reloader.failures { metrics.pluginChanged(failure.domain ?? "", "failed") }
            // Later changes (reloads, an isolated plugin's crash and restart) are announced as events.
            _ = hub.add { event in
                guard event.plugin == "host", case .object(let object) = event.json.value, object["type"] == "host.plugin",
                    case .string(let change)? = object["change"]
                else { return }
                if case .string(let plugin)? = object["plugin"] { metrics.pluginChanged(plugin, change) } else { metrics.pluginChanged("", change) }
            }
        }
        self.watcher =
            configuration.watchPluginsDirectory
            ? PluginDirectoryWatcher(directories: reloader.watchedDirectories, logger: configuration.logger) { [weak reloader] in
                guard let reloader else { return [] }
                _ = reloader.reload()
                return reloader.watchedDirectories
            }
            : nil
    }

    /// Loads what changed in the plugins directory since the last load (see ``PluginReloader``
    /// for what happens to each entry), without an outage: requests keep being served
    /// throughout. `csop run` and `csop serve` call it on SIGHUP and when the directory
    /// changes (``HostConfiguration/watchPluginsDirectory``); `host.reload` calls it too.
    public func reload() async -> ReloadReport {
        let reloader = reloader
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: reloader.reload()) }
        }
    }

    /// Why no plugin serves `domain`, from the load failures: appended to `CAPABILITY_NOT_FOUND`.
    static func whyMissing(_ domain: String, failures: [PluginLoadFailure]) -> String? {
        if let failure = failures.first(where: { $0.domain == domain }) {
            return "its plugins.d entry \(failure.file) failed to load: \(failure.kind.rawValue): \(failure.message)"
        }
        if let failure = failures.first(where: { $0.kind == .pluginsDirectoryNotFound }) {
            return "no plugins were loaded: \(failure.message)"
        }
        let unknown = failures.filter { $0.domain == nil }
        guard !unknown.isEmpty else { return nil }
        return "entries that failed to load (csop plugins says why): "
            + unknown.map { "\($0.file) (\($0.kind.rawValue))" }.joined(separator: ", ")
    }

    /// Runs a request; answers every problem as an error response, never by throwing. While it
    /// is the only `await`ed dispatch in flight, it keeps the calling thread looking for a quick
    /// answer for up to 50 µs before the task suspends (``LoneCaller``).
    public func dispatch(_ request: Request) async -> Response {
        await LoneCaller.shared.dispatch(request, through: router)
    }

    /// Runs `action` with `payload` and `options`.
    public func dispatch(
        _ action: String, _ payload: JSONValue = .object(JSONObject()), options: RequestOptions = RequestOptions(),
        id: String? = nil, caller: Caller? = nil
    ) async -> Response {
        await dispatch(Request(id: id, action: action, payload: payload, options: options, caller: caller))
    }

    /// Runs a request and calls `completion` once, possibly before returning (the fastest path).
    public func dispatch(_ request: Request, completion: @escaping @Sendable (Response) -> Void) {
        router.dispatch(request, completion: completion)
    }

    /// Runs a request given as JSON text (one `csop run` line): malformed input gets an
    /// error response naming the problem.
    /// - Parameters:
    ///   - line: the input line the text came from, named in parse errors.
    ///   - caller: who the request runs for (set by an authenticating front end after checking
    ///     a token); nil for the local owner. The JSON cannot name one.
    public func dispatch(
        json bytes: [UInt8], line: Int? = nil, caller: Caller? = nil, completion: @escaping @Sendable (Response) -> Void
    ) {
        let value: JSONValue
        do throws(JSONParseError) {
            value = try JSONValue(parsing: bytes)
        } catch {
            let failure = CSOPError(.invalidPayload, "\(line.map { "line \($0)" } ?? "the request") is not valid JSON: \(error)")
            return completion(Response(id: Request.generateID(), outcome: .failure(failure), duration: 0))
        }
        switch Request.decode(value) {
        case .success(var request):
            request.caller = caller
            router.dispatch(request, completion: completion)
        case .failure(let failure):
            completion(Response(id: failure.id ?? Request.generateID(), outcome: .failure(failure.error), duration: 0))
        }
    }

    /// Requests dispatched and not yet answered.
    public var pendingCount: Int { router.pendingCount }

    /// The payload bytes of those requests, and the most it holds (``HostConfiguration/maxInFlightBytes``).
    public var inFlightBytes: Int { router.inFlightByteCount }
    public var maxInFlightBytes: Int { router.maxInFlightBytes }

    /// Events pushed by plugins from now on, until the stream is dropped or the host shuts down.
    /// The stream buffers without bound; consume it.
    public func events() -> AsyncStream<HostEvent> {
        let (stream, continuation) = AsyncStream<HostEvent>.makeStream(bufferingPolicy: .unbounded)
        let id = hub.add { continuation.yield($0) }
        streams.withLock { $0[id] = continuation }
        continuation.onTermination = { [hub, streams] _ in
            hub.remove(id)
            _ = streams.withLock { $0.removeValue(forKey: id) }
        }
        return stream
    }

    private let streams = EventStreams()

    /// Calls `listener` for every event, on the emitting plugin's thread; it must be quick.
    /// - Returns: a token for ``removeEventListener(_:)``.
    public func addEventListener(_ listener: @escaping @Sendable (HostEvent) -> Void) -> UInt64 {
        hub.add(listener)
    }

    public func removeEventListener(_ token: UInt64) { hub.remove(token) }

    /// Refuses new requests with `NOT_INITIALIZED` from now on (and retries no failed attempt);
    /// running requests go on. ``shutdown(gracePeriod:)`` does this first.
    public func stopAccepting() { router.stopAccepting() }

    /// Stops taking requests, waits for running ones (up to `gracePeriod` milliseconds),
    /// then destroys the plugins in reverse load order and ends event streams.
    public func shutdown(gracePeriod: Double = 10_000) async {
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        router.stopAccepting()
        watcher?.stop()
        let (serving, draining) = reloader.stop()
        let capabilities = draining + serving
        let deadline = monotonicMilliseconds() + gracePeriod
        while (router.pendingCount > 0 || capabilities.contains { $0.runningCount > 0 }) && monotonicMilliseconds() < deadline {
            try? await Task.sleep(for: .milliseconds(2))
        }
        // A plugin's destroy may block (joining its threads, a goodbye to PostgreSQL): it runs
        // on a thread of its own, never on the concurrency pool other tasks need.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let logger = self.logger
            Thread.detachNewThread {
                for capability in capabilities.reversed() {
                    if capability.runningCount > 0 {
                        let abandoned = capability.abandonedCalls
                        let never = abandoned.isEmpty ? "" : "; timed out and never completed: call \(abandoned.prefix(16).map(String.init).joined(separator: ", "))"
                        logger.warning(
                            "plugin \(capability.name) still has \(capability.runningCount) calls running after the \(Int(gracePeriod)) ms shutdown grace period\(never); not destroying it")
                        continue
                    }
                    capability.destroy()
                }
                continuation.resume()
            }
        }
        for continuation in streams.withLock({ $0.values }) { continuation.finish() }
        await afterShutdown?()
    }

    /// Every metric in Prometheus's text exposition format (version 0.0.4): the host's own
    /// (``HostMetrics``) and, after them, each plugin's (`write_metrics`; an isolated plugin's
    /// child is asked and given 1 s). Nil when metrics are off (``HostConfiguration/metrics``).
    public func metricsText() async -> [UInt8]? {
        guard let metrics else { return nil }
        let (router, reloader) = (router, reloader)
        return await withCheckedContinuation { continuation in
            // An isolated plugin's answer is waited for: not on the concurrency pool.
            Thread.detachNewThread {
                let plugins = reloader.capabilities
                metrics.refresh(
                    inFlight: router.pendingCount, bytes: router.inFlightByteCount, plugins: plugins.map(\.info),
                    failing: reloader.failures.count)
                var text: [UInt8] = []
                metrics.emit(into: &text)
                for plugin in plugins { plugin.writeMetrics(into: &text) }
                continuation.resume(returning: text)
            }
        }
    }

    /// What `host.info` answers.
    public func info() async -> JSONValue {
        await dispatch("host.info").data ?? .null
    }
}

/// Open event streams by listener id, so shutdown can finish them.
final class EventStreams: Sendable {
    private let streams = Mutex<[UInt64: AsyncStream<HostEvent>.Continuation]>([:])

    func withLock<T>(_ body: (inout [UInt64: AsyncStream<HostEvent>.Continuation]) -> T) -> T {
        streams.withLock { body(&$0) }
    }
}
