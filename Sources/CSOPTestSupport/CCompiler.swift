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
        try await OwnThread.run { try buildBlocking(source, defines: defines, output: output) }
    }

    private static func buildBlocking(_ source: String, defines: [String], output: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments =
            ["cc", "-Wall", "-Werror", "-shared", "-fPIC", "-I", "\(packageRoot)/Sources/CSOPPluginABI/include"]
            + defines.map { "-D\($0)" } + ["\(packageRoot)/Tests/Fixtures/CPlugins/\(source)", "-o", output]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw CompileError(message: "cc failed for \(source): \(text)")
        }
    }

    public struct CompileError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }
}
