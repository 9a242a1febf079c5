import CSOPTestSupport
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A throwaway PostgreSQL server in a temporary directory, so a test can restart or stop
/// the database without disturbing other tests that share the main server. Needs the
/// PostgreSQL 15 binaries and root (the server runs as the `postgres` user).
final class PrivatePostgres: Sendable {
    static let binaries = "/usr/lib/postgresql/15/bin"

    let directory: String
    let port: Int

    var url: String { "postgres://csop@127.0.0.1:\(port)/postgres" }

    private init() throws {
        directory = "/tmp/csop-sync-pg-\(UUID().uuidString.prefix(8))"
        // Below Linux's ephemeral range (32768–60999): a port in it can be taken meanwhile by
        // any test's outgoing connection, and a restart then fails to bind (seen in a full run).
        port = Int.random(in: 20_000...29_999)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try Self.run("/bin/chown", ["postgres", directory])
        try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(Self.binaries)/initdb", "-D", "\(directory)/data", "-A", "trust", "-U", "csop", "-N"])
        try pgctlNow(["start", "-w", "-l", "\(directory)/log", "-o", serverOptions])
    }

    private var serverOptions: String {
        "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
    }

    /// A new server, made on a thread of its own (initdb takes seconds; the concurrency pool's
    /// few threads must stay free for the other tests).
    static func make() async throws -> PrivatePostgres {
        try await OwnThread.run { try PrivatePostgres() }
    }

    func start() async throws {
        try await pgctl(["start", "-w", "-l", "\(directory)/log", "-o", serverOptions])
    }

    func stop() async throws {
        try await pgctl(["stop", "-w", "-m", "fast"])
    }

    func restart() async throws {
        try await pgctl(["restart", "-w", "-m", "fast", "-l", "\(directory)/log", "-o", serverOptions])
    }

    private func pgctl(_ arguments: [String]) async throws {
        try await OwnThread.run { try self.pgctlNow(arguments) }
    }

    /// Stops the server and removes its files, on a thread of its own (from a `defer`, it
    /// must not hold a concurrency-pool thread for the seconds pg_ctl takes).
    func destroy() {
        Thread.detachNewThread { [self] in
            try? pgctlNow(["stop", "-w", "-m", "immediate"])
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    private func pgctlNow(_ arguments: [String]) throws {
        try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(Self.binaries)/pg_ctl", "-D", "\(directory)/data"] + arguments)
    }

    struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs a command and waits for it, every standard descriptor on /dev/null: the server
    /// outlives the command and must hold nothing of the test process.
    private static func run(_ executable: String, _ arguments: [String]) throws {
        let process = try SpawnedProcess(executable, arguments, stdin: .null, stdout: .null, stderr: .null)
        let status = process.waitBlocking()
        guard status == 0 else {
            throw CommandFailed(description: "\(executable) \(arguments.joined(separator: " ")) exited with status \(status)")
        }
    }
}
