public import ArgumentParser
public import CSOPHost
import Glibc
public import Logging

/// Options every command that loads plugins takes.
public struct GlobalOptions: ParsableArguments {
    @Option(
        name: .customLong("plugins-dir"),
        help: ArgumentHelp(
            "The plugins.d directory to load.",
            discussion: "Default: $CSOP_PLUGINS_DIR, else the first that exists of ./plugins.d, $XDG_CONFIG_HOME/csop/plugins.d (~/.config/csop/plugins.d) and the installed PREFIX/etc/csop/plugins.d.",
            valueName: "dir"))
    public var pluginsDirectory: String?

    @Option(name: .customLong("log-level"), help: "How much to log to stderr (never to stdout).")
    public var logLevel: LogLevel = .warning

    @Option(name: .customLong("log-format"), help: "text, or json: one JSON object per line (time, level, label, message, plugin).")
    public var logFormat: LogFormat = .text

    @Flag(name: .customLong("allow-insecure-permissions"), help: "Load config files and libraries that others can write.")
    public var allowInsecurePermissions = false

    @Option(
        name: .customLong("audit-log"),
        help: ArgumentHelp(
            "Append security-relevant events to this JSON-lines file (mode 0600).",
            discussion: "Refused callers and tokens, quota refusals, compute registrations, storage deletes, sweeps and rotations, plugin loads and failures. Off by default.",
            valueName: "file"))
    public var auditLog: String?

    @Option(name: .customLong("audit-max-bytes"), help: "Rotate the audit log (to FILE.1, FILE.2, ...) past this size.")
    public var auditMaxBytes: Int = 64 << 20

    @Option(name: .customLong("audit-keep"), help: "Rotated audit logs kept.")
    public var auditKeep: Int = 5

    @Flag(
        name: .customLong("no-watch-plugins"),
        help: "Serving commands (run, serve, subscribe): do not reload when plugins.d or a loaded library changes; SIGHUP and host.reload still reload.")
    public var noWatchPlugins = false

    @OptionGroup(title: "Tracing")
    public var traceExport: TraceExportOptions

    public init() {}

    /// The configuration these options describe; sets up logging (process-wide, once) first.
    public func makeConfiguration() -> HostConfiguration {
        let level = logLevel.level
        let format = logFormat
        LoggingSystem.bootstrap { label in
            switch format {
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            case .json:
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
        var logger = Logger(label: "csop")
        logger.logLevel = level
        return HostConfiguration(pluginsDirectory: pluginsDirectory, allowInsecurePermissions: allowInsecurePermissions, logger: logger)
    }

    /// Sets up process-wide state (logging, signals) once, then loads the host.
    ///
    /// SIGPIPE is ignored so a closed stdout is an EPIPE the commands handle; SIGUSR1 and
    /// SIGUSR2 are ignored so a stray `kill -USR1` cannot end a serving host. (The compute
    /// plugin moves JavaScriptCore's own use of SIGUSR1 to a real-time signal when it loads.)
    /// A serving host (`serving: true`, for `csop run`, `serve` and `subscribe`) reloads its
    /// plugins on SIGHUP and, unless `--no-watch-plugins`, when plugins.d or a loaded library
    /// changes (``CSOPHost/reload()``); a one-shot command's host does neither.
    /// - Parameter adjust: a command's own settings (limits) applied to the configuration.
    public func makeHost(serving: Bool = false, _ adjust: (inout HostConfiguration) -> Void = { _ in }) async throws -> CSOPHost {
        signal(SIGPIPE, SIG_IGN)
        signal(SIGUSR1, SIG_IGN)
        signal(SIGUSR2, SIG_IGN)
        var configuration = makeConfiguration()
        if let auditLog {
            let logger = configuration.logger
            do throws(CSOPError) {
                configuration.auditLog = try AuditLog(path: auditLog, maxBytes: auditMaxBytes, keep: auditKeep) { logger.error("\($0)") }
            } catch {
                throw ValidationError("--audit-log: \(error.message)")
            }
        }
        configuration.watchPluginsDirectory = serving && !noWatchPlugins
        try traceExport.configure(&configuration)
        adjust(&configuration)
        let host = await CSOPHost.load(configuration)
        if serving { HangupReload.install(for: host) }
        return host
    }
}

/// `--log-level` values: swift-log's levels.
public enum LogLevel: String, CaseIterable, ExpressibleByArgument, Sendable {
    case trace, debug, info, notice, warning, error, critical

    public var level: Logger.Level { Logger.Level(rawValue: rawValue)! }
}

/// `--log-format` values.
public enum LogFormat: String, CaseIterable, ExpressibleByArgument, Sendable {
    case text, json
}
