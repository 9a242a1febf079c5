import CSOPTestSupport
import Foundation
import Testing

/// The fuzz targets' property checks (csop-fuzz, built without libFuzzer) over the committed
/// inputs of Tests/Fuzz: every seed and every crasher fixed since must pass, and the crashers
/// of bugs reported but not fixed yet (known/) must still fail until someone fixes them.
@Suite struct FuzzCorpusTests {
    static let targets = ["json", "request", "pluginsd", "cluster", "pgurl"]
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz").path

    /// The files of `Tests/Fuzz/known/<target>/`, as `target/name`.
    static let knownCrashers: [String] = targets.flatMap { target in
        ((try? FileManager.default.contentsOfDirectory(atPath: "\(fuzzDirectory)/known/\(target)")) ?? [])
            .filter { !$0.hasPrefix(".") }.sorted().map { "\(target)/\($0)" }
    }

    var fuzz: String { "\(TestEnvironment.buildDirectory)/csop-fuzz" }
    /// A failing check is a fatalError: no need for the backtracer's report in a child.
    let quiet: [String: String?] = ["SWIFT_BACKTRACE": "enable=no"]

    @Test func everyTargetHasASeedCorpus() async throws {
        let listed = try await ChildProcess.run(fuzz, ["list"]).stdoutLines.map { String($0.prefix { $0 != "\t" }) }
        #expect(listed == Self.targets)
        for target in Self.targets {
            let seeds = try FileManager.default.contentsOfDirectory(atPath: "\(Self.fuzzDirectory)/corpus/\(target)")
            #expect(seeds.count >= 5, "Tests/Fuzz/corpus/\(target) has \(seeds.count) seeds")
        }
    }

    @Test(arguments: targets)
    func corpusAndRegressionsPass(target: String) async throws {
        var paths = ["\(Self.fuzzDirectory)/corpus/\(target)"]
        let regressions = "\(Self.fuzzDirectory)/regressions/\(target)"
        if FileManager.default.fileExists(atPath: regressions) { paths.append(regressions) }
        let result = try await ChildProcess.run(fuzz, [target, "--verbose"] + paths, environment: quiet, timeout: 300)
        #expect(result.status == 0, "csop-fuzz \(target) failed on the last input it names:\n\(result.stderr.suffix(4000))")
        #expect(result.stdout.contains("\(target): "), "\(result.stdout)")
    }

    @Test(arguments: knownCrashers)
    func knownCrasherStillFailsAndIsSkipped(file: String) async throws {
        let target = String(file.prefix { $0 != "/" })
        let path = "\(Self.fuzzDirectory)/known/\(file)"
        var environment = quiet
        environment["CSOP_FUZZ_KNOWN"] = "fail"
        let failing = try await ChildProcess.run(fuzz, [target, path], environment: environment, timeout: 120)
        #expect(
            failing.status != 0,
            "known/\(file) passes now: the bug is fixed. Move the file to regressions/\(target)/ and delete its case in Sources/csop-fuzz/KnownIssue.swift")
        let skipped = try await ChildProcess.run(fuzz, [target, path], environment: quiet, timeout: 120)
        #expect(skipped.status == 0, "KnownIssue does not recognise known/\(file), so fuzzing stops on it:\n\(skipped.stderr.suffix(2000))")
    }
}
