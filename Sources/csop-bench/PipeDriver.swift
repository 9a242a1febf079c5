import CSOPCLISupport
import CSOPCore
import Foundation
import Glibc
import Synchronization

/// Drives a line-oriented child process (`csop run`, or `cat` as the transport baseline)
/// with a fixed number of requests in flight, timing each from write to response line.
struct PipeDriver {
    var executable: String
    var arguments: [String]

    struct Result {
        var throughput: Double
        var latency: LatencyStats
        var errors: Int
    }

    /// Sends `count` lines made by `line(i)` (each must start with `{"id":"r<i>"`), keeping
    /// `window` unanswered at most.
    func run(count: Int, window: Int, line: (Int) -> [UInt8]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let writeFD = input.fileHandleForWriting.fileDescriptor
        let readFD = output.fileHandleForReading.fileDescriptor

        let lines = (0..<count).map { line($0) + [0x0A] }
        let sent = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
        defer { sent.deallocate() }
        let latencies = UnsafeMutablePointer<UInt64>.allocate(capacity: count)
        defer { latencies.deallocate() }
        let permits = ConditionLock()
        nonisolated(unsafe) var available = window
        nonisolated(unsafe) var errors = 0
        let sentPointer = UnsafeSendable(sent)
        let latencyPointer = UnsafeSendable(latencies)

        let start = DispatchTime.now().uptimeNanoseconds
        let reader = Thread {
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var pending: [UInt8] = []
            var received = 0
            while received < count {
                let n = buffer.withUnsafeMutableBytes { read(readFD, $0.baseAddress!, $0.count) }
                if n <= 0 { break }
                let now = DispatchTime.now().uptimeNanoseconds
                pending += buffer[0..<n]
                var lineStart = 0
                var released = 0
                while let newline = pending[lineStart...].firstIndex(of: 0x0A) {
                    let responseLine = pending[lineStart..<newline]
                    lineStart = newline + 1
                    guard let index = Self.requestIndex(responseLine) else { continue }
                    if Self.isError(responseLine) { errors += 1 }
                    latencyPointer.value[received] = now - sentPointer.value[index]
                    received += 1
                    released += 1
                }
                pending.removeFirst(lineStart)
                if released > 0 {
                    permits.withLock {
                        available += released
                        permits.signal()
                    }
                }
            }
        }
        reader.start()
        var next = 0
        while next < count {
            var batch: [UInt8] = []
            permits.withLock {
                while available == 0 { permits.wait() }
                let take = min(available, count - next)
                available -= take
                let now = DispatchTime.now().uptimeNanoseconds
                for i in next..<(next + take) {
                    sent[i] = now
                    batch += lines[i]
                }
                next += take
            }
            writeAll(writeFD, batch)
        }
        try input.fileHandleForWriting.close()
        process.waitUntilExit()
        while reader.isExecuting { usleep(1000) }
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let samples = Array(UnsafeBufferPointer(start: latencies, count: count))
        return Result(
            throughput: Double(count) / elapsed, latency: BenchContext.stats(nanoseconds: samples), errors: errors)
    }

    private static func requestIndex(_ line: ArraySlice<UInt8>) -> Int? {
        let prefix = Array("{\"id\":\"r".utf8)
        guard line.starts(with: prefix) else { return nil }
        var index = 0
        var position = line.startIndex + prefix.count
        while position < line.endIndex, line[position] >= 0x30, line[position] <= 0x39 {
            index = index * 10 + Int(line[position] - 0x30)
            position += 1
        }
        return index
    }

    private static func isError(_ line: ArraySlice<UInt8>) -> Bool {
        let marker = Array("\"status\":\"error\"".utf8)
        return line.firstRange(of: marker) != nil
    }
}

/// A raw pointer handed to a thread that only touches disjoint elements.
struct UnsafeSendable<T>: @unchecked Sendable {  // Callers coordinate access through a lock or disjoint indexes.
    let value: T
    init(_ value: T) { self.value = value }
}
