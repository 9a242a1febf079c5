import Glibc

/// What the target is checking right now, named when a property fails.
enum FuzzContext {
    // Set once per input on the single thread that runs the checks (libFuzzer's or the replay loop).
    nonisolated(unsafe) static var target = ""
    nonisolated(unsafe) static var input = "(libFuzzer input)"
}

/// Stops the process when a property does not hold, so libFuzzer records the input as a crash
/// (and the replay run fails naming the file).
func property(_ holds: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    guard !holds else { return }
    fatalError("property violated in fuzz target \(FuzzContext.target) on \(FuzzContext.input): \(message())", file: file, line: line)
}

/// The bytes as Swift string literal text, for messages about small inputs.
func shown(_ bytes: some Collection<UInt8>) -> String {
    let prefix = bytes.prefix(200)
    var text = ""
    for byte in prefix {
        switch byte {
        case 0x20..<0x7F where byte != UInt8(ascii: "\\") && byte != UInt8(ascii: "\""): text.unicodeScalars.append(Unicode.Scalar(byte))
        default: text += "\\x" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16)
        }
    }
    return "\"" + text + (bytes.count > prefix.count ? "…(\(bytes.count) bytes)" : "") + "\""
}

func shown(_ text: String) -> String { shown(Array(text.utf8)) }

/// Writes to standard error, unbuffered.
func printError(_ text: String) {
    var text = text
    text.withUTF8 { buffer in _ = write(STDERR_FILENO, buffer.baseAddress, buffer.count) }
}
