import Glibc
public import Logging
public import Tracing

/// How a ``CSOPHost`` finds and loads its plugins.
public struct HostConfiguration: Sendable {
    /// The plugins.d directory: every `*.conf` file in it is an entry, loaded in name order.
    public var pluginsDirectory: String
    /// The directories looked at, in order, when no directory was given (see
    /// ``findPluginsDirectory()``); just ``pluginsDirectory`` otherwise.
    public var searchedPluginsDirectories: [String]
    /// Directories searched for a plugin library after the plugins directory itself;
    /// defaults to `CSOP_PLUGIN_PATH` (colon-separated).
    public var pluginSearchPath: [String]
    /// Also search the directory of the running executable and the installed `../lib/csop`
    /// beside it (last).
    public var searchExecutableDirectory: Bool
    /// Load libraries and config files that other users can write. Off by default, as
    /// with OpenSSH's StrictModes.
    public var allowInsecurePermissions: Bool
    /// Where the host and its plugins log.
    public var logger: Logger
    /// The most payload bytes the host holds in requests not yet answered. A request that
    /// would pass it is answered `QUEUE_FULL` (retryable); one larger than all of it,
    /// `INVALID_PAYLOAD`. `csop run` reads no further line while its lines would pass it.
    public var maxInFlightBytes: Int = HostConfiguration.defaultMaxInFlightBytes

    /// 512 MiB.
    public static let defaultMaxInFlightBytes = 512 << 20
    /// Reload when the plugins directory, or a directory a loaded library is in, changes
    /// (inotify; a reload follows 200 ms without further changes to `*.conf` or `*.so*`
    /// files). Off by default for embedders; `csop run` and `csop serve` turn it on.
    public var watchPluginsDirectory = false
    /// The `csop` executable that runs plugins whose entry says `isolation = "process"`
    /// (as `csop plugin-host`); nil (the default): `csop` beside the running executable, else
    /// the first `csop` on `PATH`.
    public var pluginHostExecutable: String?
    /// Where security-relevant events are recorded (``AuditLog``); nil (the default): nowhere.
    public var auditLog: AuditLog?
    /// Where requests, plugin changes and plugins' own metrics are counted (``HostMetrics``,
    /// read with ``CSOPHost/metricsText()``); nil (the default): metrics are off and cost nothing.
    public var metrics: HostMetrics?
    /// Where the router's spans go (swift-distributed-tracing): `csop.dispatch` per request and
    /// `csop.attempt` per try, children of the request's W3C `traceparent` when the tracer reads
    /// it (swift-otel's does). Nil (the default): no spans, one nil check per request; plugins
    /// still get the caller's `traceparent`. `InstrumentationSystem.tracer` after bootstrapping
    /// one is the usual value.
    public var tracer: (any Tracer)?
    /// Run once at the end of ``CSOPHost/shutdown(gracePeriod:)``, after every plugin is
    /// destroyed: for what must outlive the host's last span, such as an exporter sending the
    /// spans it still holds (`csop --otlp-endpoint` uses it). Nil (the default): nothing.
    public var afterShutdown: (@Sendable () async -> Void)?

    /// - Parameters:
    ///   - pluginsDirectory: the plugins.d directory; nil looks it up as
    ///     ``findPluginsDirectory()`` says.
    ///   - pluginSearchPath: where libraries named without a `/` are looked for; nil reads
    ///     `CSOP_PLUGIN_PATH`.
    public init(
        pluginsDirectory: String? = nil,
        pluginSearchPath: [String]? = nil,
        searchExecutableDirectory: Bool = true,
        allowInsecurePermissions: Bool = false,
        logger: Logger = Logger(label: "csop", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        if let pluginsDirectory {
            self.pluginsDirectory = pluginsDirectory
            self.searchedPluginsDirectories = [pluginsDirectory]
        } else {
            (self.pluginsDirectory, self.searchedPluginsDirectories) = Self.findPluginsDirectory()
        }
        self.pluginSearchPath = pluginSearchPath ?? HostConfiguration.environmentSearchPath()
        self.searchExecutableDirectory = searchExecutableDirectory
        self.allowInsecurePermissions = allowInsecurePermissions
        self.logger = logger
    }

    /// The plugins directory to use when none was given: `CSOP_PLUGINS_DIR` if set; else the
    /// first that exists of `./plugins.d`, `$XDG_CONFIG_HOME/csop/plugins.d` (default
    /// `~/.config/csop/plugins.d`) and the installed `PREFIX/etc/csop/plugins.d` (the
    /// executable being `PREFIX/bin/…`); else `./plugins.d`, which then fails to open.
    /// - Returns: the directory and every directory looked at, in order.
    public static func findPluginsDirectory() -> (directory: String, searched: [String]) {
        findPluginsDirectory { name in getenv(name).map { String(cString: $0) } }
    }

    static func findPluginsDirectory(
        environment: (String) -> String?, isDirectory: (String) -> Bool = isDirectory
    ) -> (directory: String, searched: [String]) {
        if let explicit = environment("CSOP_PLUGINS_DIR"), !explicit.isEmpty { return (explicit, [explicit]) }
        var candidates = ["./plugins.d"]
        if let config = environment("XDG_CONFIG_HOME"), config.hasPrefix("/") {
            candidates.append("\(config)/csop/plugins.d")
        } else if let home = environment("HOME"), !home.isEmpty {
            candidates.append("\(home)/.config/csop/plugins.d")
        }
        if let directory = executableDirectory() { candidates.append(normalize("\(directory)/../etc/csop/plugins.d")) }
        for candidate in candidates where isDirectory(candidate) { return (candidate, candidates) }
        return (candidates[0], candidates)
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    static func environmentSearchPath() -> [String] {
        guard let value = getenv("CSOP_PLUGIN_PATH") else { return [] }
        return String(cString: value).split(separator: ":").map(String.init).filter { !$0.isEmpty }
    }

    /// The directory of the running executable, from /proc/self/exe.
    public static func executableDirectory() -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        let path = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = path.lastIndex(of: "/") else { return nil }
        return String(path[..<slash])
    }

    /// `path` with `.` and `dir/..` pairs removed, textually (the directory need not exist).
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == "..", let last = parts.last, last != ".." {
                parts.removeLast()
            } else {
                parts.append(part)
            }
        }
        return (path.hasPrefix("/") ? "/" : "") + parts.joined(separator: "/")
    }
}
