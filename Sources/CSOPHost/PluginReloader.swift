import CSOPCore
import Foundation
import Logging
import Synchronization

/// The plugins.d entries a host serves, and how they change while it serves: the first load,
/// each reload (``CSOPHost/reload()``), and the draining of instances a reload took out.
///
/// A reload looks at every entry and compares its fingerprint (its text, its library's path
/// and file identity: ``PluginLoader/fingerprint(file:)``) with the one it was loaded from:
/// - unchanged: the instance is untouched;
/// - new: it loads, and its domain serves from then on;
/// - removed, or `enabled = false`: new requests get `CAPABILITY_NOT_FOUND`, requests routed
///   already finish, then the instance is destroyed;
/// - changed: a new instance is created first, while the old one serves. If that fails, the
///   old one goes on serving and the failure is reported (``failures``, `host.info`, the log,
///   a `host.plugin` event); if it succeeds, new requests go to the new one at once and the
///   old one drains and is destroyed.
/// An entry that failed to load is tried again at every reload. Reloads run one at a time.
final class PluginReloader: Sendable {
    /// One entry that loaded, and the fingerprint it was loaded from.
    struct Entry: Sendable {
        let file: String
        let fingerprint: String
        let capability: any LoadedPlugin
    }

    private struct State {
        var entries: [Entry] = []
        var failures: [PluginLoadFailure] = []
        /// The last generation of each domain in this host.
        var generations: [String: Int] = [:]
        /// Domains a reload removed, with their entry file, for `CAPABILITY_NOT_FOUND`'s message.
        var removed: [String: String] = [:]
        /// Instances taken out and not yet destroyed.
        var draining: [any LoadedPlugin] = []
        var stopped = false
    }

    private let state = Mutex(State())
    /// Held for the whole of a reload, so reloads run one at a time.
    private let serial = Mutex(())
    private let loader: PluginLoader
    private let configuration: HostConfiguration
    private let hub: EventHub
    /// Routes to these capabilities from now on (set once by the host, before any reload).
    private let install = Mutex<(@Sendable ([any LoadedPlugin]) -> Void)?>(nil)

    /// Loads every enabled entry of the plugins directory, in name order.
    init(configuration: HostConfiguration, events: EventHub) {
        self.configuration = configuration
        self.hub = events
        self.loader = PluginLoader(configuration: configuration, events: events)
        _ = reloadLocked(first: true)
    }

    /// Sets what a reload calls with the capabilities to route to.
    func onInstall(_ body: @escaping @Sendable ([any LoadedPlugin]) -> Void) {
        install.withLock { $0 = body }
    }

    /// The instances serving now, in entry order.
    var capabilities: [any LoadedPlugin] { state.withLock { $0.entries.map(\.capability) } }

    /// The entries that did not load at the last load or reload.
    var failures: [PluginLoadFailure] { state.withLock { $0.failures } }

    /// The directories whose changes may change what a reload loads: the plugins directory and
    /// those of the libraries loaded.
    var watchedDirectories: [String] {
        let libraries = state.withLock { $0.entries.map(\.capability.libraryPath) }
        var directories = [configuration.pluginsDirectory]
        for path in libraries {
            guard let slash = path.lastIndex(of: "/") else { continue }
            let directory = String(path[..<slash])
            if !directories.contains(directory) { directories.append(directory) }
        }
        return directories
    }

    /// Why no plugin serves `domain`, for `CAPABILITY_NOT_FOUND`.
    func whyMissing(_ domain: String) -> String? {
        let (failures, removed) = state.withLock { ($0.failures, $0.removed[domain]) }
        if let removed, !failures.contains(where: { $0.domain == domain }) {
            return "its plugins.d entry \(removed) was removed or disabled, and a reload unloaded it"
        }
        return CSOPHost.whyMissing(domain, failures: failures)
    }

    /// Loads what changed in the plugins directory since the last load, swaps it in and starts
    /// draining what it replaced. Blocks while plugins are created: call it off the
    /// concurrency pool.
    func reload() -> ReloadReport {
        reloadLocked(first: false)
    }

    private func reloadLocked(first: Bool) -> ReloadReport {
        serial.withLock { _ in
            guard !state.withLock({ $0.stopped }) else {
                return ReloadReport(
                    items: [], unchanged: 0,
                    refused: "the host is shutting down; it reloads no plugins")
            }
            return apply(first: first)
        }
    }

    private func apply(first: Bool) -> ReloadReport {
        let logger = configuration.logger
        let (previous, previousFailures) = state.withLock { ($0.entries, $0.failures) }
        let files: [String]
        do throws(PluginLoadFailure) {
            files = try loader.entryFiles()
        } catch {
            // A directory gone for a moment must not unload everything: keep what serves.
            logger.error("\(error)\(previous.isEmpty ? "" : "; the loaded plugins keep serving")")
            configuration.auditLog?.record("plugin.failed", ["file": error.file, "outcome": error.kind.rawValue])
            state.withLock { $0.failures = [error] }
            if !first { publish(.init(change: .failed, plugin: nil, file: error.file, code: error.kind.rawValue, message: error.message)) }
            return ReloadReport(
                items: [.init(change: .failed, plugin: nil, file: error.file, code: error.kind.rawValue, message: error.message)],
                unchanged: previous.count)
        }
        let old = Dictionary(previous.map { ($0.file, $0) }, uniquingKeysWith: { first, _ in first })
        let fingerprints = Dictionary(files.map { ($0, loader.fingerprint(file: $0)) }, uniquingKeysWith: { first, _ in first })
        // Domains held by entries that stay (unchanged, or changed and serving until replaced).
        var taken: [String: String] = [:]
        for file in files { if let entry = old[file] { taken[entry.capability.name] = file } }

        var next: [Entry] = []
        var failures: [PluginLoadFailure] = []
        var retired: [any LoadedPlugin] = []
        var items: [ReloadReport.Item] = []
        var unchanged = 0
        for file in files {
            let fingerprint = fingerprints[file]!
            let current = old[file]
            if let current, current.fingerprint == fingerprint {
                next.append(current)
                unchanged += 1
                continue
            }
            var others = taken
            if let current { others.removeValue(forKey: current.capability.name) }
            do throws(PluginLoadFailure) {
                let loaded = try loader.load(file: file, taken: others) { [weak self] domain in
                    guard let self else { return 0 }
                    return self.state.withLock { state in
                        let generation = (state.generations[domain] ?? 0) + 1
                        state.generations[domain] = generation
                        return generation
                    }
                }
                guard let loaded else {
                    logger.debug("\(file): disabled")
                    if let current {
                        taken.removeValue(forKey: current.capability.name)
                        retired.append(current.capability)
                        items.append(.init(change: .removed, plugin: current.capability.name, file: file, generation: current.capability.generation))
                    }
                    continue
                }
                if let current {
                    taken.removeValue(forKey: current.capability.name)
                    retired.append(current.capability)
                }
                taken[loaded.name] = file
                next.append(Entry(file: file, fingerprint: fingerprint, capability: loaded))
                items.append(
                    .init(
                        change: current == nil || first ? .loaded : .replaced, plugin: loaded.name, file: file,
                        version: loaded.version, generation: loaded.generation, library: loaded.libraryPath))
            } catch {
                var failure = error
                if let current {
                    failure.message += "; generation \(current.capability.generation) (version \(current.capability.version)) keeps serving"
                    next.append(current)
                }
                failures.append(failure)
                items.append(
                    .init(
                        change: .failed, plugin: failure.domain ?? current?.capability.name, file: file, code: failure.kind.rawValue,
                        message: failure.message))
            }
        }
        for entry in previous where fingerprints[entry.file] == nil {
            retired.append(entry.capability)
            items.append(.init(change: .removed, plugin: entry.capability.name, file: entry.file, generation: entry.capability.generation))
        }
        let removedDomains = Set(retired.map(\.name)).subtracting(next.map(\.capability.name))
        state.withLock { state in
            state.entries = next
            state.failures = failures
            for item in items where item.change == .removed {
                if let plugin = item.plugin, removedDomains.contains(plugin) { state.removed[plugin] = item.file }
            }
            for entry in next { state.removed.removeValue(forKey: entry.capability.name) }
            state.draining += retired
        }
        if !first { install.withLock { $0 }?(next.map(\.capability)) }
        report(items, previousFailures: previousFailures, first: first)
        if !retired.isEmpty { drain(retired) }
        return ReloadReport(items: items, unchanged: unchanged)
    }

    /// Logs, audits and announces each change. A failure the previous load reported already,
    /// word for word, is logged at debug and not announced again.
    private func report(_ items: [ReloadReport.Item], previousFailures: [PluginLoadFailure], first: Bool) {
        let logger = configuration.logger
        let audit = configuration.auditLog
        let known = Set(previousFailures.map { "\($0.file)\u{0}\($0.message)" })
        for item in items {
            switch item.change {
            case .loaded, .replaced:
                let verb = item.change == .loaded ? "loaded" : "replaced"
                let line = "\(verb) \(item.plugin ?? "?") \(item.version ?? "") (generation \(item.generation ?? 1)) from \(item.library ?? "?") for \(item.file)"
                if first { logger.debug("\(line)") } else { logger.info("reload: \(line)") }
                audit?.record(
                    "plugin.\(verb)",
                    ["plugin": item.plugin, "version": item.version, "library": item.library, "file": item.file,
                     "generation": item.generation.map(String.init)])
            case .removed:
                logger.info("reload: removed \(item.plugin ?? "?") (\(item.file)); requests routed to it finish, then it is destroyed")
                audit?.record("plugin.removed", ["plugin": item.plugin, "file": item.file])
            case .failed:
                let message = item.message ?? ""
                if known.contains("\(item.file)\u{0}\(message)") {
                    logger.debug("reload: \(item.file): still failing: \(message)")
                    continue
                }
                logger.error("\(first ? "" : "reload: ")\(item.file): \(item.code ?? ""): \(message)")
                audit?.record("plugin.failed", ["file": item.file, "outcome": item.code, "plugin": item.plugin])
            }
            if !first { publish(item) }
        }
    }

    private func publish(_ item: ReloadReport.Item) {
        hub.publish(HostEvent(plugin: "host", json: RawJSON(item.json)))
    }

    /// Destroys each of `retired` once no request uses it and no call of it runs, on a thread
    /// of its own. One that stays busy is warned about after 30 s and destroyed whenever it
    /// becomes idle; shutdown takes over what is still draining then.
    private func drain(_ retired: [any LoadedPlugin]) {
        let logger = configuration.logger
        Thread.detachNewThread { [self] in
            var waiting = retired
            let start = monotonicMilliseconds()
            var warned = false
            while !waiting.isEmpty {
                let stopped = state.withLock { $0.stopped }
                if stopped { return }
                for capability in waiting where capability.isIdle {
                    // Taken off the draining list first: shutdown destroys only what is still on it.
                    let mine = state.withLock { state in
                        guard let index = state.draining.firstIndex(where: { $0 === capability }) else { return false }
                        state.draining.remove(at: index)
                        return true
                    }
                    if mine {
                        capability.destroy()
                        logger.debug("destroyed \(capability.name) generation \(capability.generation): drained")
                    }
                }
                waiting.removeAll { $0.isIdle }
                if !warned, monotonicMilliseconds() - start > 30_000, let busy = waiting.first {
                    warned = true
                    logger.warning(
                        "\(busy.name) generation \(busy.generation) was unloaded by a reload 30 s ago and still has \(busy.runningCount) calls running; it is destroyed when they finish")
                }
                usleep(waiting.isEmpty ? 0 : (monotonicMilliseconds() - start < 1000 ? 2000 : 50_000))
            }
        }
    }

    /// Ends reloading and draining: returns what serves and what still drains, for shutdown
    /// to wait for and destroy.
    func stop() -> (serving: [any LoadedPlugin], draining: [any LoadedPlugin]) {
        serial.withLock { _ in
            state.withLock { state in
                state.stopped = true
                let draining = state.draining
                state.draining = []
                return (state.entries.map(\.capability), draining)
            }
        }
    }
}
