import CSOPCore
import Foundation
import Synchronization

/// A child process started with `posix_spawn`, inheriting only the three descriptors it is
/// given: every other descriptor of the test process is closed in it.
///
/// Not Foundation's `Process`: that one lets a child inherit whatever the test process has
/// open (another test's pipe held open by a long-lived child stalls that test, and a
/// crashed test run is then never seen to end), and in a process with over a thousand
/// descriptors open, as the whole suite has, its `run()` crashed twice.
///
/// Only this object reaps its child: nothing else in the test process may `waitpid` for it.
public final class SpawnedProcess: Sendable {
    /// What a standard descriptor of the child is.
    public enum Stream: Sendable, Equatable {
        /// The test process's own descriptor of the same number.
        case inherit
        /// `/dev/null`.
        case null
        /// A pipe whose other end this object holds (stdin: see `write` and `closeInput`;
        /// stdout and stderr: `output` and `errors`).
        case pipe
        /// For stderr only: the same as the child's stdout (`2>&1`).
        case toStdout
    }

    /// The child's process id.
    public let pid: Int32
    /// The read end of its stdout, when that is `.pipe`; the reader closes it.
    public let output: Int32?
    /// The read end of its stderr, when that is `.pipe`; the reader closes it.
    public let errors: Int32?

    /// The write end of its stdin, when that is `.pipe`, until `closeInput()`.
    private let inputEnd: Mutex<Int32?>
    /// The wait status, once reaped.
    private let status = Mutex<Int32?>(nil)

    /// Starts `executable` with `arguments`.
    /// - Parameters:
    ///   - environment: added to (or, with nil values, removed from) this process's environment.
    ///   - directory: its working directory (default: this process's).
    /// - Throws: `SpawnError` when the pipes cannot be made or the program cannot be started.
    public init(
        _ executable: String, _ arguments: [String] = [], environment: [String: String?] = [:], directory: String? = nil,
        stdin: Stream = .null, stdout: Stream = .pipe, stderr: Stream = .inherit
    ) throws {
        // Writing to a child that exited must be an error here, not the end of the test run.
        _ = Glibc.signal(SIGPIPE, SIG_IGN)
        guard let closeFrom = SpawnFileActions.addCloseFrom else { throw SpawnError(message: "glibc lacks posix_spawn_file_actions_addclosefrom_np") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // The child's ends, closed here once it started; ours are close-on-exec.
        var childEnds: [Int32] = []
        defer { for fd in childEnds { close(fd) } }
        func wire(_ stream: Stream, _ target: Int32, ours: inout Int32?) throws {
            switch stream {
            case .inherit: break
            case .null: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .toStdout: posix_spawn_file_actions_adddup2(&actions, 1, target)
            case .pipe:
                var ends: [Int32] = [0, 0]
                // pipe2 is not exported; the window before FD_CLOEXEC is harmless, as every
                // spawn here closes all but its three descriptors anyway.
                guard pipe(&ends) == 0 else {
                    throw SpawnError(message: "cannot make a pipe for \(executable): \(String(cString: strerror(errno)))")
                }
                for fd in ends { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
                let (childEnd, ourEnd) = target == 0 ? (ends[0], ends[1]) : (ends[1], ends[0])
                childEnds.append(childEnd)
                ours = ourEnd
                posix_spawn_file_actions_adddup2(&actions, childEnd, target)
            }
        }
        var ours: [Int32?] = [nil, nil, nil]
        do {
            try wire(stdin, 0, ours: &ours[0])
            try wire(stdout, 1, ours: &ours[1])
            try wire(stderr, 2, ours: &ours[2])
        } catch {
            for case let fd? in ours { close(fd) }
            throw error
        }
        _ = closeFrom(&actions, 3)
        if let directory {
            guard let addChdir = SpawnFileActions.addChdir else {
                for case let fd? in ours { close(fd) }
                throw SpawnError(message: "glibc lacks posix_spawn_file_actions_addchdir_np")
            }
            _ = addChdir(&actions, directory)
        }

        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard spawned == 0 else {
            for case let fd? in ours { close(fd) }
            throw SpawnError(message: "cannot start \(executable): \(String(cString: strerror(spawned)))")
        }
        self.pid = pid
        inputEnd = Mutex(ours[0])
        output = ours[1]
        errors = ours[2]
    }

    /// Closes our end of its stdin (the child reads the end of its input). Idempotent.
    public func closeInput() {
        inputEnd.withLock {
            if let fd = $0 { close(fd) }
            $0 = nil
        }
    }

    /// Writes all of `bytes` to its stdin. - Returns: false when the child closed it (or it is not a pipe).
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        // Under the lock: a concurrent closeInput must not let the descriptor be reused mid-write.
        inputEnd.withLock { end in
            guard let fd = end else { return false }
            var written = 0
            while written < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, bytes.count - written) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                written += n
            }
            return true
        }
    }

    /// Whether it has not exited yet (reaping it if it has).
    public var isRunning: Bool { reap(blocking: false) == nil }

    /// Waits (blocking this thread) for it to exit. - Returns: the wait status.
    @discardableResult
    public func waitBlocking() -> Int32 { reap(blocking: true)! }

    /// Waits up to `timeout` seconds without holding a pool thread. - Returns: the wait status, or nil.
    public func waitForExit(timeout: Double) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let status = reap(blocking: false) { return status }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return reap(blocking: false)
    }

    /// Its exit code, or for a child a signal ended, the signal's number (as Foundation's
    /// `terminationStatus`); nil while it runs.
    public var terminationStatus: Int32? {
        guard let status = reap(blocking: false) else { return nil }
        return Self.code(of: status)
    }

    /// Whether a signal ended it (false while it runs).
    public var diedOfSignal: Bool { reap(blocking: false).map { Self.signal(of: $0) != nil } ?? false }

    /// Sends `signal` unless it was reaped already (its pid may then be another process's).
    public func kill(_ signal: Int32 = 9) {
        status.withLock { if $0 == nil { _ = Glibc.kill(pid, signal) } }
    }

    /// SIGTERM, then after `grace` seconds SIGKILL; returns once it exited (blocking this thread).
    @discardableResult
    public func stopBlocking(signal: Int32 = 15, grace: Double = 5) -> (status: Int32, killed: Bool) {
        kill(signal)
        let deadline = Date().addingTimeInterval(grace)
        while isRunning && Date() < deadline { usleep(5_000) }
        let killed = isRunning
        if killed { kill(SIGKILL) }
        let status = waitBlocking()
        return (Self.code(of: status), killed)
    }

    deinit {
        // No zombie and no orphan: a child still running is killed and reaped off this thread.
        guard status.withLock({ $0 }) == nil else { return }
        let pid = self.pid
        _ = Glibc.kill(pid, SIGKILL)
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        }
        inputEnd.withLock { if let fd = $0 { close(fd) } }
    }

    /// Reaps it if it exited, polling every 2 ms when `blocking`. The wait happens under the
    /// lock, so a `kill` never reaches a pid that was reaped (and perhaps reused).
    private func reap(blocking: Bool) -> Int32? {
        while true {
            let found: Int32? = status.withLock {
                if $0 == nil {
                    var raw: Int32 = 0
                    var result: pid_t
                    repeat { result = waitpid(pid, &raw, WNOHANG) } while result == -1 && errno == EINTR
                    if result == pid { $0 = raw }
                    // Reaped elsewhere (nothing should): it is gone; say it exited with 0.
                    if result == -1 && errno == ECHILD { $0 = 0 }
                }
                return $0
            }
            if found != nil || !blocking { return found }
            usleep(2_000)
        }
    }

    /// The exit code, or the signal's number for a child a signal ended.
    private static func code(of status: Int32) -> Int32 { signal(of: status) ?? ((status >> 8) & 0xff) }

    private static func signal(of status: Int32) -> Int32? {
        let signal = status & 0x7f
        return signal != 0 && signal != 0x7f ? signal : nil
    }
}

/// Why a child process could not be started.
public struct SpawnError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
