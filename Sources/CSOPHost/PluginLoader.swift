import CSOPCore
import CSOPPluginABI
import Glibc
import Logging

/// Loads plugins.d entries: parse, find the library, check permissions, dlopen, check the
/// ABI block, create the instance. Each step's failure is reported for its file only.
struct PluginLoader {
    let configuration: HostConfiguration
    let events: EventHub
    /// True in an isolated plugin's child (`csop plugin-host`): every entry loads in this process.
    var inChild = false

    /// Domains the host keeps for itself.
    static let reservedDomains: Set<String> = ["host"]

    /// The `*.conf` files of the plugins directory, in byte order of their names.
    func entryFiles() throws(PluginLoadFailure) -> [String] {
        let directory = configuration.pluginsDirectory
        guard let dir = opendir(directory) else {
            let reason = String(cString: strerror(errno))
            let searched = configuration.searchedPluginsDirectories
            let looked = searched.count > 1 ? " (looked in: \(searched.joined(separator: ", ")))" : ""
            throw PluginLoadFailure(
                file: directory, kind: .pluginsDirectoryNotFound,
                message: "cannot open the plugins directory: \(reason)\(looked); pass --plugins-dir DIR or set CSOP_PLUGINS_DIR")
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

    /// An entry checked as far as it can be without creating the plugin: its file parsed,
    /// its library found, permitted, opened, and its descriptor read.
    struct Inspected {
        var entry: PluginConfigFile
        var library: PluginLibrary
        var descriptor: UnsafePointer<csop_plugin_descriptor>
        var name: String
        var version: String
        var operations: [String]
    }

    /// The size of a version 1 descriptor before `check_config` was added: the least accepted.
    static let minimumDescriptorSize = MemoryLayout<csop_plugin_descriptor>.offset(of: \csop_plugin_descriptor.check_config)!

    /// What an entry is made of now, to tell whether a reload must load it again: its text and,
    /// when it is enabled, its library's resolved path and file identity (``FileIdentity``).
    /// An entry that cannot be read or parsed has a fingerprint too (its error), so it stays
    /// "changed" against any working version.
    func fingerprint(file: String) -> String {
        let text: String
        do throws(PluginConfigError) {
            text = try readEntry(file)
        } catch {
            return "unreadable: \(error.message)"
        }
        guard let entry = try? PluginConfigFile.parse(text, path: file), entry.enabled else { return text }
        guard let path = try? resolve(entry.library, file: file, domain: nil) else { return text + "\u{0}missing" }
        return text + "\u{0}" + path + "\u{0}" + (FileIdentity(path: path)?.description ?? "-")
    }

    /// Loads one entry. Returns nil for a disabled entry.
    /// An entry with `isolation = "process"` starts a child process that loads it (``IsolatedPlugin``).
    /// - Parameter generation: the generation of a new instance of a domain (``Capability/generation``);
    ///   an isolated plugin asks again for each restart of its child.
    func load(
        file: String, taken: [String: String], generation: @escaping @Sendable (String) -> Int = { _ in 1 }
    ) throws(PluginLoadFailure) -> (any LoadedPlugin)? {
        if !inChild, let entry = try? PluginConfigFile.parse(try readEntry(file), path: file), entry.enabled, entry.isolation == .process {
            return try IsolatedPlugin.start(
                file: file, entry: entry, configuration: configuration, events: events, taken: taken, generation: generation)
        }
        guard let inspected = try inspect(file: file) else { return nil }
        let name = inspected.name
        func fail(_ kind: PluginLoadFailure.Kind, _ message: String) -> PluginLoadFailure {
            PluginLoadFailure(file: file, kind: kind, message: message, domain: name)
        }
        try Self.checkUnclaimed(inspected, file: file, taken: taken)
        let context = PluginHostContext(name: name, logger: configuration.logger, events: events)
        let config = JSONValue.object(inspected.entry.config).serialized()
        var instance: UnsafeMutableRawPointer?
        var error = csop_error()
        let status = config.withUnsafeBufferPointer { bytes in
            inspected.descriptor.pointee.create(context.api, bytes.baseAddress, bytes.count, &instance, &error)
        }
        guard status == 0, let instance else {
            let failure =
                status == 0
                ? CSOPError(ErrorCode("INIT_FAILED"), "create returned 0 without an instance")
                : CSOPError(abi: error, plugin: name, fallback: ErrorCode("INIT_FAILED"))
            throw fail(.initFailed, "plugin \"\(name)\" failed to start: \(failure.code): \(failure.message)")
        }
        let events = events
        let circuit = inspected.entry.circuit.map {
            CircuitBreaker.announcing(plugin: name, policy: $0, logger: configuration.logger, events: events)
        }
        return PluginCapability(
            name: name, version: inspected.version, operations: inspected.operations, library: inspected.library,
            file: file, descriptor: inspected.descriptor, instance: instance, context: context, circuit: circuit,
            generation: generation(name))
    }

    /// - Throws: `DUPLICATE_DOMAIN` when an earlier entry (in `taken`, domain → file) serves the same domain.
    static func checkUnclaimed(_ inspected: Inspected, file: String, taken: [String: String]) throws(PluginLoadFailure) {
        guard let other = taken[inspected.name] else { return }
        throw PluginLoadFailure(
            file: file, kind: .duplicateDomain,
            message: "\(inspected.library.path) claims the domain \"\(inspected.name)\", already served by the plugin from \(other)",
            domain: inspected.name)
    }

    /// Checks one entry without creating the plugin: parse, find, permissions, dlopen, the
    /// ABI block and, where the plugin offers `check_config`, its config. Returns nil for a
    /// disabled entry.
    func inspect(file: String, checkConfig: Bool = false) throws(PluginLoadFailure) -> Inspected? {
        var domain: String?
        func fail(_ kind: PluginLoadFailure.Kind, _ message: String) -> PluginLoadFailure {
            PluginLoadFailure(file: file, kind: kind, message: message, domain: domain)
        }
        let entry: PluginConfigFile
        do throws(PluginConfigError) {
            entry = try PluginConfigFile.parse(try readEntry(file), path: file)
        } catch {
            throw fail(error.kind ?? .badConfig, error.line.map { "line \($0): \(error.message)" } ?? error.message)
        }
        guard entry.enabled else { return nil }
        domain = entry.expectedName ?? Self.likelyDomain(library: entry.library)
        let path = try resolve(entry.library, file: file, domain: domain)
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
        guard descriptor.pointee.struct_size >= UInt32(Self.minimumDescriptorSize) else {
            throw fail(
                .abiMismatch,
                "\(path): descriptor is \(descriptor.pointee.struct_size) bytes, host expects at least \(Self.minimumDescriptorSize)")
        }
        let (name, version, operations) = try readDescriptor(descriptor, path: path, fail: fail)
        domain = name
        if let expected = entry.expectedName, expected != name {
            throw fail(.nameMismatch, "\(path) serves \"\(name)\" but the entry says name = \"\(expected)\"")
        }
        if Self.reservedDomains.contains(name) {
            throw fail(.duplicateDomain, "\(path) claims the domain \"\(name)\", which the host reserves")
        }
        if checkConfig, descriptor.pointee.struct_size >= UInt32(MemoryLayout<csop_plugin_descriptor>.size),
            let check = descriptor.pointee.check_config
        {
            let config = JSONValue.object(entry.config).serialized()
            var error = csop_error()
            let status = config.withUnsafeBufferPointer { bytes in check(bytes.baseAddress, bytes.count, &error) }
            if status != 0 {
                let failure = CSOPError(abi: error, plugin: name, fallback: .invalidPayload)
                throw fail(.badConfig, "plugin \"\(name)\" refuses its [config]: \(failure.message)")
            }
        }
        return Inspected(entry: entry, library: library, descriptor: descriptor, name: name, version: version, operations: operations)
    }

    /// The domain a library probably serves, from its file name (`libcsop-storage.so` →
    /// `storage`), to say why a domain is missing when its entry fails before the plugin is read.
    static func likelyDomain(library: String) -> String? {
        var name = Substring(library.split(separator: "/").last ?? "")
        for prefix in ["libcsop-", "libcsop_", "lib"] where name.hasPrefix(prefix) {
            name = name.dropFirst(prefix.count)
            break
        }
        guard let dot = name.firstIndex(of: ".") else { return nil }
        let domain = String(name[..<dot])
        return (try? Action("\(domain).x")) != nil ? domain : nil
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
    /// directory, then each search-path directory, then the executable's directory and the
    /// installed `../lib/csop` beside it.
    private func resolve(_ library: String, file: String, domain: String?) throws(PluginLoadFailure) -> String {
        if library.hasPrefix("/") {
            guard access(library, F_OK) == 0 else {
                throw PluginLoadFailure(file: file, kind: .libraryNotFound, message: "library \(library) does not exist", domain: domain)
            }
            return library
        }
        var candidates = [configuration.pluginsDirectory]
        if !library.contains("/") {
            candidates += configuration.pluginSearchPath
            if configuration.searchExecutableDirectory, let dir = HostConfiguration.executableDirectory() {
                candidates += [dir, HostConfiguration.normalize("\(dir)/../lib/csop")]
            }
        }
        for directory in candidates {
            let path = "\(directory)/\(library)"
            if access(path, F_OK) == 0 { return Self.absolute(path) }
        }
        throw PluginLoadFailure(
            file: file, kind: .libraryNotFound,
            message: "library \(library) not found in: \(candidates.joined(separator: ", ")); build it (swift build) or set CSOP_PLUGIN_PATH",
            domain: domain)
    }

    private static func absolute(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The longest entry file read.
    static let maxEntryBytes = 1 << 20

    /// Reads an entry file: only a regular file (a symlink to one is fine) of at most
    /// ``maxEntryBytes``, opened without blocking, so a FIFO, a device or a directory named
    /// `*.conf` is a clear error instead of a hang; its permissions are checked on the opened
    /// file itself.
    func readEntry(_ path: String) throws(PluginConfigError) -> String {
        func fail(_ message: String, _ kind: PluginLoadFailure.Kind = .badConfig) -> PluginConfigError {
            PluginConfigError(file: path, line: nil, message: message, kind: kind)
        }
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else {
            let reason = errno
            var link = stat()
            if reason == ELOOP { throw fail("cannot read it: a symbolic link loops (too many levels of symbolic links)") }
            if reason == ENOENT, lstat(path, &link) == 0, link.st_mode & S_IFMT == S_IFLNK {
                throw fail("cannot read it: a dangling symbolic link (its target does not exist)")
            }
            throw fail("cannot read it: \(String(cString: strerror(reason)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw fail("cannot stat it: \(String(cString: strerror(errno)))") }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw fail("it is a directory, not an entry file; entries are *.conf files")
        case S_IFIFO: throw fail("it is a FIFO, not a regular file; entries are regular *.conf files")
        default: throw fail("it is not a regular file (a device or socket); entries are regular *.conf files")
        }
        if !configuration.allowInsecurePermissions,
            let problem = FilePermissions.problem(with: info) ?? FilePermissions.directoryProblem(above: path)
        {
            throw fail("refusing the config file: \(problem) (or pass --allow-insecure-permissions)", .insecurePermissions)
        }
        guard info.st_size <= Self.maxEntryBytes else { throw fail("the file is larger than \(Self.maxEntryBytes) bytes") }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size) + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("cannot read it: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            count += n
        }
        guard count <= Self.maxEntryBytes, count < bytes.count else { throw fail("the file is larger than \(Self.maxEntryBytes) bytes") }
        guard let text = String(validating: bytes[0..<count], as: UTF8.self) else {
            throw fail("the file is not valid UTF-8 text")
        }
        return text
    }
}
