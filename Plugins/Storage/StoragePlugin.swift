import CSOPCore
import CSOPPluginKit
import Dispatch
import Synchronization

/// The `storage` capability: JSON values by key in a hot SQLite tier, with values larger than
/// `maxLocalSize` in a cold PostgreSQL tier when one is configured, and streamed values of any
/// size in chunks (`StoragePlugin+Streams`).
///
/// Threading: gets, deletes and saves of small local values complete inline on the calling
/// thread (the fast path) when the database is free; a write that would wait (another write
/// holds the writer, another process holds the database lock) moves to the plugin's writer
/// thread, so the caller's thread never blocks. Cold-tier work, large values and batch
/// operations run in tasks and complete later; their SQLite writes run on the writer thread
/// too. `cancel(callID:)` interrupts the SQLite statement (or lock wait) of that call and
/// cancels its task, which closes its PostgreSQL connection.
///
/// Answers are true: every write asks the host (``PluginCall/beginCommit()``) right before it
/// commits, and rolls back when the host has already answered `TIMEOUT`.
final class StoragePlugin: CSOPPlugin {
    enum Operation: String, PluginOperation {
        case save, get, delete, list, saveMany, getMany, stats, health, sweep, rotate, watch, unwatch
        case upload, append, commit, abort, read
    }

    static let name = "storage"
    static let version = "1.0.0"

    /// Values whose JSON is larger than this are saved off the calling thread.
    static let inlineValueLimit = 256 * 1024

    let configuration: StorageConfiguration
    let local: LocalStore
    let cold: ColdStore?
    let codec: ValueCodec
    let host: PluginHost?
    /// `storage.watch` subscriptions; every committed change is announced to it.
    let watches: WatchRegistry
    /// Calls running in tasks (cold tier, large values, batches), so cancel reaches them.
    let calls = CallTaskRegistry()
    /// Where writes that may wait for a lock run, one at a time, off every caller's thread
    /// and off the concurrency pool.
    let writerQueue = DispatchQueue(label: "csop.storage.writer")
    private let queuedWrites = Atomic<Int>(0)
    let metrics = StorageMetrics()
    /// Purges expired keys every `purgeInterval` on the writer thread; cancelled at shutdown.
    private let purgeTask = Mutex<Task<Void, Never>?>(nil)

    static func checkConfig(_ config: JSONValue) throws(CSOPError) {
        let configuration = try StorageConfiguration(config: config)
        if let url = configuration.postgresURL {
            _ = try ColdStore.parseURL(url)
        }
    }

    convenience init(config: JSONValue, host: PluginHost) throws(CSOPError) {
        try self.init(configuration: StorageConfiguration(config: config), host: host)
    }

    /// Opens the tiers described by `configuration`.
    /// - Throws: a ``CSOPError`` naming the config key or database path that is wrong.
    init(configuration: StorageConfiguration, host: PluginHost?) throws(CSOPError) {
        self.configuration = configuration
        self.host = host
        local = try LocalStore(configuration: configuration)
        cold = try configuration.postgresURL.map { url throws(CSOPError) in try ColdStore(url: url, table: configuration.postgresTable) }
        let watches = WatchRegistry(maxWatches: configuration.maxWatches, emit: { bytes in host?.emit(rawJSON: bytes) })
        self.watches = watches
        if let url = configuration.watchPostgresURL {
            let feed = ChangeFeed(
                postgres: url, storeID: local.storeID, receive: { watches.deliver($0) }, log: { level, message in host?.log(level, message) })
            _ = watches.feed.storeIfNil(feed)
            feed.start()
        }
        codec = ValueCodec(keys: configuration.encryptionKeys, currentKeyId: configuration.encryptionKeyId)
        let interval = configuration.purgeInterval
        purgeTask.withLock {
            $0 = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(interval))
                    guard let self, !Task.isCancelled else { return }
                    await self.purgeExpired()
                    await self.purgeStreams()
                }
            }
        }
        host?.log(.info, "storage: hot tier at \(configuration.path); cold tier \(cold.map { "PostgreSQL at \($0.endpoint), table \($0.table)" } ?? "not configured")")
    }

    /// Every operation sees only the keys of the call's namespace: the owner's, or its
    /// caller's tenant's (``StorageNamespace``).
    func invoke(_ operation: Operation, _ call: PluginCall) {
        let space = StorageNamespace(call.caller)
        do throws(CSOPError) {
            switch operation {
            case .save: try save(call, space)
            case .get: try get(call, space)
            case .delete: try delete(call, space)
            case .list: try list(call, space)
            case .saveMany: try saveMany(call, space)
            case .getMany: try getMany(call, space)
            case .stats: try stats(call, space)
            case .health: try health(call)
            case .sweep: try sweep(call)
            case .rotate: try rotate(call)
            case .watch: try watch(call, space)
            case .unwatch: try unwatch(call, space)
            case .upload: try upload(call, space)
            case .append: try append(call, space)
            case .commit: try commit(call, space)
            case .abort: try abort(call, space)
            case .read: try read(call, space)
            }
        } catch {
            call.fail(error)
        }
    }

    func cancel(callID: UInt64) {
        local.interrupt(callID: callID)
        cold?.cancel(callID: callID)
        calls.cancel(callID)
    }

    /// Values and bytes per tier are read from the database (one aggregate query, on a reader
    /// connection), so a scrape costs about what `storage.stats` does.
    func writeMetrics(into buffer: inout [UInt8]) {
        let stats = try? local.stats(range: (lower: [], upper: [0xFF, 0xFF, 0xFF, 0xFF]), callID: 0)
        metrics.write(into: &buffer, stats: stats, maxBytes: configuration.maxBytes, feed: watches.feed.load())
    }

    /// Stops the purge and the calls' tasks, then the cold tier. A purge round still running
    /// may finish; what it logs after `destroy` is dropped (``PluginHost``).
    func shutdown() {
        purgeTask.withLock { $0?.cancel() }
        calls.cancelAll()
        cold?.shutdown()
        if let feed = watches.feed.load() {
            // The host's destroy is synchronous: give the feed's connection a bounded time to close.
            let done = DispatchSemaphore(value: 0)
            Task {
                await feed.shutdown()
                done.signal()
            }
            _ = done.wait(timeout: .now() + .seconds(3))
        }
    }

    /// Runs `work` in a task that ``cancel(callID:)`` can reach, then completes `call`.
    func runLater(_ call: PluginCall, _ work: @escaping @Sendable () async throws(CSOPError) -> PluginReply) {
        calls.complete(call, work)
    }

    /// Writes queued for or running on the writer thread. While there are any, new writes
    /// queue behind them instead of trying inline, so writes commit in the order they came.
    var writesWaiting: Int { queuedWrites.load(ordering: .acquiring) }

    /// Runs `work` on the writer thread, where it may wait for locks; an error it throws fails `call`.
    func onWriter(_ call: PluginCall, _ work: @escaping @Sendable () throws(CSOPError) -> Void) {
        queuedWrites.add(1, ordering: .releasing)
        writerQueue.async { [self] in
            defer { queuedWrites.subtract(1, ordering: .releasing) }
            do throws(CSOPError) {
                try work()
            } catch {
                call.fail(error)
            }
        }
    }

    /// Runs `work` on the writer thread and awaits it, from a call's task.
    func onWriter<T: Sendable>(_ work: @escaping @Sendable () throws(CSOPError) -> T) async throws(CSOPError) -> T {
        queuedWrites.add(1, ordering: .releasing)
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, CSOPError>, Never>) in
            writerQueue.async { [self] in
                defer { queuedWrites.subtract(1, ordering: .releasing) }
                do throws(CSOPError) {
                    continuation.resume(returning: .success(try work()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    func log(_ level: PluginHost.LogLevel, _ message: String) {
        host?.log(level, message)
    }
}

/// The descriptor the library exports. The `csop_plugin_register` symbol itself lives in
/// Plugins/Storage/Export, so tests can link this module without a duplicate symbol.
public func storagePluginDescriptor() -> UnsafeRawPointer { PluginExport.register(StoragePlugin.self) }
