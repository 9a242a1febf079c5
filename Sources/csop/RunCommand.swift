import ArgumentParser
import CSOPHost
import Dispatch
import Glibc

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Serve requests as JSON lines on stdin; print responses and events as JSON lines on stdout.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("max-in-flight"), help: "Requests running at once; past it, stdin is not read until one finishes.")
    var maxInFlight: Int = 1024

    func validate() throws {
        guard (1...1_000_000).contains(maxInFlight) else { throw ValidationError("--max-in-flight must be between 1 and 1000000") }
    }

    func run() async throws {
        let host = try await global.makeHost()
        let server = LineServer(host: host, maxInFlight: maxInFlight)
        let signals = SignalWatcher([SIGINT, SIGTERM]) { server.stop() }
        defer { signals.cancel() }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            startThread {
                server.serve()
                continuation.resume()
            }
        }
        await host.shutdown()
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

/// Turns SIGINT/SIGTERM into a call, for graceful shutdown.
final class SignalWatcher: @unchecked Sendable {  // Dispatch sources are thread-safe; the array is immutable.
    private let sources: [any DispatchSourceSignal]

    init(_ signals: [Int32], handler: @escaping @Sendable () -> Void) {
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }

    func cancel() { for source in sources { source.cancel() } }
}
