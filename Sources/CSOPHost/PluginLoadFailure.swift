/// A plugins.d entry that did not load, and why. Every other entry still loads.
public struct PluginLoadFailure: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
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

    public init(file: String, kind: Kind, message: String) {
        self.file = file
        self.kind = kind
        self.message = message
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
}
