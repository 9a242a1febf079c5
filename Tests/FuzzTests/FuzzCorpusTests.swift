import CSOPTestSupport
import Foundation
import Testing

/// The fuzz targets' property checks (csop-fuzz, built without libFuzzer) over the committed
/// inputs of Tests/Fuzz: every seed and every crasher fixed since (regressions/) must pass.
@Suite struct FuzzCorpusTests {
    static let targets = ["json", "request", "pluginsd", "cluster", "pgurl", "httphead", "wasm"]
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz").path

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
}
