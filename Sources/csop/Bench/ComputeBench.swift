/// Placeholder until the compute plugin's rows land.
struct ComputeBench: BenchSuite {
    let name = "compute"
    func run(_ context: BenchContext) async throws -> [BenchRow] { [] }
}
