/// Placeholder until the storage plugin's rows land.
struct StorageBench: BenchSuite {
    let name = "storage"
    func run(_ context: BenchContext) async throws -> [BenchRow] { [] }
}
