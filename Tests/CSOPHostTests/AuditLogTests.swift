import CSOPCore
import CSOPHost
import CSOPTestSupport
import Foundation
import Glibc
import Testing

/// The audit log through a real host with real plugins: what is recorded, what never is, and
/// rotation by size.
@Suite struct AuditLogTests {
    let directory: TemporaryDirectory
    var path: String { directory.file("audit.jsonl") }

    init() throws { directory = try TemporaryDirectory("csop-audit") }

    func lines(_ file: String? = nil) throws -> [JSONValue] {
        try String(contentsOfFile: file ?? path, encoding: .utf8).split(separator: "\n").map { try JSONValue(parsing: Array($0.utf8)) }
    }

    @Test func securityEventsAreRecordedAndPayloadsNever() async throws {
        let audit = try AuditLog(path: path)
        let entries = [
            PluginEntry("00-diag.conf", library: "libcsop-diag.so"),
            PluginEntry("10-storage.conf", library: "libcsop-storage.so", config: ["path": .string(directory.file("s.sqlite")), "maxBytes": 100]),
            PluginEntry("20-broken.conf", library: "libcsop-nonexistent.so"),
        ]
        let host = try await TestEnvironment.makeHost(entries, in: directory, auditLog: audit)
        let tenant = Caller(subject: "alice", tenant: "acme", actions: try ActionPatterns(["storage.*"]))
        let patient = RequestOptions(timeout: 120_000)
        #expect(await host.dispatch("storage.save", ["key": "secret-key", "data": "PAYLOAD-SECRET"], options: patient, caller: tenant).isOK)
        #expect(await host.dispatch("storage.get", ["key": "secret-key"], options: patient, caller: tenant).isOK)
        #expect(await host.dispatch("storage.delete", ["key": "secret-key"], options: patient, id: "del-1", caller: tenant).isOK)
        #expect(await host.dispatch("diag.noop", options: patient, caller: tenant).error?.code == .forbidden)
        let big = JSONValue.string(String(repeating: "x", count: 200))
        #expect(await host.dispatch("storage.save", ["key": "big", "data": big], options: patient).error?.code == ErrorCode("QUOTA_EXCEEDED"))
        await host.shutdown()

        let lines = try lines()
        let loaded = lines.filter { $0["event"] == "plugin.loaded" }.compactMap { $0["plugin"]?.stringValue }
        #expect(loaded.sorted() == ["diag", "storage"])
        let failed = try #require(lines.first { $0["event"] == "plugin.failed" })
        #expect(failed["file"]?.stringValue?.hasSuffix("20-broken.conf") == true, "\(failed)")
        let requests = lines.filter { $0["event"] == "request" }
        // The get is not audited; the delete is, whatever its outcome; refusals are.
        #expect(requests.map { $0["action"]?.stringValue ?? "" } == ["storage.delete", "diag.noop", "storage.save"])
        #expect(requests[0]["outcome"] == "ok")
        #expect(requests[0]["subject"] == "alice")
        #expect(requests[0]["tenant"] == "acme")
        #expect(requests[0]["requestId"] == "del-1")
        #expect(requests[1]["outcome"] == "FORBIDDEN")
        #expect(requests[2]["outcome"] == "QUOTA_EXCEEDED")
        #expect(requests[2]["subject"] == nil)
        for line in lines {
            let time = try #require(line["time"]?.stringValue)
            #expect(time.count == 24 && time.hasSuffix("Z"), "\(time)")
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("PAYLOAD-SECRET") && !text.contains("secret-key"), "a payload reached the audit log")
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
    }

    @Test func theLogRotatesBySizeKeepingTheNewestFiles() throws {
        let audit = try AuditLog(path: path, maxBytes: 4096, keep: 2)
        for i in 0..<300 { audit.record("test", ["n": String(i), "fill": String(repeating: "f", count: 40)]) }
        #expect(audit.failedWrites == 0)
        let files = [path, path + ".1", path + ".2"]
        for file in files {
            var info = stat()
            #expect(stat(file, &info) == 0 && info.st_size <= 4096, "\(file)")
        }
        #expect(!FileManager.default.fileExists(atPath: path + ".3"))
        // Every line whole, and the newest ones in order across the files.
        let numbers = try (files.reversed()).flatMap { try lines($0) }.compactMap { $0["n"]?.stringValue.flatMap(Int.init) }
        #expect(numbers.last == 299)
        #expect(numbers == Array((300 - numbers.count)..<300))
    }

    @Test func anUnusableLogIsRefusedNamingIt() throws {
        #expect {
            _ = try AuditLog(path: "/nonexistent-dir/audit.jsonl")
        } throws: { error in
            (error as? CSOPError)?.message.contains("cannot open the audit log /nonexistent-dir/audit.jsonl") == true
        }
        #expect(throws: CSOPError.self) { _ = try AuditLog(path: path, maxBytes: 100) }
        #expect(throws: CSOPError.self) { _ = try AuditLog(path: path, keep: 0) }
    }
}
