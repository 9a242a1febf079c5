import ArgumentParser
import CSOPHost
import Glibc

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Serve requests as JSON lines on stdin; print responses and events as JSON lines on stdout.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let host = try await global.makeHost()
        let server = LineServer(host: host)
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
