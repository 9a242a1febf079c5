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

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// glibc ≥ 2.34 has it, but the Swift Glibc module does not export it.
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    struct CommandFailed: Error, CustomStringConvertible {
        var description: String
    }

    /// Runs a command and waits for it. Not Foundation's Process: it can miss the exit of
    /// `runuser` when the child leaves a daemon behind, and it leaks open descriptors into it.
    private static func run(_ executable: String, _ arguments: [String]) throws {
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        // The server outlives the command: it must not inherit, say, a csop child's stdin pipe.
        guard let closeFrom = Self.addCloseFrom else { throw CommandFailed(description: "glibc lacks posix_spawn_file_actions_addclosefrom_np") }
        _ = closeFrom(&actions, 3)
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard spawned == 0 else { throw CommandFailed(description: "cannot start \(executable): error \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        guard status == 0 else {
            throw CommandFailed(description: "\(executable) \(arguments.joined(separator: " ")) exited with status \(status)")
        }
    }
}
