import CSOPCore
import CSOPPluginKit
import Synchronization

/// The `storage` capability: JSON values by key in a hot SQLite tier, with values larger than
/// `maxLocalSize` in a cold PostgreSQL tier when one is configured.
///
/// Threading: gets, deletes and saves of small local values complete inline on the calling
/// thread (the fast path); cold-tier work, large values and batch operations run in tasks
/// and complete later. `cancel(callID:)` interrupts the SQLite statement of that call and
/// cancels its task, which closes its PostgreSQL connection.
final class StoragePlugin: CSOPPlugin {
    static let name = "storage"
    static let version = "1.0.0"
    static let operations = ["save", "get", "delete", "list", "saveMany", "getMany", "stats"]

    /// Values whose JSON is larger than this are saved off the calling thread.
    static let inlineValueLimit = 256 * 1024

    let configuration: StorageConfiguration
    let local: LocalStore
    let cold: ColdStore?
    let codec: ValueCodec
    let host: PluginHost?
    private let tasks = Mutex<[UInt64: Task<Void, Never>]>([:])

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
        codec = ValueCodec(encryptionKey: configuration.encryptionKey)
        host?.log(.info, "storage: hot tier at \(configuration.path); cold tier \(cold.map { "PostgreSQL at \($0.endpoint), table \($0.table)" } ?? "not configured")")
    }

    func invoke(_ call: PluginCall) {
        do throws(CSOPError) {
            switch call.operationIndex {
            case 0: try save(call)
            case 1: try get(call)
            case 2: try delete(call)
            case 3: try list(call)
            case 4: try saveMany(call)
            case 5: try getMany(call)
            case 6: try stats(call)
            default: call.fail(CSOPError(.operationNotFound, "storage has no operation \(call.operation)"))
            }
        } catch {
            call.fail(error)
        }
    }

    func cancel(callID: UInt64) {
        local.interrupt(callID: callID)
        cold?.cancel(callID: callID)
        tasks.withLock { $0[callID] }?.cancel()
    }

    func shutdown() {
        let running = tasks.withLock { Array($0.values) }
        for task in running { task.cancel() }
        cold?.shutdown()
    }

    /// What an operation completes with.
    enum Reply: Sendable {
        case value(JSONValue)
        case raw([UInt8])
    }

    /// Runs `work` in a task that ``cancel(callID:)`` can reach, then completes `call`.
    func runLater(_ call: PluginCall, _ work: @escaping @Sendable () async throws(CSOPError) -> Reply) {
        let id = call.id
        tasks.withLock { tasks in
            tasks[id] = Task { [weak self] in
                do throws(CSOPError) {
                    switch try await work() {
                    case .value(let value): call.succeed(value)
                    case .raw(let bytes): call.succeed(rawJSON: bytes)
                    }
                } catch {
                    call.fail(error)
                }
                _ = self?.tasks.withLock { $0.removeValue(forKey: id) }
            }
        }
    }

    func log(_ level: PluginHost.LogLevel, _ message: String) {
        host?.log(level, message)
    }
}

/// The descriptor the library exports. The `csop_plugin_register` symbol itself lives in
/// Plugins/Storage/Export, so tests can link this module without a duplicate symbol.
public func storagePluginDescriptor() -> UnsafeRawPointer { PluginExport.register(StoragePlugin.self) }
