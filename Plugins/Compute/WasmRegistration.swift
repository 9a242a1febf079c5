import CSOPCore
import Synchronization

/// A module on its way into the registry: its base64 goes to a worker, which leaves the
/// parsed and validated module here for the registering call's completion to add.
final class WasmRegistration: Sendable {
    let base64: String
    private let prepared = Mutex<WasmModule?>(nil)

    init(base64: String) { self.base64 = base64 }

    /// The module, once ``prepare(memoryLimitBytes:)`` succeeded.
    var module: WasmModule? { prepared.withLock { $0 } }

    /// Decodes, parses and validates the module (``WasmModule/validate(memoryLimitBytes:path:)``).
    /// - Throws: `INVALID_PAYLOAD` naming `payload.wasm` and the reason.
    func prepare(memoryLimitBytes: Int) throws(CSOPError) {
        let module = try WasmModule(base64: base64, path: "payload.wasm")
        try module.validate(memoryLimitBytes: memoryLimitBytes, path: "payload.wasm")
        prepared.withLock { $0 = module }
    }
}
