/// A plugins.d entry that did not load, and why. Every other entry still loads.
public struct PluginLoadFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// The plugins directory itself does not exist or cannot be read (reported once).
        case pluginsDirectoryNotFound = "PLUGINS_DIR_NOT_FOUND"
        case badConfig = "BAD_CONFIG"
        case libraryNotFound = "LIBRARY_NOT_FOUND"
        case insecurePermissions = "INSECURE_PERMISSIONS"
        case openFailed = "OPEN_FAILED"
        case missingSymbol = "MISSING_SYMBOL"
        case abiMismatch = "ABI_MISMATCH"
        case badDescriptor = "BAD_DESCRIPTOR"
        case initFailed = "INIT_FAILED"
        case duplicateDomain = "DUPLICATE_DOMAIN"
        case nameMismatch = "NAME_MISMATCH"
    }

    /// The config file of the entry.
    public var file: String
    public var kind: Kind
    public var message: String
    /// The domain the entry would have served, when known: the plugin's own name, the entry's
    /// `name`, or a guess from the library's file name (`libcsop-storage.so` → `storage`).
    public var domain: String?

    public init(file: String, kind: Kind, message: String, domain: String? = nil) {
        self.file = file
        self.kind = kind
        self.message = message
        self.domain = domain
    }

    public var description: String { "\(file): \(kind.rawValue): \(message)" }
}

/// A plugin that loaded and serves requests.
public struct LoadedPluginInfo: Sendable, Hashable {
    public var name: String
    public var version: String
    public var operations: [String]
    public var library: String
    public var file: String
    /// Which instance of its domain this is: 1 at start, one more for each reload that replaced it.
    public var generation: Int = 1
    /// When the instance was created (UTC, ISO 8601); empty for an entry only checked.
    public var loadedAt: String = ""
}
