import CSOPCore
import CSOPTestSupport
import Foundation
import Testing
@testable import StoragePlugin

/// `csop run` child processes stream saves and are killed with SIGKILL at a random moment;
/// every save they acknowledged must then be readable with its exact value.
@Suite struct StorageDurabilityTests {
    static func value(_ writer: Int, _ i: Int) -> JSONValue {
        ["writer": .int(Int64(writer)), "i": .int(Int64(i)), "pad": .string(String(repeating: "p", count: i % 300))]
    }

    /// Starts `writers` processes on one database, each streaming `perWriter` saves, and kills
    /// them all once at least `killAfter` saves were acknowledged in total.
    func killDuringSaves(writers: Int, perWriter: Int) async throws {
        let directory = try TemporaryDirectory("csop-storage-kill")
        let database = directory.file("store.sqlite")
        let plugins = try directory.writePlugins([
            PluginEntry("20-storage.conf", library: TestEnvironment.library("storage"), config: ["path": .string(database)])
        ])
        let processes = try (0..<writers).map { _ in try RunProcess(pluginsDirectory: plugins) }
        let killAfter = Int.random(in: (perWriter * writers / 10)...(perWriter * writers * 8 / 10))
        func acknowledged() -> Int {
            processes.reduce(0) { sum, process in sum + process.received.filter { $0["status"] == "ok" }.count }
        }
        var sent = 0
        sending: while sent < perWriter {
            for (writer, process) in processes.enumerated() {
                for i in sent..<min(sent + 50, perWriter) {
                    try process.send([
                        "id": .string("\(writer)-\(i)"), "action": "storage.save",
                        "payload": ["key": .string("w\(writer)-k\(i)"), "data": Self.value(writer, i)],
                    ])
                }
            }
            sent += 50
            try await Task.sleep(for: .milliseconds(Int.random(in: 1...5)))
            if acknowledged() >= killAfter { break sending }
        }
        for process in processes { process.kill(9) }
        for process in processes { _ = await process.waitForExit() }

        var confirmed: [(writer: Int, i: Int)] = []
        for (writer, process) in processes.enumerated() {
            for line in process.received where line["status"] == "ok" {
                let parts = try #require(line["id"]?.stringValue).split(separator: "-")
                confirmed.append((writer, Int(parts[1])!))
            }
            #expect(process.received.allSatisfy { $0["status"] != "error" }, "a save failed: \(process.received.filter { $0["status"] == "error" }.prefix(1))")
        }
        #expect(confirmed.count > 0)

        let storage = try PluginHarness(config: ["path": .string(database)])
        var lost = 0
        for (writer, i) in confirmed {
            let reply = await storage.call("get", ["key": .string("w\(writer)-k\(i)")])
            if reply.raw != Self.value(writer, i).serialized() { lost += 1 }
        }
        #expect(lost == 0, "\(lost) of \(confirmed.count) acknowledged saves were lost")
    }

    @Test func acknowledgedSavesSurviveKill9() async throws {
        try await killDuringSaves(writers: 1, perWriter: 3000)
    }

    @Test func acknowledgedSavesFromConcurrentWriterProcessesSurviveKill9() async throws {
        try await killDuringSaves(writers: 4, perWriter: 1000)
    }
}
