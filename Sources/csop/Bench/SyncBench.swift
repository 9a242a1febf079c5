/// Placeholder until the sync plugin's rows land.
struct SyncBench: BenchSuite {
    let name = "sync"
    func run(_ context: BenchContext) async throws -> [BenchRow] { [] }
}
