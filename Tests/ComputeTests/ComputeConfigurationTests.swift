import CSOPCore
import Testing

@testable import ComputePlugin

@Suite struct ComputeConfigurationTests {
    @Test func defaults() throws {
        let settings = try ComputeConfiguration(config: [:])
        #expect(settings.workers >= 1)
        #expect(settings.maxQueue == 1024)
        #expect(settings.maxQueueBytes == 256 << 20)
        #expect(settings.timeout == 30_000)
        #expect(settings.memoryLimitMB == 512)
        #expect(settings.maxConsoleBytes == 65_536)
        #expect(settings.maxResultBytes == 16 << 20)
        #expect(settings.maxRegisteredBytes == 64 << 20)
    }

    @Test func explicitValues() throws {
        let settings = try ComputeConfiguration(config: ["workers": 3, "maxQueue": 10, "maxQueueBytes": 1_048_576, "timeout": 250, "memoryLimitMB": 64, "maxConsoleBytes": 0,
            "maxResultBytes": 4096, "maxRegisteredBytes": 1_048_576,
        ])
        #expect(settings.workers == 3)
        #expect(settings.maxQueue == 10)
        #expect(settings.maxQueueBytes == 1 << 20)
        #expect(settings.timeout == 250)
        #expect(settings.memoryLimitMB == 64)
        #expect(settings.maxConsoleBytes == 0)
        #expect(settings.maxResultBytes == 4096)
        #expect(settings.maxRegisteredBytes == 1 << 20)
    }

    @Test(arguments: [
        ["worker": 2] as JSONValue, ["workers": 0], ["workers": 2.5], ["workers": "2"], ["maxQueue": 0],
        ["maxQueueBytes": 1000], ["maxQueueBytes": 2_199_023_255_552], ["maxQueueBytes": "256MiB"],
        ["timeout": 0], ["timeout": "fast"], ["memoryLimitMB": 1], ["maxConsoleBytes": -1],
        ["maxResultBytes": 10], ["maxResultBytes": 2_147_483_648], ["maxRegisteredBytes": 0], ["maxRegisteredBytes": "64MiB"],
    ])
    func invalidConfigNamesTheKey(_ config: JSONValue) throws {
        #expect {
            try ComputeConfiguration(config: config)
        } throws: { error in
            guard let error = error as? CSOPError, let key = config.objectValue?.keys.first else { return false }
            return error.code == .invalidPayload && error.message.contains("config.\(key)")
        }
    }

    @Test func statsReportConfiguration() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 3, maxQueue: 7, maxQueueBytes: 5 << 20))
        try await WorkerPoolTests.waitFor(h) { $0["alive"] == 3 }
        let stats = try await h.stats()
        #expect(stats["workers"] == 3)
        #expect(stats["maxQueue"] == 7)
        #expect(stats["queued"] == 0)
        #expect(stats["maxQueueBytes"] == 5_242_880)
        #expect(stats["queuedBytes"] == 0)
        #expect(stats["busy"] == 0)
    }
}
