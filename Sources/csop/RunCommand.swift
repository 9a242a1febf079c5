import ArgumentParser
import CSOPHost
import Dispatch
import Glibc

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Serve requests as JSON lines on stdin; print responses and events as JSON lines on stdout.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let host = try await global.makeHost()
        let server = LineServer(host: host)
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
