public import CSOPPluginABI
import Glibc

extension CSOPError {
    /// Reads an error a plugin reported through the C ABI (a completion or a failed `create`);
    /// the one conversion from `csop_error`, shared by the host and test harnesses.
    ///
    /// A code that is missing, empty, longer than 63 bytes or not printable ASCII becomes
    /// `fallback`; a missing message says which plugin gave none. The strings are copied.
    public init(abi error: csop_error, plugin: String, fallback: ErrorCode = .executionFailed) {
        var code = fallback
        if let raw = error.code {
            let length = strnlen(raw, 64)
            let bytes = UnsafeRawBufferPointer(start: raw, count: length)
            if length > 0, length < 64, bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
                code = ErrorCode(String(decoding: bytes, as: UTF8.self))
            }
        }
        var message = "plugin \(plugin) reported a failure without a message"
        if let raw = error.message, error.message_length > 0 {
            message = String(decoding: UnsafeRawBufferPointer(start: raw, count: error.message_length), as: UTF8.self)
        }
        self.init(code, message, retryable: error.retryable != 0)
    }

    /// Calls `body` with this error as a `csop_error` whose strings are valid until `body` returns.
    public func withABIError<T>(_ body: (csop_error) -> T) -> T {
        code.rawValue.withCString { code in
            var message = self.message
            return message.withUTF8 { text in
                text.withMemoryRebound(to: CChar.self) { chars in
                    body(csop_error(code: code, message: chars.baseAddress, message_length: chars.count, retryable: retryable ? 1 : 0))
                }
            }
        }
    }
}
