import ArgumentParser
import CSOPHost
import Glibc
import Logging

/// Options every command that loads plugins takes.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("plugins-dir"), help: "The plugins.d directory to load.")
    var pluginsDirectory: String = "./plugins.d"

    @Option(name: .customLong("log-level"), help: "trace, debug, info, warning, error or critical (logs go to stderr).")
    var logLevel: String = "warning"

    @Flag(name: .customLong("allow-insecure-permissions"), help: "Load config files and libraries that others can write.")
    var allowInsecurePermissions = false

    /// Sets up process-wide state (logging, SIGPIPE) once, then loads the host.
    func makeHost() async throws -> CSOPHost {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        signal(SIGPIPE, SIG_IGN)
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "csop")
        logger.logLevel = level
        return await CSOPHost.load(
            HostConfiguration(
                pluginsDirectory: pluginsDirectory, allowInsecurePermissions: allowInsecurePermissions, logger: logger))
    }
}

/// Writes bytes to a file descriptor, retrying short writes.
func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
    }
}

func printLine(_ text: String, to fd: Int32 = 1) { writeAll(fd, Array((text + "\n").utf8)) }
