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
        // The reader scans raw bytes (memchr, memmem): the driver shares the two cores with the
        // child it measures, so every microsecond it spends per line is taken from the child.
        let reader = Thread {
            let capacity = 1 << 20
            let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
            defer { buffer.deallocate() }
            var end = 0
            var received = 0
            while received < count {
                let n = read(readFD, buffer + end, capacity - end)
                if n <= 0 { break }
                let now = DispatchTime.now().uptimeNanoseconds
                end += n
                var lineStart = 0
                var released = 0
                while lineStart < end, let found = memchr(buffer + lineStart, 0x0A, end - lineStart) {
                    let newline = buffer.distance(to: found.assumingMemoryBound(to: UInt8.self))
                    let line = UnsafeBufferPointer(start: buffer + lineStart, count: newline - lineStart)
                    lineStart = newline + 1
                    guard let index = Self.requestIndex(line) else { continue }
                    if Self.isError(line) { errors += 1 }
                    latencyPointer.value[received] = now - sentPointer.value[index]
                    received += 1
                    released += 1
                }
                if lineStart > 0 {
                    memmove(buffer, buffer + lineStart, end - lineStart)
                    end -= lineStart
                }
                if end == capacity { end = 0 }  // A line longer than 1 MiB is no response to this driver: dropped.
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

    private static let idPrefix = Array("{\"id\":\"r".utf8)
    private static let errorMarker = Array("\"status\":\"error\"".utf8)

    private static func requestIndex(_ line: UnsafeBufferPointer<UInt8>) -> Int? {
        guard line.count > idPrefix.count, memcmp(line.baseAddress!, idPrefix, idPrefix.count) == 0 else { return nil }
        var index = 0
        var position = idPrefix.count
        while position < line.count, line[position] >= 0x30, line[position] <= 0x39 {
            index = index * 10 + Int(line[position] - 0x30)
            position += 1
        }
        return index
    }

    private static func isError(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        var position = 0
        let base = line.baseAddress!
        while line.count - position >= errorMarker.count, let quote = memchr(base + position, 0x22, line.count - position) {
            position = base.distance(to: quote.assumingMemoryBound(to: UInt8.self))
            if line.count - position >= errorMarker.count, memcmp(base + position, errorMarker, errorMarker.count) == 0 { return true }
            position += 1
        }
        return false
    }
}

/// A raw pointer handed to a thread that only touches disjoint elements.
struct UnsafeSendable<T>: @unchecked Sendable {  // Callers coordinate access through a lock or disjoint indexes.
    let value: T
    init(_ value: T) { self.value = value }
}
