/// One parser under test: a name (the corpus directory's too) and the checks one input gets.
///
/// `check` must hold every property for any bytes, stopping through ``property(_:_:file:line:)``
/// when one fails; a parser that crashes on its own is found the same way.
struct FuzzTarget: Sendable {
    let name: String
    let summary: String
    let check: @Sendable ([UInt8]) -> Void
    /// Seed inputs made by code (frames from the encoder), written by `csop-fuzz seeds`.
    var seeds: @Sendable () -> [(name: String, bytes: [UInt8])] = { [] }

    static let all: [FuzzTarget] = [
        JSONFuzzTarget.target, RequestFuzzTarget.target, PluginConfigFuzzTarget.target,
        ClusterFrameFuzzTarget.target, PostgresURLFuzzTarget.target, HTTPHeadFuzzTarget.target, WasmRewriteFuzzTarget.target,
    ]

    static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }

    /// Runs the checks on one input.
    func run(_ bytes: [UInt8]) {
        FuzzContext.target = name
        check(bytes)
    }
}
