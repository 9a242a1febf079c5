import Synchronization
import WasmKit

/// Caps each memory of one wasm call at `maxBytes` and each table at ``maxTableElements``.
///
/// A refused `memory.grow` returns -1 to the module, as the WebAssembly spec has it, so a module
/// can handle it; the refusal is remembered so that a trap that follows can name it. Initial
/// memory over the cap fails instantiation.
final class WasmMemoryCap: ResourceLimiter {
    static let maxTableElements = 1 << 20

    let maxBytes: Int
    private let refused = Atomic<Int>(-1)

    init(maxBytes: Int) { self.maxBytes = maxBytes }

    /// The size of the last memory refused, in bytes, if one was.
    var refusedBytes: Int? {
        let bytes = refused.load(ordering: .relaxed)
        return bytes < 0 ? nil : bytes
    }

    func limitMemoryGrowth(to desired: Int) throws -> Bool {
        guard desired <= maxBytes else {
            refused.store(desired, ordering: .relaxed)
            return false
        }
        return true
    }

    func limitTableGrowth(to desired: Int) throws -> Bool { desired <= Self.maxTableElements }
}
