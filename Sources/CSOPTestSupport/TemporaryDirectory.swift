import Foundation

/// A directory under the system temp dir, removed when released.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init(_ label: String = "csop-test") throws {
        let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        path = "\(base)/\(label)-\(getpid())-\(UInt64.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// `path/name`.
    public func file(_ name: String) -> String { "\(path)/\(name)" }

    /// Writes a plugins.d directory (`path/plugins.d` unless named) and returns its path.
    @discardableResult
    public func writePlugins(_ entries: [PluginEntry], directory name: String = "plugins.d") throws -> String {
        let directory = file(name)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for entry in entries {
            let path = "\(directory)/\(entry.fileName)"
            try entry.text.write(toFile: path, atomically: true, encoding: .utf8)
            chmod(path, 0o644)
        }
        return directory
    }
}
