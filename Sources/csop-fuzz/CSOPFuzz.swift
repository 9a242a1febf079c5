import Glibc

/// `csop-fuzz`: the parsers' fuzz targets.
///
/// Built with `-sanitize=fuzzer,address -DCSOP_FUZZ` (scripts/fuzz.sh), `csop-fuzz TARGET
/// [libFuzzer flags] [CORPUS_DIR...]` fuzzes one target. In a normal build it replays files
/// through the same checks, so crashers become regression tests:
///
///     csop-fuzz list                       the targets
///     csop-fuzz replay [FUZZ_DIR]          every target over FUZZ_DIR/corpus/<target> and
///                                          FUZZ_DIR/regressions/<target> (default Tests/Fuzz)
///     csop-fuzz TARGET PATH...             one target over files and directories
///     csop-fuzz seeds CORPUS_DIR           writes the seeds made by code (encoder frames)
///
/// A failed property stops the process (`fatalError`), naming the target and the input.
@main
struct CSOPFuzz {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        let verbose = arguments.contains("--verbose")
        arguments.removeAll { $0 == "--verbose" }
        #if CSOP_FUZZ
        exit(LibFuzzer.run(arguments))
        #else
        guard let command = arguments.first else { usage() }
        switch command {
        case "list":
            for target in FuzzTarget.all { print("\(target.name)\t\(target.summary)") }
        case "replay":
            let root = arguments.count > 1 ? arguments[1] : "Tests/Fuzz"
            var total = 0
            for target in FuzzTarget.all {
                let count = Replay.run(target, paths: ["\(root)/corpus/\(target.name)", "\(root)/regressions/\(target.name)"], allowMissing: true, verbose: verbose)
                print("\(target.name): \(count) inputs passed")
                total += count
            }
            print("all targets: \(total) inputs passed")
        case "seeds":
            guard arguments.count == 2 else { usage() }
            for target in FuzzTarget.all {
                for seed in target.seeds() { Seeds.write(seed.bytes, to: "\(arguments[1])/\(target.name)/\(seed.name)") }
            }
        case "-h", "--help", "help":
            usage(status: 0)
        default:
            guard let target = FuzzTarget.named(command) else { usage() }
            let count = Replay.run(target, paths: Array(arguments.dropFirst()), verbose: verbose)
            print("\(target.name): \(count) inputs passed")
        }
        #endif
    }

    static func usage(status: Int32 = 2) -> Never {
        let names = FuzzTarget.all.map(\.name).joined(separator: "|")
        #if CSOP_FUZZ
        let text = "usage: csop-fuzz \(names) [libFuzzer flags] [CORPUS_DIR...]\n"
        #else
        let text = "usage: csop-fuzz list | replay [FUZZ_DIR] | \(names) PATH... [--verbose]\n"
        #endif
        if status == 0 { print(text, terminator: "") } else { printError(text) }
        exit(status)
    }
}
