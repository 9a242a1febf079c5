import ArgumentParser
import CSOPCLISupport
import CSOPHost
import Dispatch
import Glibc
import Synchronization

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Serve requests as JSON lines on stdin; print responses and events as JSON lines on stdout.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("max-in-flight"), help: "Requests running at once; past it, stdin is not read until one finishes.")
    var maxInFlight: Int = 1024

    @Option(name: .customLong("max-line-bytes"), help: "The longest request line; a longer one is answered INVALID_PAYLOAD once and skipped.")
    var maxLineBytes: Int = LineServer.defaultMaxLineBytes

    @Option(
        name: .customLong("max-in-flight-bytes"),
        help: "Bytes of request lines running at once; past it, stdin is not read until answers free room. The host refuses a payload larger than this.")
    var maxInFlightBytes: Int = HostConfiguration.defaultMaxInFlightBytes

    @Option(
        name: .customLong("metrics-listen"),
        help: "Serve GET /metrics (Prometheus's text format) at PORT, HOST:PORT or [IPV6]:PORT (host 127.0.0.1 unless given). No auth: keep it on loopback.")
    var metricsListen: String?

    func validate() throws {
        guard ((1 << 20)...(1 << 40)).contains(maxInFlightBytes) else {
            throw ValidationError("--max-in-flight-bytes must be between 1048576 and 1099511627776")
        }
        guard (1...1_000_000).contains(maxInFlight) else { throw ValidationError("--max-in-flight must be between 1 and 1000000") }
        guard (1024...(1 << 30)).contains(maxLineBytes) else { throw ValidationError("--max-line-bytes must be between 1024 and 1073741824") }
    }

    func run() async throws {
        // Watched from the start: a stop signal while the plugins load ends the run cleanly
        // (no line is read), never by the signal's default action.
        let stop = PendingStop()
        let signals = SignalWatcher(SignalWatcher.stopSignals) { stop.request() }
        defer { signals.cancel() }
        let metrics = metricsListen == nil ? nil : HostMetrics()
        let host = try await global.makeHost(serving: true) { configuration in
            configuration.maxInFlightBytes = maxInFlightBytes
            configuration.metrics = metrics
        }
        var listener: MetricsListener?
        if let metricsListen {
            do throws(MetricsListenerError) {
                listener = try MetricsListener(address: metricsListen, host: host)
            } catch {
                await host.shutdown()
                throw ValidationError(error.description)
            }
            listener?.start()
            printLine("csop run: metrics at http://\(Self.shown(metricsListen, port: listener!.port))/metrics", to: 2)
        }
        defer { listener?.stop() }
        let server = LineServer(host: host, maxInFlight: maxInFlight, maxLineBytes: maxLineBytes)
        stop.attach { server.stop() }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            startThread {
                server.serve()
                continuation.resume()
            }
        }
        guard !server.outputClosed else {
            // Nobody reads the answers: give running work a moment, then go.
            printLine("csop run: stdout was closed; stopped reading requests", to: 2)
            await host.shutdown(gracePeriod: 1000)
            throw ExitCode(1)
        }
        await host.shutdown()
    }
}

extension RunCommand {
    /// `HOST:PORT` as given, with the bound port (for port 0).
    static func shown(_ address: String, port: Int) -> String {
        let host = (try? MetricsListener.split(address).0) ?? "127.0.0.1"
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// A stop asked for by a signal, kept until the server it stops exists.
private final class PendingStop: Sendable {
    private let state = Mutex<(requested: Bool, stop: (@Sendable () -> Void)?)>((false, nil))

    /// Stops the attached server, or the one attached later.
    func request() {
        let stop = state.withLock { state in
            state.requested = true
            return state.stop
        }
        stop?()
    }

    /// From now on a request calls `stop`; one made already calls it at once.
    func attach(_ stop: @escaping @Sendable () -> Void) {
        let requested = state.withLock { state in
            state.stop = stop
            return state.requested
        }
        if requested { stop() }
    }
}

/// Runs `body` on a new detached thread, for blocking loops that must not hold a
/// cooperative-pool thread.
func startThread(_ body: @escaping @Sendable () -> Void) {
    final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    pthread_create(&thread, nil, { raw in
        Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, Unmanaged.passRetained(Box(body)).toOpaque())
    pthread_detach(thread)
}
