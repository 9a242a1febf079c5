import CSOPPluginABI
import Glibc

/// An opened shared library. Loaded with RTLD_NODELETE: Swift images register runtime
/// metadata that must outlive them, so a library is never unmapped once opened.
final class PluginLibrary: @unchecked Sendable {  // The handle is only read after init.
    let path: String
    private let handle: UnsafeMutableRawPointer

    /// Opens `path`. - Throws: the dlerror() text.
    init(path: String) throws(PluginLoadError) {
        _ = dlerror()
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            throw PluginLoadError(.openFailed, "dlopen failed: \(Self.lastError())")
        }
        self.path = path
        self.handle = handle
    }

    deinit { dlclose(handle) }

    /// The registration function. - Throws: `missingSymbol` when the library does not export it.
    func registrationFunction() throws(PluginLoadError) -> csop_plugin_register_fn {
        _ = dlerror()
        guard let symbol = dlsym(handle, CSOP_PLUGIN_REGISTER_SYMBOL) else {
            throw PluginLoadError(
                .missingSymbol,
                "the library does not export \(CSOP_PLUGIN_REGISTER_SYMBOL)(); is it a CSOP plugin? (\(Self.lastError()))")
        }
        return unsafeBitCast(symbol, to: csop_plugin_register_fn.self)
    }

    private static func lastError() -> String {
        guard let text = dlerror() else { return "unknown error" }
        return String(cString: text)
    }
}

/// Why one library failed to load.
struct PluginLoadError: Error {
    var kind: PluginLoadFailure.Kind
    var message: String
    init(_ kind: PluginLoadFailure.Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
}
