import CSOPCore
import Foundation
import Synchronization
@_spi(Fuzzing) import WasmKit  // Store.resourceLimiter (the only way to cap a memory's growth) and Module.dropStartFunction (validation runs none of the module's code)

/// A WebAssembly module a task may run: decoded, parsed and validated once, importing nothing.
///
/// Immutable and shareable: each call instantiates it in a store of its own (``WasmRunner``),
/// so no call sees another's memory or globals.
struct WasmModule: Sendable {
    /// The largest binary accepted, in bytes (its base64 is a third longer).
    static let maxBytes = 8 << 20

    let module: Module
    /// The binary, which ``WasmJIT`` rewrites and compiles.
    let bytes: [UInt8]
    /// Tells this module from every other one parsed in the process (``WasmJIT`` keeps compiled
    /// registered modules by it).
    let id: UInt64
    /// The binary's size: what the module counts against the registry's and the queue's bytes.
    var byteCount: Int { bytes.count }

    private static let ids = Atomic<UInt64>(0)

    /// Decodes and checks `base64`, the value at `path`.
    /// - Throws: `INVALID_PAYLOAD` for text that is not base64, a binary past ``maxBytes``, a
    ///   module WasmKit cannot parse or validate (with its reason), and a module with imports:
    ///   a task is given no host functions, memory, table or global.
    init(base64: String, path: String) throws(CSOPError) {
        try Self.checkSize(base64: base64, path: path)
        guard let bytes = Base64Bytes.decode(base64), !bytes.isEmpty else {
            throw .invalidPayload("\(path) must be a WebAssembly binary in base64 (for example `base64 -w0 module.wasm`)")
        }
        try self.init(bytes: bytes, path: path)
    }

    /// Refuses base64 text that cannot hold a module of at most ``maxBytes``: a check cheap
    /// enough for the dispatching thread.
    static func checkSize(base64: String, path: String) throws(CSOPError) {
        guard base64.utf8.count <= (maxBytes / 3 + 1) * 4 else { throw tooLarge(path) }
    }

    private static func tooLarge(_ path: String) -> CSOPError {
        .invalidPayload("\(path) is larger than \(maxBytes >> 20) MiB of WebAssembly; make the module smaller")
    }

    /// Parses and checks the binary `bytes`; `path` names it in errors. See ``init(base64:path:)``.
    init(bytes: [UInt8], path: String) throws(CSOPError) {
        guard bytes.count <= Self.maxBytes else { throw Self.tooLarge(path) }
        guard bytes.starts(with: [0x00, 0x61, 0x73, 0x6D]) else {
            throw .invalidPayload("\(path) is not a WebAssembly binary (it does not start with \\0asm); send the .wasm file, not its text format")
        }
        do {
            module = try parseWasm(bytes: bytes)
        } catch {
            throw .invalidPayload("\(path) is not a valid WebAssembly module: \(Self.reason(error))")
        }
        if let first = module.imports.first {
            let more = module.imports.count > 1 ? " (and \(module.imports.count - 1) more)" : ""
            throw .invalidPayload(
                "\(path) imports \(first.module).\(first.name)\(more); a wasm task is given no imports (no host functions, WASI, memory, table or global): export what it needs instead"
            )
        }
        self.bytes = bytes
        id = Self.ids.add(1, ordering: .relaxed).newValue
    }

    /// Instantiates the module once in a throwaway store and translates every function, so a
    /// body that does not type-check, a data segment out of bounds or initial memory over the
    /// cap is refused now rather than at the first call (WasmKit translates lazily). The start
    /// function is dropped for this: none of the module's code runs here.
    /// - Throws: `INVALID_PAYLOAD` naming `path` and the reason.
    func validate(memoryLimitBytes: Int, path: String) throws(CSOPError) {
        var probe = module
        probe.dropStartFunction()
        let store = Store(engine: Engine(configuration: EngineConfiguration(compilationMode: .eager)))
        let cap = WasmMemoryCap(maxBytes: memoryLimitBytes)
        store.resourceLimiter = cap
        do {
            _ = try probe.instantiate(store: store)
        } catch {
            if let refused = cap.refusedBytes {
                throw .invalidPayload(
                    "\(path) asks for \(refused >> 20) MiB of initial memory, more than the cap of \(memoryLimitBytes >> 20) MiB (config memoryLimitMB); declare less or raise memoryLimitMB"
                )
            }
            throw .invalidPayload("\(path) is not a valid WebAssembly module: \(Self.reason(error))")
        }
    }

    /// WasmKit's description of `error` without its "Trap: " prefix and backtrace.
    static func reason(_ error: any Error) -> String {
        var text = String(describing: error)
        if let newline = text.firstIndex(of: "\n") { text = String(text[..<newline]) }
        if text.hasPrefix("Trap: ") { text.removeFirst(6) }
        return text
    }

    /// The names of the exported functions, for an error that lists them.
    var exportedFunctions: [String] {
        module.exports.compactMap { export in
            if case .function = export.descriptor { export.name } else { nil }
        }
    }
}
