import CSOPCore
import Glibc
import SyncPlugin

/// Bugs the fuzz targets found in code outside csop-fuzz that are reported and not fixed yet.
///
/// An input that hits one is skipped, so that fuzzing goes on to find other problems instead
/// of stopping at the same one every run. `CSOP_FUZZ_KNOWN=fail` turns the skipping off: the
/// inputs of `Tests/Fuzz/known/<target>/` must then still fail, and the test that replays them
/// says when one no longer does (the bug was fixed: move the file to `regressions/` and
/// delete its case here).
enum KnownIssue {
    static let skipping: Bool = getenv("CSOP_FUZZ_KNOWN").map { String(cString: $0) } != "fail"

    /// TOMLKit 0.6.0's toml++ 3.4.0 asserts (SIGABRT) on a table header whose first key
    /// character cannot start a key (`[=]`, `[.a]`, `[é]`, `[[ + ]]`, `[` then a newline) in
    /// builds without NDEBUG — the debug builds that `swift build` and the tests make — where a
    /// release build reports a parse error: a debug `csop` dies on such a plugins.d entry
    /// instead of answering BAD_CONFIG.
    static func tomlHeaderStartsWithNonKeyCharacter(_ text: String) -> Bool {
        guard skipping else { return false }
        let bytes = Array(text.utf8)
        func canStartKey(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "]"):
                true
            default: false
            }
        }
        var lineStart = 0
        while lineStart < bytes.count {
            var i = lineStart
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
            if i < bytes.count, bytes[i] == UInt8(ascii: "[") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "[") { i += 1 }
                while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 { i += 1 }
                if i < bytes.count, !canStartKey(bytes[i]) { return true }
            }
            guard let newline = bytes[lineStart...].firstIndex(of: 0x0A) else { break }
            lineStart = newline + 1
        }
        return false
    }
}
