/// What `csop check` reports for one plugins.d entry: checked as far as possible without
/// creating the plugin — syntax, library found, permissions, symbol, ABI, and the plugin's
/// own config check where it offers one. No plugin is created and no database is touched.
public struct PluginCheck: Sendable, Hashable {
    public enum Status: Sendable, Hashable {
        /// The entry would load: the plugin's domain, version, library path and operations.
        case ok(LoadedPluginInfo)
        /// `enabled = false`.
        case disabled
        case failed(PluginLoadFailure)
    }

    /// The entry's file (or the plugins directory, when it cannot be read).
    public var file: String
    public var status: Status

    /// Checks every entry of `configuration.pluginsDirectory`, in load order; a second entry
    /// claiming a domain fails as `DUPLICATE_DOMAIN`, as it would at load.
    public static func run(_ configuration: HostConfiguration) -> [PluginCheck] {
        let loader = PluginLoader(configuration: configuration, events: EventHub())
        let files: [String]
        do throws(PluginLoadFailure) {
            files = try loader.entryFiles()
        } catch {
            return [PluginCheck(file: error.file, status: .failed(error))]
        }
        var taken: [String: String] = [:]
        return files.map { file in
            do throws(PluginLoadFailure) {
                guard let inspected = try loader.inspect(file: file, checkConfig: true) else {
                    return PluginCheck(file: file, status: .disabled)
                }
                try PluginLoader.checkUnclaimed(inspected, file: file, taken: taken)
                taken[inspected.name] = file
                return PluginCheck(
                    file: file,
                    status: .ok(
                        LoadedPluginInfo(
                            name: inspected.name, version: inspected.version, operations: inspected.operations,
                            library: inspected.library.path, file: file)))
            } catch {
                return PluginCheck(file: file, status: .failed(error))
            }
        }
    }
}
