import Foundation

/// Runs blocking work (waiting for a child process, reading its pipes) on a new thread and
/// awaits it, so the concurrency pool's few threads stay free for the tests' tasks.
public enum OwnThread {
    public static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try work() }) }.start()
        }
    }
}
