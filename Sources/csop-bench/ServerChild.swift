import Foundation
import Glibc

/// A server child process (`csop-serve serve`, or csop-bench's bare echo) that prints the
/// port it listens on; stopped with stdin closed, then SIGTERM, then SIGKILL.
final class ServerChild: @unchecked Sendable {  // Mutable state is guarded by `lock`.
    private let process = Process()
    private let input = Pipe()
    private let lock = NSCondition()
    private var text = ""
    private var ended = false
    private(set) var port = 0

    /// Starts `executable` and waits up to `seconds` for a line naming its port
    /// (`listening on http://127.0.0.1:PORT` or `listening PORT`).
    init(executable: String, arguments: [String], seconds: Double = 30) throws {
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let fd = output.fileHandleForReading.fileDescriptor
        Thread { [self] in readLoop(fd) }.start()
        let deadline = Date().addingTimeInterval(seconds)
        lock.lock()
        while port == 0, !ended, lock.wait(until: deadline) {}
        let found = port
        let said = String(text.suffix(400))
        lock.unlock()
        guard found > 0 else {
            stop()
            throw BenchError(message: "\((executable as NSString).lastPathComponent) did not start listening: \(said)")
        }
    }

    var pid: Int32 { process.processIdentifier }

    private func readLoop(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count <= 0 { break }
            lock.lock()
            if port == 0 {
                text += String(decoding: buffer[0..<count], as: UTF8.self)
                for line in text.split(separator: "\n") {
                    guard let range = line.range(of: "listening ") else { continue }
                    var rest = line[range.upperBound...]
                    if rest.hasPrefix("on "), let colon = rest.range(of: "127.0.0.1:") { rest = rest[colon.upperBound...] }
                    if let found = Int(rest.prefix(while: \.isNumber)), found > 0 { port = found }
                }
                if text.count > 1 << 16 { text = String(text.suffix(4096)) }
            }
            lock.broadcast()
            lock.unlock()
        }
        lock.lock()
        ended = true
        lock.broadcast()
        lock.unlock()
    }

    /// The child's resident memory in bytes (VmRSS), or nil once it is gone.
    func residentBytes() -> Double? {
        ResidentMemory.field("VmRSS", of: String(pid)).map(Double.init)
    }

    var isRunning: Bool { process.isRunning }

    /// Ends the child: stdin closed and SIGTERM, SIGKILL after 5 s.
    func stop() {
        try? input.fileHandleForWriting.close()
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(5)
        while process.isRunning, Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { stop() }
}
