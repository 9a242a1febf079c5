import Foundation

/// Builds the C plugin fixtures with the system C compiler, as a plugin author would.
public enum CCompiler {
    /// The package root (found from this file's location).
    public static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// Compiles `Tests/Fixtures/CPlugins/<source>` into `output` as a shared library.
    /// - Parameter defines: `-D` flags without the `-D`, e.g. `["WRONG_ABI"]`.
    public static func buildPlugin(_ source: String, defines: [String] = [], output: String) async throws {
        let result = try await ChildProcess.run(
            "/usr/bin/env",
            ["cc", "-Wall", "-Werror", "-shared", "-fPIC", "-I", "\(packageRoot)/Sources/CSOPPluginABI/include"]
                + defines.map { "-D\($0)" } + ["\(packageRoot)/Tests/Fixtures/CPlugins/\(source)", "-o", output], timeout: 300)
        guard result.status == 0, !result.timedOut else {
            throw CompileError(message: "cc failed for \(source) (status \(result.status)): \(result.stderr)")
        }
    }

    public struct CompileError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }
}
