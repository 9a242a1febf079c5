import ArgumentParser
import CSOPHost
import Glibc

/// `csop bench`: runs the benchmark harness, `csop-bench`, which is built beside `csop` and
/// installed with it. Kept out of this executable so `csop` links only what it serves with.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure dispatch, storage, compute and sync: p50/p95/p99 against baselines measured in the same run.",
        discussion: """
            Runs csop-bench from csop's directory with these arguments (csop bench --help lists them). \
            Build in release mode first: swift build -c release, then .build/release/csop bench.
            """)

    @Argument(parsing: .captureForPassthrough, help: "Arguments for csop-bench, e.g. --only host,storage --json.")
    var arguments: [String] = []

    func run() throws {
        try execSibling("csop-bench", arguments)
    }
}

/// Replaces this process with `name` from csop's own directory (csop-bench, csop-serve),
/// passing `arguments`; returns only by throwing.
func execSibling(_ name: String, _ arguments: [String]) throws -> Never {
    guard let directory = HostConfiguration.executableDirectory() else {
        throw ValidationError("cannot tell where csop runs from (/proc/self/exe is unreadable)")
    }
    let path = "\(directory)/\(name)"
    guard access(path, X_OK) == 0 else {
        throw ValidationError("\(path) not found: build it with swift build (-c release) or install it with scripts/install.sh (it is installed beside csop)")
    }
    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    execv(path, argv)
    throw ValidationError("cannot run \(path): \(String(cString: strerror(errno)))")
}
