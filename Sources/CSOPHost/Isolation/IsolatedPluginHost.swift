import CSOPCore
import Foundation
import Glibc
import Logging
import Synchronization

/// The child side of an isolated plugin (`csop plugin-host --fd 3`): loads one plugins.d
/// entry in this process with the host's own loader, then runs the calls the host sends over
/// the socket on descriptor `fd` and sends back their outcomes, the plugin's events and log
/// lines (see ``IsolationChannel``). It ends — destroying the plugin — when the host closes
/// the socket, which the kernel does when the host dies; a plugin whose destroy hangs is
/// ended by `SIGALRM` 10 s later.
///
/// Calls run on the thread that reads the socket, as an in-process call runs on its caller's
/// thread. A `begin_commit` made on that thread (a plugin that commits inline) reads on
/// until the host's answer comes, keeping the calls it reads meanwhile for afterwards.
public enum IsolatedPluginHost {
    /// Serves until the host closes the socket. - Returns: the exit status.
    public static func run(fd: Int32) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let channel = IsolationChannel(descriptor: fd)
        let server = Server(channel: channel)
        server.serve()
        alarm(10)
        server.end()
        return server.failed ? 1 : 0
    }

    /// What the loop holds: the plugin once it is created, and the calls waiting for a
    /// `begin_commit` answer.
    private final class Server: @unchecked Sendable {  // `plugin`, `failed`, `reader` and `deferred` belong to the reader thread; `commits` is locked.
        let channel: IsolationChannel
        var plugin: PluginCapability?
        var failed = false
        let commits = Mutex<[UInt64: CommitWait]>([:])
        private let reader: IsolationChannel.FrameReader
        private let readerThread = pthread_self()
        /// Frames read while a call on the reader thread waited for a commit answer.
        private var deferred: [(IsolationChannel.Kind?, [UInt8])] = []

        init(channel: IsolationChannel) {
            self.channel = channel
            self.reader = channel.makeReader()
        }

        /// Reads and handles frames until the host closes the socket.
        func serve() {
            while true {
                let frame: (IsolationChannel.Kind?, [UInt8])
                if !deferred.isEmpty {
                    frame = deferred.removeFirst()
                } else if let next = reader.next() {
                    frame = next
                } else {
                    return
                }
                handle(frame.0, frame.1[...])
            }
        }

        /// A `begin_commit` on the reader thread: reads until the answer for `id` comes;
        /// calls read meanwhile wait, everything else is handled. False if the host is gone.
        func awaitCommitOnReaderThread(_ id: UInt64) -> Bool {
            while let (kind, body) = reader.next() {
                if kind == .commitAnswer {
                    var fields = IsolationChannel.Reader(body: body[...])
                    if fields.u64() == id { return fields.u8() == 1 }
                }
                if kind == .call {
                    deferred.append((kind, body))
                } else {
                    handle(kind, body[...])
                }
            }
            return false
        }

        var onReaderThread: Bool { pthread_equal(pthread_self(), readerThread) != 0 }

        func handle(_ kind: IsolationChannel.Kind?, _ body: ArraySlice<UInt8>) {
            var reader = IsolationChannel.Reader(body: body)
            switch kind {
            case .start where plugin == nil: start(body)
            case .call:
                guard let plugin, let id = reader.u64(), let operation = reader.u32(), let timeout = reader.double(),
                    let callerLength = reader.u32(), let callerBytes = reader.bytes(Int(callerLength)), Int(operation) < plugin.operations.count
                else { return }
                let context = Self.context(callerBytes)
                plugin.invoke(
                    callID: id, operation: Int(operation), payload: Array(reader.body), timeoutMilliseconds: timeout,
                    caller: context.caller, trace: context.trace, traced: context.traced, sink: ChildCall(id: id, server: self))
            case .cancel:
                guard let id = reader.u64() else { return }
                plugin?.cancel(callID: id)
            case .commitAnswer:
                guard let id = reader.u64(), let ok = reader.u8() else { return }
                commits.withLock { $0.removeValue(forKey: id) }?.answer(ok == 1)
            case .metrics:
                guard let id = reader.u64() else { return }
                var answer: [UInt8] = []
                IsolationChannel.appendU64(&answer, id)
                plugin?.writeMetrics(into: &answer)
                channel.send(.metricsText, answer)
            default: break
            }
        }

        /// The call's caller and trace from its context JSON (see ``IsolatedPlugin/invoke``).
        private static func context(_ bytes: ArraySlice<UInt8>) -> (caller: Caller?, trace: TraceContext?, traced: Bool) {
            guard !bytes.isEmpty, case .object(let object)? = try? JSONValue(parsing: Array(bytes)) else { return (nil, nil, false) }
            let trace = object["traceparent"]?.stringValue.flatMap {
                try? TraceContext(traceparent: $0, tracestate: object["tracestate"]?.stringValue)
            }
            return (caller(object), trace, object["traced"] == .bool(true))
        }

        private static func caller(_ object: JSONObject) -> Caller? {
            guard let subject = object["subject"]?.stringValue, let tenant = object["tenant"]?.stringValue,
                let actions = object["actions"]?.stringValue, let patterns = try? ActionPatterns(parsing: actions)
            else { return nil }
            return Caller(subject: subject, tenant: tenant, actions: patterns)
        }

        private func start(_ body: ArraySlice<UInt8>) {
            guard case .object(let object)? = try? JSONValue(parsing: Array(body)), let file = object["file"]?.stringValue,
                let directory = object["pluginsDirectory"]?.stringValue
            else {
                return refuse(PluginLoadFailure(file: "", kind: .initFailed, message: "the host sent a start frame this plugin host cannot read"))
            }
            if case .object(let limits)? = object["limits"] { Self.apply(limits) }
            let channel = channel
            let level = object["logLevel"]?.stringValue.flatMap(Logger.Level.init(rawValue:)) ?? .warning
            var logger = Logger(label: "csop") { _ in FrameLogHandler(channel: channel) }
            logger.logLevel = level
            var configuration = HostConfiguration(
                pluginsDirectory: directory,
                pluginSearchPath: object["searchPath"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                searchExecutableDirectory: object["searchExecutableDirectory"] == .bool(true),
                allowInsecurePermissions: object["allowInsecurePermissions"] == .bool(true), logger: logger)
            configuration.watchPluginsDirectory = false
            let events = EventHub()
            _ = events.add { event in channel.send(.event, event.json.bytes) }
            var loader = PluginLoader(configuration: configuration, events: events)
            loader.inChild = true
            do throws(PluginLoadFailure) {
                guard let loaded = try loader.load(file: file, taken: [:]) as? PluginCapability else {
                    return refuse(PluginLoadFailure(file: file, kind: .badConfig, message: "the entry is disabled"))
                }
                plugin = loaded
                let ready: JSONObject = [
                    "name": .string(loaded.name), "version": .string(loaded.version),
                    "operations": .array(loaded.operations.map { .string($0) }), "library": .string(loaded.libraryPath),
                ]
                channel.send(.ready, JSONValue.object(ready).serialized())
            } catch {
                refuse(error)
            }
        }

        private func refuse(_ failure: PluginLoadFailure) {
            failed = true
            var object: JSONObject = ["kind": .string(failure.kind.rawValue), "message": .string(failure.message)]
            if let domain = failure.domain { object["domain"] = .string(domain) }
            channel.send(.failed, JSONValue.object(object).serialized())
            channel.flush()
            channel.shutdownBoth()
        }

        /// `[limits]` as `setrlimit` (soft and hard alike, so the plugin cannot raise them).
        private static func apply(_ limits: JSONObject) {
            func set(_ resource: __rlimit_resource, _ value: JSONValue?) {
                guard case .int(let number)? = value else { return }
                var limit = rlimit(rlim_cur: rlim_t(number), rlim_max: rlim_t(number))
                _ = setrlimit(__rlimit_resource_t(resource.rawValue), &limit)
            }
            set(RLIMIT_AS, limits["memory"])
            set(RLIMIT_CPU, limits["cpuSeconds"])
            set(RLIMIT_NOFILE, limits["openFiles"])
        }

        /// The host closed the socket: destroy the plugin (its calls in flight complete into
        /// a closed socket, which is fine) and go.
        func end() {
            for wait in commits.withLock({ $0.values }) { wait.answer(false) }
            plugin?.destroy()
        }
    }

    /// One call running in the plugin: its outcome goes back as a `done` frame.
    private final class ChildCall: CallSink, Sendable {
        let id: UInt64
        let server: Server
        private let finished = Atomic<Bool>(false)

        init(id: UInt64, server: Server) {
            self.id = id
            self.server = server
        }

        /// The host records it under the call's span (it knows the call by its id).
        func recordSpan(_ json: [UInt8], plugin name: String, logger: Logger) {
            var body = [UInt8]()
            IsolationChannel.appendU64(&body, id)
            body += json
            server.channel.send(.callSpan, body)
        }

        /// The host logs it with the request's id and trace id (it knows the call by its id).
        func log(_ level: Logger.Level, _ message: String, plugin logger: Logger) {
            var body = [UInt8]()
            IsolationChannel.appendU64(&body, id)
            body.append(IsolationChannel.logByte(level))
            body += Array(message.utf8)
            server.channel.send(.callLog, body)
        }

        func complete(_ outcome: Result<RawJSON, CSOPError>) {
            guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return }
            var body = [UInt8]()
            IsolationChannel.appendU64(&body, id)
            switch outcome {
            case .success(let raw):
                body.append(1)
                body += raw.bytes
            case .failure(let error):
                body.append(0)
                body += JSONValue.object([
                    "code": .string(error.code.rawValue), "message": .string(error.message), "retry": .bool(error.retryable),
                ]).serialized()
            }
            server.channel.send(.done, body)
        }

        /// Asks the host and waits for its answer.
        func beginCommit() -> Bool {
            var body = [UInt8]()
            IsolationChannel.appendU64(&body, id)
            if server.onReaderThread {
                guard server.channel.send(.commit, body) else { return false }
                return server.awaitCommitOnReaderThread(id)
            }
            let wait = CommitWait()
            server.commits.withLock { $0[id] = wait }
            guard server.channel.send(.commit, body) else { return false }
            return wait.result()
        }
    }

    /// A `begin_commit` waiting for the host's answer.
    private final class CommitWait: Sendable {
        private let value = Mutex<Bool?>(nil)
        private let signal = DispatchSemaphore(value: 0)

        func answer(_ ok: Bool) {
            value.withLock { $0 = ok }
            signal.signal()
        }

        func result() -> Bool {
            signal.wait()
            return value.withLock { $0 } ?? false
        }
    }

    /// Sends the plugin's log lines to the host, which logs them as its own.
    private struct FrameLogHandler: LogHandler {
        let channel: IsolationChannel
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .warning

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            var body: [UInt8] = [IsolationChannel.logByte(event.level)]
            body += Array("\(event.message)".utf8)
            channel.send(.log, body)
        }
    }
}
