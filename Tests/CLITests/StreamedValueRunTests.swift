import CSOPCore
import CSOPTestSupport
import Foundation
import Testing

/// A streamed value larger than a JSON value may be (64 MiB) saved and read through `csop run`,
/// one request line at a time, while the process's resident memory stays bounded: a value held
/// whole anywhere would add at least its size.
@Suite struct StreamedValueRunTests {
    /// 96 MiB: past the JSON limit and past the memory bound, in 1 MiB pieces.
    static let pieces = 96
    static let piece = 1 << 20
    static let maxGrowth = 64 << 20

    @Test func aValuePastTheJSONLimitGoesThroughCsopRunWithBoundedMemory() async throws {
        let directory = try TemporaryDirectory("csop-stream")
        let plugins = try directory.writePlugins([
            PluginEntry("10-storage.conf", library: "libcsop-storage.so", config: ["path": .string(directory.file("storage.sqlite"))])
        ])
        // The exchange blocks on pipes: on a thread of its own, not the concurrency pool's.
        let (growth, mismatched) = try await OwnThread.run { [self] in
            let child = try LineChild(arguments: ["run", "--plugins-dir", plugins], environment: ["CSOP_PLUGIN_PATH": TestEnvironment.buildDirectory])
            defer { child.stop() }
            // Warm up every path once (1 MiB), so the measure starts from a process that has run them.
            try save(child, key: "warm", count: 1, seed: 1000)
            _ = try read(child, key: "warm", count: 1, seed: 1000)
            let before = try child.resetPeakMemory()
            try save(child, key: "big", count: Self.pieces, seed: 0)
            let mismatched = try read(child, key: "big", count: Self.pieces, seed: 0)
            return (try child.memory("VmHWM") - before, mismatched)
        }
        #expect(mismatched.isEmpty, "pieces read back different: \(mismatched)")
        #expect(growth <= Self.maxGrowth, "csop run's peak RSS grew by \(growth >> 20) MiB for a \(Self.pieces) MiB value")
    }

    /// One piece of the value: its index in the first 8 bytes of every 4 KiB, so a piece in the
    /// wrong place or repeated is caught, cheaply in a debug build.
    static func piece(_ index: Int, seed: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: index &+ seed), count: piece)
        bytes.withUnsafeMutableBytes { raw in
            for at in stride(from: 0, to: piece, by: 4096) {
                withUnsafeBytes(of: UInt64(index * 1_000_003 + seed + at)) { raw.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: 8) }
            }
        }
        return bytes
    }

    func save(_ child: LineChild, key: String, count: Int, seed: Int) throws {
        let opened = try child.call(["action": "storage.upload", "payload": ["key": .string(key)]])
        guard case .string(let upload)? = opened["data"]?["upload"] else { throw LineChild.Failure("storage.upload answered \(opened)") }
        for index in 0..<count {
            let data = Data(Self.piece(index, seed: seed)).base64EncodedString()
            let reply = try child.call(
                ["action": "storage.append", "payload": ["upload": .string(upload), "offset": .int(Int64(index * Self.piece)), "data": .string(data)]])
            guard reply["status"] == "ok" else { throw LineChild.Failure("append \(index) answered \(reply)") }
        }
        let committed = try child.call(["action": "storage.commit", "payload": ["upload": .string(upload), "size": .int(Int64(count * Self.piece))]])
        guard committed["status"] == "ok" else { throw LineChild.Failure("commit answered \(committed)") }
    }

    /// Reads the value in 1 MiB slices; returns the indexes of the pieces that differ.
    func read(_ child: LineChild, key: String, count: Int, seed: Int) throws -> [Int] {
        var mismatched: [Int] = []
        var version: Int64?
        for index in 0..<count {
            var payload: JSONObject = ["key": .string(key), "offset": .int(Int64(index * Self.piece)), "length": .int(Int64(Self.piece))]
            if let version { payload["version"] = .int(version) }
            let reply = try child.call(["action": "storage.read", "payload": .object(payload)])
            guard case .string(let text)? = reply["data"]?["data"], let data = Data(base64Encoded: text), case .int(let at)? = reply["data"]?["version"] else {
                throw LineChild.Failure("read \(index) answered \(reply)")
            }
            version = at
            let expected = Self.piece(index, seed: seed)
            let same = data.count == expected.count && data.withUnsafeBytes { a in expected.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, b.count) == 0 } }
            if !same { mismatched.append(index) }
            if index == count - 1, reply["data"]?["done"] != true { throw LineChild.Failure("the last slice is not done: \(reply)") }
        }
        return mismatched
    }
}

/// A child process spoken to one JSON line at a time: each ``call(_:)`` writes a request and
/// reads lines until its answer (events in between are skipped). One task uses it at a time.
final class LineChild {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    private let process: Process
    private let input: FileHandle
    private let output: Int32
    private var pending: [UInt8] = []
    private var counter = 0

    init(arguments: [String], environment: [String: String]) throws {
        signal(SIGPIPE, SIG_IGN)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestEnvironment.csopExecutable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.standardError
        try process.run()
        self.process = process
        input = stdin.fileHandleForWriting
        output = stdout.fileHandleForReading.fileDescriptor
    }

    func call(_ request: JSONObject) throws -> JSONValue {
        counter += 1
        let id = "r\(counter)"
        var line = request
        line["id"] = .string(id)
        try input.write(contentsOf: JSONValue.object(line).serialized() + [0x0A])
        while true {
            let answer = try nextLine()
            if answer["id"] == .string(id) { return answer }
        }
    }

    private func nextLine() throws -> JSONValue {
        var scanned = 0
        while true {
            // memchr: an element loop over megabyte lines is slow in a debug build.
            let found = pending.count == scanned ? nil : pending.withUnsafeBytes { raw in
                memchr(raw.baseAddress! + scanned, 0x0A, raw.count - scanned).map { $0 - UnsafeMutableRawPointer(mutating: raw.baseAddress!) }
            }
            if let newline = found {
                let line = Array(pending[..<newline])
                pending.removeFirst(newline + 1)
                return try JSONValue(parsing: line)
            }
            scanned = pending.count
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            let n = chunk.withUnsafeMutableBytes { read(output, $0.baseAddress!, $0.count) }
            guard n > 0 else { throw Failure("the child closed its output") }
            pending.append(contentsOf: chunk[..<n])
        }
    }

    /// A `/proc/<pid>/status` figure, in bytes.
    func memory(_ field: String) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)
        for line in status.split(separator: "\n") where line.hasPrefix(field + ":") {
            if let kib = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) { return kib * 1024 }
        }
        throw Failure("no \(field) in /proc/\(process.processIdentifier)/status")
    }

    /// Resets the child's peak RSS (VmHWM) to its RSS now, and returns that.
    func resetPeakMemory() throws -> Int {
        try "5".write(toFile: "/proc/\(process.processIdentifier)/clear_refs", atomically: false, encoding: .utf8)
        return try memory("VmRSS")
    }

    func stop() {
        try? input.close()
        process.waitUntilExit()
    }
}
