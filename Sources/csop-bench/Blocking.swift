import Foundation

/// Runs blocking `body` (a socket client, a child process wait) on a thread of its own, so
/// it takes no thread from the Swift concurrency pool that an in-process server runs on.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 1 << 22
        thread.start()
    }
}
