import Foundation

/// A throwaway PostgreSQL server in a temporary directory, so a test can restart or stop
/// the database without disturbing other tests that share the main server. Needs the
/// PostgreSQL 15 binaries and root (the server runs as the `postgres` user).
final class PrivatePostgres: Sendable {
    static let binaries = "/usr/lib/postgresql/15/bin"

    let directory: String
    let port: Int

    var url: String { "postgres://csop@127.0.0.1:\(port)/postgres" }

    init() throws {
        directory = "/tmp/csop-sync-pg-\(UUID().uuidString.prefix(8))"
        port = Int.random(in: 40_000...49_000)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.run("/bin/chown", ["postgres", directory])
        try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(Self.binaries)/initdb", "-D", "\(directory)/data", "-A", "trust", "-U", "csop", "-N"])
        try start()
    }

    private var serverOptions: String {
        "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
    }

    func start() throws {
        try pgctl(["start", "-w", "-l", "\(directory)/log", "-o", serverOptions])
    }

    func stop() throws {
        try pgctl(["stop", "-w", "-m", "fast"])
    }

    func restart() throws {
        try pgctl(["restart", "-w", "-m", "fast", "-l", "\(directory)/log", "-o", serverOptions])
    }

    /// Stops the server and removes its files.
    func destroy() {
        try? pgctl(["stop", "-w", "-m", "immediate"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func pgctl(_ arguments: [String]) throws {
        try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(Self.binaries)/pg_ctl", "-D", "\(directory)/data"] + arguments)
    }

    struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    private static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CommandFailed(description: "\(executable) \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
        }
    }
}
