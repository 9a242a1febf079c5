import CSOPPluginABI
import Glibc
import Synchronization

/// An opened shared library. Loaded with RTLD_NODELETE: Swift images register runtime
/// metadata that must outlive them, so a library is never unmapped once opened — which also
/// keeps the code of a plugin a reload replaced mapped while anything may still run it.
///
/// The dynamic loader hands back the image it already has for a path it knows, even when the
/// file there was replaced since. So when the file at a path this process opened before is
/// not the one it opened (another device, inode, size or modification time), the new file is
/// copied to a private temporary file (mode 0700, removed once opened) and that is opened:
/// a library replaced at the same path loads the new code.
final class PluginLibrary: @unchecked Sendable {  // The handle is only read after init.
    let path: String
    /// True when the file at `path` had changed since this process first opened it, and a
    /// private copy of it was opened instead.
    let isCopy: Bool
    private let handle: UnsafeMutableRawPointer

    /// The file each path named when this process opened it (the image the loader keeps for it).
    private static let opened = Mutex<[String: FileIdentity]>([:])

    /// Opens `path`. - Throws: the dlerror() text.
    init(path: String) throws(PluginLoadError) {
        let identity = FileIdentity(path: path)
        let first = Self.opened.withLock { $0[path] }
        var copy: String?
        if let first, let identity, first != identity {
            copy = try Self.privateCopy(of: path)
        }
        defer { if let copy { unlink(copy) } }
        _ = dlerror()
        guard let handle = dlopen(copy ?? path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            throw PluginLoadError(.openFailed, "dlopen failed: \(Self.lastError())")
        }
        if copy == nil, first == nil, let identity { Self.opened.withLock { $0[path] = $0[path] ?? identity } }
        self.path = path
        self.isCopy = copy != nil
        self.handle = handle
    }

    /// Copies `path` to a new file only this user can read, in `TMPDIR` (default /tmp).
    private static func privateCopy(of path: String) throws(PluginLoadError) -> String {
        let directory = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(directory)/csop-plugin-XXXXXX.so".utf8CString)
        let output = template.withUnsafeMutableBufferPointer { mkstemps($0.baseAddress!, 3) }
        guard output >= 0 else {
            throw PluginLoadError(.openFailed, "cannot make a private copy of the changed library in \(directory): \(String(cString: strerror(errno)))")
        }
        defer { close(output) }
        let copy = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else {
            unlink(copy)
            throw PluginLoadError(.openFailed, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(input) }
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            if n == 0 { break }
            var written = 0
            while n > 0, written < n {
                let w = buffer.withUnsafeBytes { write(output, $0.baseAddress! + written, n - written) }
                if w < 0, errno == EINTR { continue }
                if w <= 0 { written = -1; break }
                written += w
            }
            if n < 0 || written < 0 {
                let reason = String(cString: strerror(errno))
                unlink(copy)
                throw PluginLoadError(.openFailed, "cannot copy the changed library \(path) to \(copy): \(reason)")
            }
        }
        fchmod(output, 0o700)
        return copy
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

/// Which file a path named: the device, inode, size and modification time of a `stat`.
struct FileIdentity: Hashable, Sendable {
    var device: UInt64
    var inode: UInt64
    var size: Int64
    var modified: Int64

    /// Nil when `path` cannot be `stat`ed.
    init?(path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        modified = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
    }

    var description: String { "\(device):\(inode):\(size):\(modified)" }
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
