import Foundation

/// Runs a program to completion for CLI tests, killing it if it outlives `timeout` (so a
/// hang fails the test instead of stalling the run).
///
/// The waiting happens on a thread of its own, never on the concurrency pool: that pool has
/// one thread per core, and a test blocking it for seconds starves every other test's tasks.
public enum ChildProcess {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        /// Whether the timeout killed it.
        public var timedOut: Bool
        public var stdoutLines: [String] { stdout.split(separator: "\n").map(String.init) }
    }

    /// - Parameters:
    ///   - environment: added to (or, with nil values, removed from) this process's environment.
    ///   - directory: the working directory (default: this process's).
    ///   - input: bytes written to its stdin, which is then closed.
    public static func run(
        _ executable: String, _ arguments: [String] = [], environment: [String: String?] = [:], directory: String? = nil,
        input: [UInt8] = [], timeout: Double = 60
    ) async throws -> Result {
        try await OwnThread.run {
            try runBlocking(executable, arguments, environment: environment, directory: directory, input: input, timeout: timeout)
        }
    }

    private static func runBlocking(
        _ executable: String, _ arguments: [String], environment: [String: String?], directory: String?,
        input: [UInt8], timeout: Double
    ) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let timer = DispatchSource.makeTimerSource(queue: .global())
        let killed = TimedOut()
        timer.schedule(deadline: .now() + timeout)
        timer.setEventHandler {
            killed.set()
            process.terminate()
            kill(process.processIdentifier, SIGKILL)
        }
        timer.resume()
        let reader = DispatchGroup()
        let err = Captured()
        DispatchQueue.global().async(group: reader) { err.set(stderr.fileHandleForReading.readDataToEndOfFile()) }
        DispatchQueue.global().async {
            if !input.isEmpty { try? stdin.fileHandleForWriting.write(contentsOf: input) }
            try? stdin.fileHandleForWriting.close()
        }
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        reader.wait()
        timer.cancel()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err.data, as: UTF8.self), timedOut: killed.value)
    }

    private final class Captured: @unchecked Sendable {  // Written once by the reader, read after the group finished.
        private let lock = NSLock()
        private var bytes = Data()
        func set(_ data: Data) { lock.withLock { bytes = data } }
        var data: Data { lock.withLock { bytes } }
    }

    private final class TimedOut: @unchecked Sendable {  // Set once from the timer queue, read after the reader group finished.
        private let lock = NSLock()
        private var flag = false
        func set() { lock.withLock { flag = true } }
        var value: Bool { lock.withLock { flag } }
    }
}
