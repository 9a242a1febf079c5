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

    /// `PostgresURL` percent-decoding drops the two bytes after a `%` that does not start a valid
    /// escape (`pa%ss` → `pa%`) and reads `%+1` or `%-0` as escapes (Swift's integer parsing
    /// accepts a sign), so such a password or database name is silently changed.
    static func postgresURLHasBadPercentEscape(_ url: [UInt8], _ parts: URLParts) -> Bool {
        guard skipping else { return false }
        func isHex(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
        }
        for range in [parts.user, parts.parserPassword, parts.database] {
            guard let range else { continue }
            let bytes = Array(url[range])
            for i in bytes.indices where bytes[i] == UInt8(ascii: "%") {
                guard i + 2 < bytes.count, isHex(bytes[i + 1]), isHex(bytes[i + 2]) else { return true }
            }
        }
        return false
    }

    /// `PostgresURL` cuts the query at the first `?` before it looks for the user information,
    /// and its sslmode error repeats the option it did not accept (`got …`): for a user or
    /// password with a `?` in it, written as libpq accepts it (`postgres://app:Xk?9pLm@db/prod`),
    /// the error prints what follows the `?` — the rest of the password, and the host.
    static func postgresURLUserInfoHasQuestionMark(_ parts: URLParts) -> Bool {
        guard skipping, let query = parts.query, let userInfo = parts.libpqUserInfo else { return false }
        return userInfo.contains(query)
    }
}
