import Foundation

/// Base64 text to bytes, for the wasm tasks' modules and inputs.
enum Base64Bytes {
    /// The bytes `text` encodes: decoded strictly first (about twice as fast), and only when
    /// that fails again skipping characters outside the alphabet (the line breaks of `base64`
    /// without `-w0`); nil when it is not base64 either way. Copied out of `Data` in one
    /// move: `[UInt8](data)` goes byte by byte, as long again as the decoding.
    static func decode(_ text: String) -> [UInt8]? {
        guard let data = Data(base64Encoded: text) ?? Data(base64Encoded: text, options: .ignoreUnknownCharacters) else { return nil }
        return data.withUnsafeBytes { Array($0) }
    }
}
