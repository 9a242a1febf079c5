import Foundation

/// A server running in this process on a loopback port until ``stop()``.
final class RunningServer: Sendable {
    let port: Int
    private let task: Task<Void, any Error>

    /// Starts `run` (which calls its argument with the bound port once listening).
    static func start(_ run: @escaping @Sendable (@escaping @Sendable (Int) -> Void) async throws -> Void) async throws -> RunningServer {
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let task = Task {
            defer { continuation.finish() }
            try await run { continuation.yield($0) }
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else {
            let failure: String
            if case .failure(let error) = await task.result { failure = "\(error)" } else { failure = "it ended" }
            throw BenchError(message: "the server did not start: \(failure)")
        }
        return RunningServer(port: port, task: task)
    }

    private init(port: Int, task: Task<Void, any Error>) {
        self.port = port
        self.task = task
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}
