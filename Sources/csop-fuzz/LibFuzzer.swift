#if CSOP_FUZZ
import CLibFuzzer
import Glibc

/// The libFuzzer side, compiled only into fuzz builds (`-sanitize=fuzzer -DCSOP_FUZZ`).
///
/// SwiftPM links an executable's `main` to its own entry point, so libFuzzer's `main` never
/// runs: ours picks the target from the first argument (or `CSOP_FUZZ_TARGET`) and hands the
/// remaining arguments to `LLVMFuzzerRunDriver`.
enum LibFuzzer {
    // Chosen in `run` before libFuzzer starts calling back; read-only afterwards.
    nonisolated(unsafe) static var target: FuzzTarget?

    static func run(_ arguments: [String]) -> Int32 {
        var arguments = arguments
        let name: String
        if let first = arguments.first, !first.hasPrefix("-"), FuzzTarget.named(first) != nil {
            name = arguments.removeFirst()
        } else if let fromEnvironment = getenv("CSOP_FUZZ_TARGET") {
            name = String(cString: fromEnvironment)
        } else {
            CSOPFuzz.usage()
        }
        guard let chosen = FuzzTarget.named(name) else { CSOPFuzz.usage() }
        target = chosen
        let argv = ([CommandLine.arguments[0]] + arguments).map { strdup($0) } + [nil]
        var argc = Int32(argv.count - 1)
        var pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = UnsafeMutablePointer.allocate(capacity: argv.count)
        pointer!.initialize(from: argv, count: argv.count)
        return LLVMFuzzerRunDriver(&argc, &pointer, fuzzOneInput)
    }
}

/// libFuzzer's entry point for one input (also what its own `main` would call).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let target = LibFuzzer.target else { return 0 }
    target.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
#endif
