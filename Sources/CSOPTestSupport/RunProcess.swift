public import CSOPCore
import Foundation
import Synchronization

/// A `csop run` child process: send request lines, read response and event lines.
public final class RunProcess: Sendable {
    private let process: Process
    private let input: FileHandle
    private final class Shared: Sendable {
        let lines = Mutex<[JSONValue]>([])
        let rawLines = Mutex<[String]>([])
        let finished = Atomic<Bool>(false)
    }
    private let shared = Shared()

    /// Starts `csop run --plugins-dir pluginsDirectory` (plus `arguments`).
    /// - Parameter closeOutputAfter: close our end of its stdout after this many lines, as
    ///   `csop run | head -N` does.
    public init(
        pluginsDirectory: String, arguments: [String] = [], environment: [String: String] = [:], closeOutputAfter: Int? = nil
    ) throws {
        // Writing to a child that exited must be an error here, not the end of the test run.
        signal(SIGPIPE, SIG_IGN)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestEnvironment.csopExecutable)
        process.arguments = ["run", "--plugins-dir", pluginsDirectory] + arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let stdin = Pipe()
        let stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.standardError
        try process.run()
        self.process = process
        self.input = stdin.fileHandleForWriting
        let fd = stdout.fileHandleForReading.fileDescriptor
        let thread = Thread { [shared] in
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n <= 0 { break }
                pending += buffer[0..<n]
                var start = 0
                while let newline = pending[start...].firstIndex(of: 0x0A) {
                    let line = Array(pending[start..<newline])
                    start = newline + 1
                    let value = (try? JSONValue(parsing: line)) ?? .string(String(decoding: line, as: UTF8.self))
                    shared.rawLines.withLock { $0.append(String(decoding: line, as: UTF8.self)) }
                    shared.lines.withLock { $0.append(value) }
                }
                pending.removeFirst(start)
                if let closeOutputAfter, shared.lines.withLock({ $0.count }) >= closeOutputAfter {
                    close(fd)
                    break
                }
            }
            shared.finished.store(true, ordering: .releasing)
        }
        thread.start()
    }

    /// Whether a signal ended the process (after it exited).
    public var diedOfSignal: Bool { !process.isRunning && process.terminationReason == .uncaughtSignal }

    /// Writes lines on a background thread until `count` were written or a write fails (the
    /// process closed its stdin or exited). - Returns: the number written.
    public func flood(_ line: String, count: Int) async -> Int {
        let input = self.input
        return await withCheckedContinuation { continuation in
            Thread {
                let bytes = Data((line + "\n").utf8)
                var written = 0
                while written < count, (try? input.write(contentsOf: bytes)) != nil { written += 1 }
                continuation.resume(returning: written)
            }.start()
        }
    }

    /// The process id.
    public var pid: Int32 { process.processIdentifier }

    /// Writes one request line.
    public func send(_ request: JSONValue) throws {
        try send(raw: request.jsonString)
    }

    /// Writes `line` and a newline, as is.
    public func send(raw line: String) throws {
        try input.write(contentsOf: Data((line + "\n").utf8))
    }

    /// Every line received so far (parsed; unparsable lines appear as `.string`).
    public var received: [JSONValue] { shared.lines.withLock { $0 } }

    /// Every line received so far, as text.
    public var receivedText: [String] { shared.rawLines.withLock { $0 } }

    /// Waits until a line satisfies `predicate`, up to `timeout` seconds.
    public func waitFor(timeout: Double = 10, _ predicate: (JSONValue) -> Bool) async -> JSONValue? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let match = shared.lines.withLock({ $0 }).first(where: predicate) { return match }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return shared.lines.withLock { $0 }.first(where: predicate)
    }

    /// Waits for the response with `id`.
    public func response(_ id: String, timeout: Double = 10) async -> JSONValue? {
        await waitFor(timeout: timeout) { $0["id"]?.stringValue == id && $0["status"] != nil }
    }

    /// Sends a request with `id` and waits for its response.
    public func call(_ id: String, _ action: String, _ payload: JSONValue = [:], timeout: Double = 10) async throws -> JSONValue? {
        try send(["id": .string(id), "action": .string(action), "payload": payload])
        return await response(id, timeout: timeout)
    }

    /// Closes stdin (EOF) and waits for the exit status.
    public func finish(timeout: Double = 30) async -> Int32? {
        try? input.close()
        return await waitForExit(timeout: timeout)
    }

    /// Sends `signal` (e.g. SIGKILL).
    public func kill(_ signal: Int32 = 9) {
        Foundation.kill(process.processIdentifier, signal)
    }

    /// Waits for the process to exit; nil on timeout.
    public func waitForExit(timeout: Double = 30) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        guard !process.isRunning else { return nil }
        while !shared.finished.load(ordering: .acquiring) && Date() < deadline { try? await Task.sleep(for: .milliseconds(2)) }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}
