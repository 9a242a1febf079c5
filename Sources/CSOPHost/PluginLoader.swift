import CSOPCore
import CSOPPluginABI
import Glibc
import Logging

/// Loads plugins.d entries: parse, find the library, check permissions, dlopen, check the
/// ABI block, create the instance. Each step's failure is reported for its file only.
struct PluginLoader {
    let configuration: HostConfiguration
    let events: EventHub

    /// Domains the host keeps for itself.
    static let reservedDomains: Set<String> = ["host"]

    /// The `*.conf` files of the plugins directory, in byte order of their names.
    func entryFiles() throws(PluginLoadFailure) -> [String] {
        let directory = configuration.pluginsDirectory
        guard let dir = opendir(directory) else {
            throw PluginLoadFailure(
                file: directory, kind: .badConfig,
                message: "cannot open the plugins directory: \(String(cString: strerror(errno))); pass --plugins-dir DIR")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name.hasPrefix(".") || !name.hasSuffix(".conf") { continue }
            names.append(name)
        }
        return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }.map { "\(directory)/\($0)" }
    }

    /// Loads one entry. Returns nil for a disabled entry.
    func load(file: String, taken: [String: String]) throws(PluginLoadFailure) -> PluginCapability? {
        func fail(_ kind: PluginLoadFailure.Kind, _ message: String) -> PluginLoadFailure {
            PluginLoadFailure(file: file, kind: kind, message: message)
        }
        if !configuration.allowInsecurePermissions, let problem = FilePermissions.problem(with: file) {
            throw fail(.insecurePermissions, "refusing the config file: \(problem) (or pass --allow-insecure-permissions)")
        }
        let entry: PluginConfigFile
        do throws(PluginConfigError) {
            entry = try PluginConfigFile.parse(try readFile(file), path: file)
        } catch {
            throw fail(.badConfig, error.line.map { "line \($0): \(error.message)" } ?? error.message)
        }
        guard entry.enabled else { return nil }
        let path = try resolve(entry.library, file: file)
        if !configuration.allowInsecurePermissions, let problem = FilePermissions.problem(with: path) {
            throw fail(.insecurePermissions, "refusing library \(path): \(problem) (or pass --allow-insecure-permissions)")
        }
        let library: PluginLibrary
        let register: csop_plugin_register_fn
        do throws(PluginLoadError) {
            library = try PluginLibrary(path: path)
            register = try library.registrationFunction()
        } catch {
            throw fail(error.kind, "\(path): \(error.message)")
        }
        guard let descriptor = register() else {
            throw fail(.badDescriptor, "\(path): \(CSOP_PLUGIN_REGISTER_SYMBOL)() returned NULL")
        }
        guard descriptor.pointee.magic == CSOP_PLUGIN_MAGIC else {
            throw fail(
                .abiMismatch,
                "\(path): descriptor magic is 0x\(String(descriptor.pointee.magic, radix: 16)), expected 0x\(String(CSOP_PLUGIN_MAGIC, radix: 16)); not a CSOP plugin")
        }
        guard descriptor.pointee.abi_version == CSOP_ABI_VERSION else {
            throw fail(
                .abiMismatch,
                "\(path): plugin ABI version \(descriptor.pointee.abi_version), host ABI version \(CSOP_ABI_VERSION); rebuild the plugin against this host's csop_plugin.h")
        }
        guard descriptor.pointee.struct_size >= UInt32(MemoryLayout<csop_plugin_descriptor>.size) else {
            throw fail(
                .abiMismatch,
                "\(path): descriptor is \(descriptor.pointee.struct_size) bytes, host expects at least \(MemoryLayout<csop_plugin_descriptor>.size)")
        }
        let (name, version, operations) = try readDescriptor(descriptor, path: path, fail: fail)
        if let expected = entry.expectedName, expected != name {
            throw fail(.nameMismatch, "\(path) serves \"\(name)\" but the entry says name = \"\(expected)\"")
        }
        if Self.reservedDomains.contains(name) {
            throw fail(.duplicateDomain, "\(path) claims the domain \"\(name)\", which the host reserves")
        }
        if let other = taken[name] {
            throw fail(.duplicateDomain, "\(path) claims the domain \"\(name)\", already served by the plugin from \(other)")
        }
        let context = PluginHostContext(name: name, logger: configuration.logger, events: events)
        let api = context.makeAPI()
        let config = JSONValue.object(entry.config).serialized()
        var instance: UnsafeMutableRawPointer?
        var error = csop_error()
        let status = config.withUnsafeBufferPointer { bytes in
            descriptor.pointee.create(api, bytes.baseAddress, bytes.count, &instance, &error)
        }
        guard status == 0, let instance else {
            let code = error.code.map { String(cString: $0) } ?? "INIT_FAILED"
            let message = error.message.map {
                String(decoding: UnsafeRawBufferPointer(start: $0, count: error.message_length), as: UTF8.self)
            } ?? "create returned \(status) without a message"
            api.deinitialize(count: 1)
            api.deallocate()
            throw fail(.initFailed, "plugin \"\(name)\" failed to start: \(code): \(message)")
        }
        return PluginCapability(
            name: name, version: version, operations: operations, library: library, file: file,
            descriptor: descriptor, instance: instance, api: api, context: context)
    }

    private func readDescriptor(
        _ descriptor: UnsafePointer<csop_plugin_descriptor>, path: String,
        fail: (PluginLoadFailure.Kind, String) -> PluginLoadFailure
    ) throws(PluginLoadFailure) -> (String, String, [String]) {
        let d = descriptor.pointee
        guard let rawName = d.name, let rawVersion = d.version else {
            throw fail(.badDescriptor, "\(path): descriptor has no name or version")
        }
        let name = String(cString: rawName)
        guard (try? Action("\(name).x")) != nil else {
            throw fail(.badDescriptor, "\(path): capability name \"\(name)\" is not an identifier")
        }
        guard d.operation_count > 0, d.operation_count <= 1024, let list = d.operations else {
            throw fail(.badDescriptor, "\(path): plugin \"\(name)\" declares \(d.operation_count) operations; it needs 1 to 1024")
        }
        var operations: [String] = []
        for i in 0..<d.operation_count {
            guard let raw = list[i] else { throw fail(.badDescriptor, "\(path): operation \(i) of \"\(name)\" is NULL") }
            let op = String(cString: raw)
            guard (try? Action("x.\(op)")) != nil, !operations.contains(op) else {
                throw fail(.badDescriptor, "\(path): operation \"\(op)\" of \"\(name)\" is not a unique identifier")
            }
            operations.append(op)
        }
        return (name, String(cString: rawVersion), operations)
    }

    /// Finds the library: an absolute path as is; otherwise relative to the plugins
    /// directory, then each search-path directory, then the executable's directory.
    private func resolve(_ library: String, file: String) throws(PluginLoadFailure) -> String {
        if library.hasPrefix("/") {
            guard access(library, F_OK) == 0 else {
                throw PluginLoadFailure(file: file, kind: .libraryNotFound, message: "library \(library) does not exist")
            }
            return library
        }
        var candidates = [configuration.pluginsDirectory]
        if !library.contains("/") {
            candidates += configuration.pluginSearchPath
            if configuration.searchExecutableDirectory, let dir = Self.executableDirectory() { candidates.append(dir) }
        }
        for directory in candidates {
            let path = "\(directory)/\(library)"
            if access(path, F_OK) == 0 { return Self.absolute(path) }
        }
        throw PluginLoadFailure(
            file: file, kind: .libraryNotFound,
            message: "library \(library) not found in: \(candidates.joined(separator: ", ")); build it (swift build) or set CSOP_PLUGIN_PATH")
    }

    private static func executableDirectory() -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        let path = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = path.lastIndex(of: "/") else { return nil }
        return String(path[..<slash])
    }

    private static func absolute(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private func readFile(_ path: String) throws(PluginConfigError) -> String {
        guard let handle = fopen(path, "r") else {
            throw PluginConfigError(file: path, line: nil, message: "cannot read: \(String(cString: strerror(errno)))")
        }
        defer { fclose(handle) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, handle)
            if count <= 0 { break }
            bytes += chunk[0..<count]
            if bytes.count > 1 << 20 {
                throw PluginConfigError(file: path, line: nil, message: "config file is larger than 1 MiB")
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
