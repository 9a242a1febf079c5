import CJavaScriptCore

/// Owns one JSStringRef and releases it in deinit.
final class JSString: @unchecked Sendable {  // Immutable; JSStringRef is thread-safe and ref-counted.
    private let ref: JSStringRef

    static let data = JSString("data")
    static let line = JSString("line")
    static let invoke = JSString("invoke")
    static let outcome = JSString("outcome")
    static let report = JSString("report")
    static let compilesAsAsync = JSString("compilesAsAsync")

    /// Made from UTF-16 so any Swift string, even one with NUL characters, converts exactly.
    init(_ text: String) {
        let units = Array(text.utf16)
        ref = units.withUnsafeBufferPointer { JSStringCreateWithCharacters($0.baseAddress, $0.count) }
    }

    deinit { JSStringRelease(ref) }

    /// Calls `body` with the string, which stays alive until `body` returns.
    func withRef<R>(_ body: (JSStringRef) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(ref) }
    }

    /// The UTF-8 bytes of a JSStringRef, without the trailing NUL.
    static func utf8(_ string: JSStringRef) -> [UInt8] {
        let capacity = JSStringGetMaximumUTF8CStringSize(string)
        return [UInt8](unsafeUninitializedCapacity: capacity) { buffer, count in
            let written = buffer.withMemoryRebound(to: CChar.self) { JSStringGetUTF8CString(string, $0.baseAddress, capacity) }
            count = max(written - 1, 0)
        }
    }

    static func string(_ string: JSStringRef) -> String {
        String(decoding: utf8(string), as: UTF8.self)
    }
}
