public import CSOPCore
import Foundation
import Synchronization

/// A `csop run` child process: send request lines, read response and event lines.
public final class RunProcess: Sendable {
    private let process: SpawnedProcess
    private final class Shared: Sendable {
        let lines = Mutex<[JSONValue]>([])
        let rawLines = Mutex<[String]>([])
        let finished = Atomic<Bool>(false)
    }
    private let shared = Shared()

    /// Starts `csop run --plugins-dir pluginsDirectory` (plus `arguments`). Its stderr is the
    /// test process's; it inherits no other descriptor, so it ends when the test process does
    /// (its stdin reaches its end).
    /// - Parameter closeOutputAfter: close our end of its stdout after this many lines, as
    ///   `csop run | head -N` does.
    public init(
        pluginsDirectory: String, arguments: [String] = [], environment: [String: String] = [:], closeOutputAfter: Int? = nil
    ) throws {
        let process = try SpawnedProcess(
            TestEnvironment.csopExecutable, ["run", "--plugins-dir", pluginsDirectory] + arguments,
            environment: environment.mapValues { Optional($0) }, stdin: .pipe, stdout: .pipe, stderr: .inherit)
        self.process = process
        let fd = process.output!
        let thread = Thread { [shared] in
            defer { close(fd) }
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
                if let closeOutputAfter, shared.lines.withLock({ $0.count }) >= closeOutputAfter { break }
            }
            shared.finished.store(true, ordering: .releasing)
        }
        thread.start()
    }

    /// Whether a signal ended the process (after it exited).
    public var diedOfSignal: Bool { process.diedOfSignal }

    /// Writes lines on a background thread until `count` were written or a write fails (the
    /// process closed its stdin or exited). - Returns: the number written.
    public func flood(_ line: String, count: Int) async -> Int {
        let process = self.process
        return await withCheckedContinuation { continuation in
            Thread {
                let bytes = Array((line + "\n").utf8)
                var written = 0
                while written < count, process.write(bytes) { written += 1 }
                continuation.resume(returning: written)
            }.start()
        }
    }

    /// The process id.
    public var pid: Int32 { process.pid }

    /// Writes one request line.
    public func send(_ request: JSONValue) throws {
        try send(raw: request.jsonString)
    }

    /// Writes `line` and a newline, as is.
    public func send(raw line: String) throws {
        guard process.write(Array((line + "\n").utf8)) else {
            throw SpawnError(message: "csop run closed its input (it exited?)")
        }
    }

    /// Every line received so far (parsed; unparsable lines appear as `.string`).
    public var received: [JSONValue] { shared.lines.withLock { $0 } }

    /// Every line received so far, as text.
    public var receivedText: [String] { shared.rawLines.withLock { $0 } }

    /// Waits until a line satisfies `predicate`, up to `timeout` seconds (a minute by default:
    /// a loaded machine can be that slow, and a line that is due returns at once).
    public func waitFor(timeout: Double = 60, _ predicate: (JSONValue) -> Bool) async -> JSONValue? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let match = shared.lines.withLock({ $0 }).first(where: predicate) { return match }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return shared.lines.withLock { $0 }.first(where: predicate)
    }

    /// Waits for the response with `id`.
    public func response(_ id: String, timeout: Double = 60) async -> JSONValue? {
        await waitFor(timeout: timeout) { $0["id"]?.stringValue == id && $0["status"] != nil }
    }

    /// Sends a request with `id` and waits for its response.
    public func call(_ id: String, _ action: String, _ payload: JSONValue = [:], timeout: Double = 60) async throws -> JSONValue? {
        try send(["id": .string(id), "action": .string(action), "payload": payload])
        return await response(id, timeout: timeout)
    }

    /// Closes stdin (EOF) and waits for the exit status.
    public func finish(timeout: Double = 30) async -> Int32? {
        process.closeInput()
        return await waitForExit(timeout: timeout)
    }

    /// Sends `signal` (e.g. SIGKILL).
    public func kill(_ signal: Int32 = 9) {
        process.kill(signal)
    }

    /// Waits for the process to exit; nil on timeout.
    public func waitForExit(timeout: Double = 30) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        guard await process.waitForExit(timeout: timeout) != nil else { return nil }
        while !shared.finished.load(ordering: .acquiring) && Date() < deadline { try? await Task.sleep(for: .milliseconds(2)) }
        return process.terminationStatus
    }
}
