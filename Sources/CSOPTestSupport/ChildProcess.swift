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
        /// Whether a signal ended it (`status` is then the signal's number).
        public var diedOfSignal: Bool
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
        let process = try SpawnedProcess(
            executable, arguments, environment: environment, directory: directory, stdin: .pipe, stdout: .pipe, stderr: .pipe)
        Thread {
            if !input.isEmpty { process.write(input) }
            process.closeInput()
        }.start()
        var timedOut = false
        let deadline = Date().addingTimeInterval(timeout)
        let captured = collect([process.output!, process.errors!], until: deadline) {
            timedOut = true
            process.kill(SIGKILL)
        }
        // It may run on with its output closed.
        while process.isRunning && Date() < deadline { usleep(2_000) }
        if process.isRunning {
            timedOut = true
            process.kill(SIGKILL)
        }
        process.waitBlocking()
        return Result(
            status: process.terminationStatus ?? -1, stdout: String(decoding: captured[0], as: UTF8.self),
            stderr: String(decoding: captured[1], as: UTF8.self), timedOut: timedOut, diedOfSignal: process.diedOfSignal)
    }

    /// Reads every descriptor to its end, then closes it. At `deadline` it calls `expire` (which
    /// kills the child) and reads on for 5 s at most: a grandchild may hold a pipe open.
    private static func collect(_ fds: [Int32], until deadline: Date, expire: () -> Void) -> [[UInt8]] {
        var captured = [[UInt8]](repeating: [], count: fds.count)
        var open = Set(fds.indices)
        var cutoff = deadline
        var expired = false
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while !open.isEmpty {
            let remaining = cutoff.timeIntervalSinceNow
            if remaining <= 0 {
                if expired { break }
                expired = true
                expire()
                cutoff = Date().addingTimeInterval(5)
                continue
            }
            var pollers = open.sorted().map { pollfd(fd: fds[$0], events: Int16(POLLIN), revents: 0) }
            let ready = poll(&pollers, nfds_t(pollers.count), Int32(min(remaining, 1) * 1000) + 1)
            guard ready > 0 else { continue }
            for poller in pollers where poller.revents != 0 {
                let index = fds.firstIndex(of: poller.fd)!
                let n = buffer.withUnsafeMutableBytes { read(poller.fd, $0.baseAddress!, $0.count) }
                if n > 0 {
                    captured[index] += buffer[0..<n]
                } else if n == 0 || errno != EINTR {
                    open.remove(index)
                }
            }
        }
        for fd in fds { close(fd) }
        return captured
    }
}
