import Glibc
public import Logging

/// How a ``CSOPHost`` finds and loads its plugins.
public struct HostConfiguration: Sendable {
    /// The plugins.d directory: every `*.conf` file in it is an entry, loaded in name order.
    public var pluginsDirectory: String
    /// Directories searched for a plugin library after the plugins directory itself;
    /// defaults to `CSOP_PLUGIN_PATH` (colon-separated).
    public var pluginSearchPath: [String]
    /// Also search the directory of the running executable (last).
    public var searchExecutableDirectory: Bool
    /// Load libraries and config files that other users can write. Off by default, as
    /// with OpenSSH's StrictModes.
    public var allowInsecurePermissions: Bool
    /// Where the host and its plugins log.
    public var logger: Logger

    public init(
        pluginsDirectory: String,
        pluginSearchPath: [String]? = nil,
        searchExecutableDirectory: Bool = true,
        allowInsecurePermissions: Bool = false,
        logger: Logger = Logger(label: "csop", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.pluginsDirectory = pluginsDirectory
        self.pluginSearchPath = pluginSearchPath ?? HostConfiguration.environmentSearchPath()
        self.searchExecutableDirectory = searchExecutableDirectory
        self.allowInsecurePermissions = allowInsecurePermissions
        self.logger = logger
    }

    static func environmentSearchPath() -> [String] {
        guard let value = getenv("CSOP_PLUGIN_PATH") else { return [] }
        return String(cString: value).split(separator: ":").map(String.init).filter { !$0.isEmpty }
    }
}
