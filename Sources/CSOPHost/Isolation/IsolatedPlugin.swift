import CSOPCore
import Foundation
import Glibc
import Logging
import Synchronization

/// A plugin that runs in a child process of its own (`isolation = "process"`): the `csop`
/// executable as `csop plugin-host`, loading the same library through the same C ABI, with
/// the same JSON payloads carried over a Unix socket (``IsolationChannel``).
///
/// The child is this plugin's only instance. When it dies — a segfault, an abort, the OOM
/// killer, a `[limits]` limit — every call it was running fails with `PLUGIN_CRASHED`
/// (retry true), calls that arrive before it is back fail the same way at once, and it is
/// started again after a jittered backoff (0.1 s doubling to 10 s; the count starts over
/// once a child has run 10 s). Each new child is a new generation, announced like a reload
/// (`host.plugin` events `crashed`, then `restarted`), so what the old one handed out
/// (subscription ids) ends with it. Timeouts cancel in the child as in-process; its events
/// and log lines come through the socket; `begin_commit` asks the host and waits.
final class IsolatedPlugin: LoadedPlugin, Sendable {
    /// Its answers come from the child process.
    var answersInProcess: Bool { false }

    let name: String
    let version: String
    let operations: [String]
    let file: String
    let libraryPath: String
    let circuit: CircuitBreaker?
    let loadedAt: String

    fileprivate struct Child: Sendable {
        let pid: pid_t
        let channel: IsolationChannel
        let generation: Int
        let startedAt: Double
        /// Signalled once the child has exited and been reaped.
        let exited = DispatchSemaphore(value: 0)
    }

    private struct State {
        var child: Child?
        var generation: Int
        /// Calls sent to the child and not completed, by call id.
        var pending: [UInt64: Attempt] = [:]
        /// Of those, the ones the router cancelled.
        var abandoned: Set<UInt64> = []
        var restarts = 0
        var crashesInARow = 0
        var lastCrash: String?
        /// When the next child starts (monotonic ms), while there is none.
        var restartAt: Double?
        var destroyed = false

        /// Counts one more failure in a row and sets when the next child starts: the router's
        /// own backoff (0.1 s doubling to 10 s, half of it jitter). - Returns: the delay (ms).
        mutating func nextRestart() -> Double {
            crashesInARow += 1
            let delay = BackoffPolicy.standard.delay(afterAttempt: crashesInARow - 1, random: Double.random(in: 0..<1))
            restartAt = monotonicMilliseconds() + delay
            return delay
        }
    }

    private let state: Mutex<State>
    private let operationIndexes: [String: Int]
    private let users = Atomic<Int>(0)
    private let launch: Launch
    private let logger: Logger
    private let events: EventHub
    private let nextGeneration: @Sendable (String) -> Int
    private let audit: AuditLog?
    /// Scrapes waiting for the child's metrics, by request id.
    private let metricsRequests = Mutex<(next: UInt64, waiting: [UInt64: MetricsAnswer])>((0, [:]))

    /// Where the child's answer to one metrics request goes.
    private final class MetricsAnswer: Sendable {
        let text = Mutex<ArraySlice<UInt8>?>(nil)
        let arrived = DispatchSemaphore(value: 0)
    }

    /// How long a scrape waits for the child's metrics.
    static let metricsTimeout: Double = 1_000

    /// How to start a child: the executable and what the first frame tells it.
    private struct Launch: Sendable {
        let executable: String
        let start: [UInt8]
    }

    /// How long a child may take to load the plugin and say it is ready.
    static let startTimeout: Double = 30_000

    private init(
        ready: Ready, file: String, entry: PluginConfigFile, first: Child, launch: Launch, logger: Logger, events: EventHub,
        audit: AuditLog?, nextGeneration: @escaping @Sendable (String) -> Int
    ) {
        self.name = ready.name
        self.version = ready.version
        self.operations = ready.operations
        self.libraryPath = ready.library
        self.file = file
        self.loadedAt = WallClock.iso8601()
        self.launch = launch
        self.logger = logger
        self.events = events
        self.audit = audit
        self.nextGeneration = nextGeneration
        self.state = Mutex(State(child: first, generation: first.generation))
        var indexes: [String: Int] = [:]
        for (i, op) in ready.operations.enumerated() { indexes[op] = i }
        self.operationIndexes = indexes
        self.circuit = entry.circuit.map { CircuitBreaker.announcing(plugin: ready.name, policy: $0, logger: logger, events: events) }
    }

    /// What a child says once its plugin is created.
    struct Ready: Sendable {
        var name: String
        var version: String
        var operations: [String]
        var library: String
    }

    /// Starts the first child and waits until its plugin is created.
    static func start(
        file: String, entry: PluginConfigFile, configuration: HostConfiguration, events: EventHub, taken: [String: String],
        generation: @escaping @Sendable (String) -> Int
    ) throws(PluginLoadFailure) -> IsolatedPlugin {
        let domain = entry.expectedName ?? PluginLoader.likelyDomain(library: entry.library)
        func fail(_ kind: PluginLoadFailure.Kind, _ message: String) -> PluginLoadFailure {
            PluginLoadFailure(file: file, kind: kind, message: message, domain: domain)
        }
        guard let executable = configuration.pluginHostExecutable ?? Self.defaultExecutable() else {
            throw fail(
                .initFailed,
                "isolation = \"process\" runs the plugin in `csop plugin-host`, and no csop executable was found beside this program or on PATH; set HostConfiguration.pluginHostExecutable")
        }
        // The child searches as this process would: its own executable's directory is csop's,
        // so this program's directory (and ../lib/csop beside it) go in the search path.
        var searchPath = configuration.pluginSearchPath
        if configuration.searchExecutableDirectory, let directory = HostConfiguration.executableDirectory() {
            searchPath += [directory, HostConfiguration.normalize("\(directory)/../lib/csop")]
        }
        let start: JSONObject = [
            "file": .string(file), "pluginsDirectory": .string(configuration.pluginsDirectory),
            "searchPath": .array(searchPath.map { .string($0) }),
            "searchExecutableDirectory": .bool(configuration.searchExecutableDirectory),
            "allowInsecurePermissions": .bool(configuration.allowInsecurePermissions),
            "logLevel": .string(configuration.logger.logLevel.rawValue), "limits": entry.limits.json,
        ]
        let launch = Launch(executable: executable, start: JSONValue.object(start).serialized())
        var logger = configuration.logger
        logger[metadataKey: "plugin"] = .string(domain ?? file)
        // The reader hands frames to the plugin once it exists; until then, to this.
        let handoff = Handoff()
        let (pid, channel) = try spawn(launch, fail: fail)
        let readyOrFailure = handoff.await(channel: channel, pid: pid, logger: logger, events: events, domain: domain ?? "")
        let ready: Ready
        switch readyOrFailure {
        case .success(let value): ready = value
        case .failure(let failure):
            handoff.abandon()
            channel.shutdownBoth()
            reap(pid)
            throw PluginLoadFailure(file: file, kind: failure.kind, message: failure.message, domain: failure.domain ?? domain)
        }
        if let other = taken[ready.name] {
            handoff.abandon()
            channel.shutdownBoth()
            reap(pid)
            throw PluginLoadFailure(
                file: file, kind: .duplicateDomain,
                message: "\(ready.library) claims the domain \"\(ready.name)\", already served by the plugin from \(other)", domain: ready.name)
        }
        logger[metadataKey: "plugin"] = .string(ready.name)
        let child = Child(pid: pid, channel: channel, generation: generation(ready.name), startedAt: monotonicMilliseconds())
        let plugin = IsolatedPlugin(
            ready: ready, file: file, entry: entry, first: child, launch: launch, logger: logger, events: events,
            audit: configuration.auditLog, nextGeneration: generation)
        handoff.attach(plugin, child: child)
        return plugin
    }

    /// `csop` beside the running executable, else the first on PATH.
    static func defaultExecutable() -> String? {
        if let directory = HostConfiguration.executableDirectory(), access("\(directory)/csop", X_OK) == 0 { return "\(directory)/csop" }
        for directory in (getenv("PATH").map { String(cString: $0) } ?? "").split(separator: ":") where access("\(directory)/csop", X_OK) == 0 {
            return "\(directory)/csop"
        }
        return nil
    }

    // MARK: - Capability

    var generation: Int { state.withLock { $0.generation } }

    func operationIndex(_ operation: String) -> Int? { operationIndexes[operation] }

    // Sequentially consistent: see Router.resolveCapability.
    func enter() { users.add(1, ordering: .sequentiallyConsistent) }
    func leave() { users.subtract(1, ordering: .releasing) }

    var runningCount: Int { state.withLock { $0.pending.count } }
    var abandonedCalls: [UInt64] { state.withLock { $0.abandoned.sorted() } }
    var isIdle: Bool { users.load(ordering: .sequentiallyConsistent) == 0 && runningCount == 0 }

    var infoDetails: JSONObject {
        state.withLock { state in
            var details: JSONObject = [
                "isolation": "process", "restarts": .int(Int64(state.restarts)),
                "pid": state.child.map { .int(Int64($0.pid)) } ?? .null,
            ]
            if let crash = state.lastCrash { details["lastCrash"] = .string(crash) }
            if let at = state.restartAt { details["restartInMs"] = .int(Int64(max(0, at - monotonicMilliseconds()))) }
            return details
        }
    }

    func invoke(
        callID: UInt64, operation: Int, payload: [UInt8], timeoutMilliseconds: Double, caller: Caller?, _ attempt: Attempt
    ) {
        let channel: IsolationChannel? = state.withLock { state in
            guard let child = state.child else { return nil }
            state.pending[callID] = attempt
            return child.channel
        }
        guard let channel else { return attempt.complete(.failure(downError())) }
        var body = [UInt8]()
        // The call's context: its caller and trace, as JSON (empty when it has neither).
        var callerJSON = [UInt8]()
        let trace = attempt.trace
        if caller != nil || trace != nil || attempt.span != nil {
            var context = JSONObject()
            if let caller {
                context["subject"] = .string(caller.subject)
                context["tenant"] = .string(caller.tenant)
                context["actions"] = .string(caller.actions.description)
            }
            if let trace {
                context["traceparent"] = .string(trace.traceparent)
                if let state = trace.state { context["tracestate"] = .string(state) }
            }
            if attempt.span != nil { context["traced"] = true }
            callerJSON = JSONValue.object(context).serialized()
        }
        body.reserveCapacity(24 + callerJSON.count + payload.count)
        IsolationChannel.appendU64(&body, callID)
        IsolationChannel.appendU32(&body, UInt32(operation))
        IsolationChannel.appendDouble(&body, timeoutMilliseconds)
        IsolationChannel.appendU32(&body, UInt32(callerJSON.count))
        body += callerJSON
        body += payload
        // A failed send means the child is gone: the reader fails the pending call.
        channel.send(.call, body)
    }

    func cancel(callID: UInt64) {
        let channel: IsolationChannel? = state.withLock { state in
            guard state.pending[callID] != nil else { return nil }
            state.abandoned.insert(callID)
            return state.child?.channel
        }
        var body = [UInt8]()
        IsolationChannel.appendU64(&body, callID)
        channel?.send(.cancel, body)
    }

    /// `PLUGIN_CRASHED` for a call that finds no child.
    private func downError() -> CSOPError {
        let (crash, restartAt) = state.withLock { ($0.lastCrash, $0.restartAt) }
        let wait = restartAt.map { " and restarts in \(Int(max(0, $0 - monotonicMilliseconds()))) ms" } ?? " and is restarting"
        return CSOPError(
            .pluginCrashed, "the isolated plugin \(name) \(crash ?? "stopped")\(wait); retry", retryable: true)
    }

    /// Asks the child for its plugin's metrics and appends them, filtered again (the child is
    /// where untrusted code runs). Nothing when there is no child or it does not answer within
    /// ``metricsTimeout``.
    func writeMetrics(into buffer: inout [UInt8]) {
        guard let channel = state.withLock({ $0.child?.channel }) else { return }
        let answer = MetricsAnswer()
        let id = metricsRequests.withLock { requests in
            requests.next += 1
            requests.waiting[requests.next] = answer
            return requests.next
        }
        defer { _ = metricsRequests.withLock { $0.waiting.removeValue(forKey: id) } }
        var body: [UInt8] = []
        IsolationChannel.appendU64(&body, id)
        guard channel.send(.metrics, body),
            answer.arrived.wait(timeout: .now() + .milliseconds(Int(Self.metricsTimeout))) == .success,
            let text = answer.text.withLock({ $0 })
        else { return }
        PluginMetricsText.append(Array(text.prefix(PluginMetricsText.maxBytes)), plugin: name, to: &buffer)
    }

    /// Ends the child: it destroys its plugin and exits when its socket closes; after 5 s it is killed.
    func destroy() {
        let child: Child? = state.withLock { state in
            state.destroyed = true
            state.restartAt = nil
            defer { state.child = nil }
            return state.child
        }
        guard let child else { return }
        child.channel.shutdownBoth()
        if child.exited.wait(timeout: .now() + 5) == .timedOut {
            logger.warning("the isolated plugin \(name) (pid \(child.pid)) did not exit within 5 s of its end; killing it")
            kill(child.pid, SIGKILL)
        }
    }

    // MARK: - Frames from the child

    fileprivate func received(_ kind: IsolationChannel.Kind?, _ body: ArraySlice<UInt8>, from child: Child) {
        var reader = IsolationChannel.Reader(body: body)
        switch kind {
        case .done:
            guard let id = reader.u64(), let ok = reader.u8() else { return }
            let attempt = state.withLock { state in
                state.abandoned.remove(id)
                return state.pending.removeValue(forKey: id)
            }
            guard let attempt else { return }
            if ok == 1 {
                // The child is where an untrusted plugin runs: its bytes are checked as an
                // in-process plugin's are.
                do throws(JSONParseError) {
                    attempt.complete(.success(try RawJSON(validating: Array(reader.body))))
                } catch {
                    attempt.complete(.failure(CSOPError(.pluginFault, "plugin \(name) returned invalid JSON: \(error)")))
                }
            } else {
                attempt.complete(.failure(Self.decodeError(reader.body, plugin: name)))
            }
        case .commit:
            guard let id = reader.u64() else { return }
            let attempt = state.withLock { $0.pending[id] }
            var answer = [UInt8]()
            IsolationChannel.appendU64(&answer, id)
            answer.append(attempt?.beginCommit() == true ? 1 : 0)
            child.channel.send(.commitAnswer, answer)
        case .event:
            Self.publish(reader.body, plugin: name, generation: child.generation, events: events, logger: logger)
        case .log:
            Self.log(&reader, logger: logger)
        case .callSpan:
            guard let id = reader.u64() else { return }
            state.withLock { $0.pending[id] }?.recordSpan(Array(reader.body), plugin: name, logger: logger)
        case .callLog:
            guard let id = reader.u64(), let level = reader.u8() else { return }
            let text = String(decoding: reader.body, as: UTF8.self)
            let logLevel = IsolationChannel.logLevel(level)
            if let attempt = state.withLock({ $0.pending[id] }) {
                attempt.log(logLevel, text, plugin: logger)
            } else {
                logger.log(level: logLevel, "\(text)")
            }
        case .metricsText:
            guard let id = reader.u64(), let answer = metricsRequests.withLock({ $0.waiting[id] }) else { return }
            answer.text.withLock { $0 = reader.body }
            answer.arrived.signal()
        default:
            logger.error("the isolated plugin \(name) sent an unexpected frame (kind \(kind.map { String($0.rawValue) } ?? "unknown")); ignored")
        }
    }

    static func publish(_ body: ArraySlice<UInt8>, plugin: String, generation: Int, events: EventHub, logger: Logger) {
        let bytes = Array(body)
        if let problem = bytes.withUnsafeBufferPointer(HostEvent.problem) {
            logger.error("dropped an event from the isolated plugin \(plugin) that \(problem)")
            return
        }
        events.publish(HostEvent(plugin: plugin, generation: generation, json: RawJSON(unchecked: bytes)))
    }

    static func log(_ reader: inout IsolationChannel.Reader, logger: Logger) {
        guard let level = reader.u8() else { return }
        logger.log(level: IsolationChannel.logLevel(level), "\(String(decoding: reader.body, as: UTF8.self))")
    }

    static func decodeError(_ body: ArraySlice<UInt8>, plugin: String) -> CSOPError {
        guard case .object(let object)? = try? JSONValue(parsing: Array(body)), case .string(let code)? = object["code"],
            case .string(let message)? = object["message"]
        else { return CSOPError(.pluginFault, "the isolated plugin \(plugin) answered an error the host cannot read") }
        let retryable = if case .bool(true)? = object["retry"] { true } else { false }
        return CSOPError(ErrorCode(code), message, retryable: retryable)
    }

    /// The child's socket ended: it exited, or was destroyed.
    fileprivate func ended(_ child: Child) {
        let how = Self.reap(child.pid)
        child.exited.signal()
        let (failed, destroyed, delay): ([Attempt], Bool, Double) = state.withLock { state in
            guard !state.destroyed, state.child?.pid == child.pid else { return ([], true, 0) }
            let failed = Array(state.pending.values)
            state.pending.removeAll()
            state.abandoned.removeAll()
            state.child = nil
            state.lastCrash = how
            if monotonicMilliseconds() - child.startedAt > 10_000 { state.crashesInARow = 0 }
            return (failed, false, state.nextRestart())
        }
        guard !destroyed else { return }
        let message = "the isolated plugin \(name) (pid \(child.pid)) \(how); \(failed.count) calls in flight failed; restarting in \(Int(delay)) ms"
        logger.error("\(message)")
        audit?.record("plugin.crashed", ["plugin": name, "file": file, "outcome": how])
        announce("crashed", generation: child.generation, message: message)
        let error = CSOPError(.pluginCrashed, "the isolated plugin \(name) \(how) while this call ran; it restarts in \(Int(delay)) ms", retryable: true)
        for attempt in failed { attempt.complete(.failure(error)) }
        scheduleRestart(after: delay)
    }

    private func scheduleRestart(after delay: Double) {
        Thread.detachNewThread { [weak self] in
            usleep(UInt32(min(delay, 60_000) * 1000))
            self?.restart()
        }
    }

    private func restart() {
        guard !state.withLock({ $0.destroyed }) else { return }
        let failure: String
        do throws(PluginLoadFailure) {
            let (pid, channel) = try Self.spawn(launch) { kind, message in PluginLoadFailure(file: file, kind: kind, message: message) }
            let handoff = Handoff()
            switch handoff.await(channel: channel, pid: pid, logger: logger, events: events, domain: name) {
            case .success(let ready) where ready.name == name && ready.operations == operations:
                let child = Child(pid: pid, channel: channel, generation: nextGeneration(name), startedAt: monotonicMilliseconds())
                let kept = state.withLock { state in
                    guard !state.destroyed else { return false }
                    state.child = child
                    state.generation = child.generation
                    state.restartAt = nil
                    state.restarts += 1
                    return true
                }
                guard kept else {
                    handoff.abandon()
                    channel.shutdownBoth()
                    Self.reap(pid)
                    return
                }
                handoff.attach(self, child: child)
                logger.info("the isolated plugin \(name) restarted (pid \(pid), generation \(child.generation))")
                announce("restarted", generation: child.generation, message: nil)
                return
            case .success(let ready):
                failure = "its library now serves \(ready.name) with operations \(ready.operations.joined(separator: ", ")); reload to load a changed plugin"
            case .failure(let error):
                failure = "\(error.kind.rawValue): \(error.message)"
            }
            handoff.abandon()
            channel.shutdownBoth()
            Self.reap(pid)
        } catch {
            failure = error.message
        }
        let delay: Double = state.withLock { state in
            state.lastCrash = "could not be restarted (\(failure))"
            return state.nextRestart()
        }
        logger.error("the isolated plugin \(name) could not be restarted: \(failure); trying again in \(Int(delay)) ms")
        scheduleRestart(after: delay)
    }

    private func announce(_ change: String, generation: Int, message: String?) {
        var object: JSONObject = [
            "type": "host.plugin", "change": .string(change), "plugin": .string(name), "file": .string(file),
            "version": .string(version), "generation": .int(Int64(generation)),
        ]
        if let message { object["message"] = .string(message) }
        events.publish(HostEvent(plugin: "host", json: RawJSON(.object(object))))
    }

    // MARK: - Processes

    /// Starts `csop plugin-host --fd 3` with one end of a socket pair as its descriptor 3,
    /// and sends it the start frame.
    private static func spawn(
        _ launch: Launch, fail: (PluginLoadFailure.Kind, String) -> PluginLoadFailure
    ) throws(PluginLoadFailure) -> (pid_t, IsolationChannel) {
        var pair: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw fail(.initFailed, "cannot make the socket to an isolated plugin: \(String(cString: strerror(errno)))")
        }
        if pair[1] == 3 {
            // dup2(3, 3) would leave close-on-exec set, and the child would start without its socket.
            let moved = fcntl(pair[1], F_DUPFD_CLOEXEC, 10)
            close(pair[1])
            pair[1] = moved
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, pair[1], 3)
        // The child's stdout is the host's stderr: a plugin that prints must not write into
        // `csop run`'s answers.
        posix_spawn_file_actions_adddup2(&actions, 2, 1)
        _ = SpawnFileActions.addCloseFrom?(&actions, 4)
        let arguments = [launch.executable, "plugin-host", "--fd", "3"]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        // The child's crash is reported by the host in one line; Swift's backtracer would spend
        // a second writing a report to stderr first (unless the user asked for it).
        var environment: [UnsafeMutablePointer<CChar>?] = []
        var index = 0
        while let entry = environ[index] {
            environment.append(strdup(entry))
            index += 1
        }
        if getenv("SWIFT_BACKTRACE") == nil { environment.append(strdup("SWIFT_BACKTRACE=enable=no")) }
        environment.append(nil)
        defer { for pointer in environment { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, launch.executable, &actions, nil, &argv, &environment)
        close(pair[1])
        guard status == 0 else {
            close(pair[0])
            throw fail(.initFailed, "cannot start \(launch.executable) plugin-host for an isolated plugin: \(String(cString: strerror(status)))")
        }
        let channel = IsolationChannel(descriptor: pair[0])
        channel.send(.start, launch.start)
        return (pid, channel)
    }

    /// Waits for `pid` to exit (killing it after 2 s) and says how it ended.
    @discardableResult
    static func reap(_ pid: pid_t) -> String {
        var status: Int32 = 0
        var waited = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if waited == 2000 { kill(pid, SIGKILL) }
            usleep(1000)
            waited += 1
        }
        let signal = status & 0x7f
        if signal != 0 {
            let name = strsignal(signal).map { String(cString: $0) } ?? "signal \(signal)"
            return "was killed by signal \(signal) (\(name))"
        }
        return "exited with status \((status >> 8) & 0xff)"
    }
}

/// Reads a child's frames from the start: log lines and events while its plugin is created,
/// then the ready (or failed) frame, then, once the plugin exists, everything else for it.
private final class Handoff: Sendable {
    private let owner = Mutex<(plugin: IsolatedPlugin, child: IsolatedPlugin.Child)?>(nil)
    private let first = Mutex<Result<IsolatedPlugin.Ready, PluginLoadFailure>?>(nil)
    private let signal = DispatchSemaphore(value: 0)
    private let attached = DispatchSemaphore(value: 0)

    /// Starts the reader and waits (up to ``IsolatedPlugin/startTimeout``) for the child to say
    /// whether its plugin was created.
    func await(
        channel: IsolationChannel, pid: pid_t, logger: Logger, events: EventHub, domain: String
    ) -> Result<IsolatedPlugin.Ready, PluginLoadFailure> {
        Thread.detachNewThread { [self] in
            var ready = false
            channel.readFrames { kind, body in
                if ready {
                    guard let (plugin, child) = owner.withLock({ $0 }) else { return }
                    plugin.received(kind, body, from: child)
                    return
                }
                var reader = IsolationChannel.Reader(body: body)
                switch kind {
                case .log: IsolatedPlugin.log(&reader, logger: logger)
                case .event: IsolatedPlugin.publish(body, plugin: domain, generation: 0, events: events, logger: logger)
                case .ready, .failed:
                    ready = kind == .ready
                    finish(Self.decode(kind, body))
                    // Frames after ready belong to the plugin: wait until it exists.
                    if ready { attached.wait() }
                default: break
                }
            }
            if !ready { finish(.failure(PluginLoadFailure(file: "", kind: .initFailed, message: "the plugin host process ended before its plugin was ready"))) }
            if let (plugin, child) = owner.withLock({ $0 }) { plugin.ended(child) }
        }
        if signal.wait(timeout: .now() + .milliseconds(Int(IsolatedPlugin.startTimeout))) == .timedOut {
            finish(.failure(PluginLoadFailure(file: "", kind: .initFailed, message: "the plugin host process did not say it was ready within \(Int(IsolatedPlugin.startTimeout / 1000)) s")))
            kill(pid, SIGKILL)
        }
        return first.withLock { $0! }
    }

    /// From now on, frames and the end of the child go to `plugin`.
    /// The child will not serve (it failed, or the host refused it): the reader may go on to its end.
    func abandon() { attached.signal() }

    func attach(_ plugin: IsolatedPlugin, child: IsolatedPlugin.Child) {
        owner.withLock { $0 = (plugin, child) }
        attached.signal()
    }

    private func finish(_ result: Result<IsolatedPlugin.Ready, PluginLoadFailure>) {
        let isFirst = first.withLock { first in
            guard first == nil else { return false }
            first = result
            return true
        }
        if isFirst { signal.signal() }
    }

    private static func decode(_ kind: IsolationChannel.Kind?, _ body: ArraySlice<UInt8>) -> Result<IsolatedPlugin.Ready, PluginLoadFailure> {
        guard case .object(let object)? = try? JSONValue(parsing: Array(body)) else {
            return .failure(PluginLoadFailure(file: "", kind: .initFailed, message: "the plugin host process answered a start frame the host cannot read"))
        }
        if kind == .failed {
            let kind = object["kind"]?.stringValue.flatMap(PluginLoadFailure.Kind.init(rawValue:)) ?? .initFailed
            return .failure(PluginLoadFailure(file: "", kind: kind, message: object["message"]?.stringValue ?? "", domain: object["domain"]?.stringValue))
        }
        guard let name = object["name"]?.stringValue, let version = object["version"]?.stringValue,
            let library = object["library"]?.stringValue, case .array(let list)? = object["operations"]
        else {
            return .failure(PluginLoadFailure(file: "", kind: .initFailed, message: "the plugin host process answered a ready frame the host cannot read"))
        }
        return .success(IsolatedPlugin.Ready(name: name, version: version, operations: list.compactMap(\.stringValue), library: library))
    }
}

