import Foundation
import Synchronization

/// A `csop serve` child process (the real executable, `csop-serve serve`), started on a
/// loopback port and stopped by a signal.
public final class ServeProcess: Sendable {
    /// The port it listens on.
    public let port: Int
    private let process: SpawnedProcess
    private let stderrLines: LockedBox<[String]>

    /// Starts it with `arguments` (add `--listen 127.0.0.1:0` for a free port) and waits until
    /// it says it listens. Its stdout and stderr both come to us (see `stderr`); it holds no
    /// descriptor of the test process.
    /// - Throws: when it exits first or does not listen within `timeout` seconds, with its stderr.
    ///
    /// Unless `arguments` set it, `--header-timeout` is 120 s: on a loaded machine a test's
    /// task can wait seconds for a pool thread between connecting and writing its request,
    /// and the 10 s default would close it as a slow client.
    public init(_ arguments: [String], timeout: Double = 60) async throws {
        let patient = arguments.contains("--header-timeout") ? [] : ["--header-timeout", "120"]
        let process = try SpawnedProcess(
            "\(TestEnvironment.buildDirectory)/csop-serve", ["serve"] + arguments + patient, stdin: .null, stdout: .pipe, stderr: .toStdout)
        self.process = process
        let lines = LockedBox<[String]>([])
        self.stderrLines = lines
        let fd = process.output!
        let (port, rest): (Int?, LineSplitter) = try await OwnThread.run {
            var found: Int?
            var splitter = LineSplitter()
            let deadline = Date().addingTimeInterval(timeout)
            // Reads lines until the "listening on" one; a thread keeps draining after that.
            while found == nil, Date() < deadline {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 200) >= 0 else { continue }
                if poller.revents == 0 { continue }
                guard let new = splitter.read(fd) else { break }
                lines.withLock { $0.append(contentsOf: new) }
                for line in new {
                    if found == nil, let range = line.range(of: "listening on ") {
                        let url = line[range.upperBound...].prefix { $0 != " " }
                        if let colon = url.lastIndex(of: ":") { found = Int(url[url.index(after: colon)...]) }
                    }
                }
            }
            return (found, splitter)
        }
        guard let port else {
            process.stopBlocking()
            close(fd)
            throw ServeProcessError(message: "csop serve did not start listening:\n" + lines.withLock { $0.joined(separator: "\n") })
        }
        self.port = port
        Thread {
            var splitter = rest
            while let new = splitter.read(fd) { lines.withLock { $0.append(contentsOf: new) } }
            close(fd)
        }.start()
    }

    /// What it wrote to stderr so far.
    public var stderr: String { stderrLines.withLock { $0.joined(separator: "\n") } }

    public var isRunning: Bool { process.isRunning }

    /// Sends `signal` (SIGTERM by default) and waits (up to `timeout` seconds, then SIGKILL) for it to exit.
    /// - Returns: its exit status, or the signal that ended it.
    @discardableResult
    public func stop(signal: Int32 = 15, timeout: Double = 30) async throws -> (status: Int32, killed: Bool) {
        let process = self.process
        return try await OwnThread.run { process.stopBlocking(signal: signal, grace: timeout) }
    }
}

/// Splits what a descriptor gives into lines (a line cut between two reads is kept whole).
private struct LineSplitter: Sendable {
    private var pending: [UInt8] = []

    /// Reads once (blocking); returns the lines completed, or nil at the end of the input.
    mutating func read(_ fd: Int32) -> [String]? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
        guard n > 0 else { return nil }
        pending += buffer[0..<n]
        var lines: [String] = []
        while let newline = pending.firstIndex(of: 0x0A) {
            lines.append(String(decoding: pending[..<newline], as: UTF8.self))
            pending.removeFirst(newline + 1)
        }
        return lines
    }
}

/// A value behind a lock, shareable between threads (a `Mutex` cannot be captured).
public final class LockedBox<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    public init(_ value: Value) { mutex = Mutex(value) }
    public func withLock<T>(_ body: (inout Value) -> T) -> T { mutex.withLock { body(&$0) } }
}

public struct ServeProcessError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
