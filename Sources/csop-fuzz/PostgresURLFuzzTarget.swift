import CSOPCore
import CSOPPostgres

/// `PostgresURL(_:field:)` on arbitrary text.
///
/// - an error is `INVALID_PAYLOAD`, names the field, and never reveals the password: the
///   message does not contain it, and does not change when the password's letters and digits
///   change (wherever a reader puts the password: this parser, up to the last `@` before the
///   first `/`, or libpq, up to the first `@`; for both a `?` in a password is part of it);
/// - a user, password or database with a `%` not followed by two hex digits is refused (as
///   libpq refuses it), and so is one that is not UTF-8 once decoded;
/// - a parsed URL has a user, a host and a port in 1–65535; its `description` and `endpoint`
///   do not depend on the password; user, password and database are the percent-decoding of
///   what the URL wrote;
/// - written back as a URL (percent-encoded) it parses to the same fields.
enum PostgresURLFuzzTarget {
    static let target = FuzzTarget(
        name: "pgurl", summary: "PostgresURL: errors are INVALID_PAYLOAD without the password, URLs round-trip",
        check: check)

    static let field = "postgresUrl"

    static func check(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let utf8 = Array(text.utf8)
        let parts = URLParts(utf8)
        let result = parse(text)
        for range in [parts.user, parts.parserPassword, parts.database] {
            guard let range else { continue }
            let raw = Array(utf8[range])
            if URLParts.hasInvalidEscape(raw) || String(validating: URLParts.percentDecodedBytes(raw), as: UTF8.self) == nil {
                property(!result.isSuccess, "\(shown(raw)) has an invalid percent-escape or is not UTF-8 decoded, and was accepted")
            }
        }
        switch result {
        case .failure(let error):
            property(error.code == .invalidPayload, "a URL error with code \(error.code)")
            property(error.message.hasPrefix(field), "the error does not name the field: \(error.message)")
            for range in parts.passwordRanges {
                let raw = Array(utf8[range])
                // The rest of the URL may spell the same text (`u:abcd@h/db?abcd`): that is no leak.
                let elsewhere = Array(utf8[..<range.lowerBound]) + [0] + Array(utf8[range.upperBound...])
                for password in [raw, Array(URLParts.percentDecoded(raw).utf8)]
                where password.count >= 4 && !fixedText.contains(password) && !elsewhere.contains(password) {
                    property(!Array(error.message.utf8).contains(password), "the error reveals the password \(shown(password)): \(error.message)")
                }
                if case .failure(let other) = parse(String(decoding: URLParts.scrambled(utf8, in: range), as: UTF8.self)) {
                    property(
                        other.message == error.message,
                        "the error depends on the password's characters (\(shown(utf8[range]))): \(error.message) | \(other.message)")
                }
            }
        case .success(let url):
            property(!url.username.isEmpty && !url.host.isEmpty, "a URL without user or host: \(url)")
            property((1...65535).contains(url.port), "port \(url.port)")
            if let user = parts.user {
                let expected = URLParts.percentDecoded(Array(utf8[user]))
                property(url.username == expected, "user \(shown(utf8[user])) decoded as \(shown(url.username)), not \(shown(expected))")
            }
            if let password = parts.parserPassword {
                let expected = URLParts.percentDecoded(Array(utf8[password]))
                property(
                    url.password == expected,
                    "password \(shown(utf8[password])) decoded as \(shown(url.password ?? "(none)")), not \(shown(expected))")
            } else {
                property(url.password == nil, "a password where the URL has none")
            }
            if let database = parts.database, !database.isEmpty {
                let expected = URLParts.percentDecoded(Array(utf8[database]))
                property(
                    url.database == expected,
                    "database \(shown(utf8[database])) decoded as \(shown(url.database ?? "(none)")), not \(shown(expected))")
            }
            if let password = parts.parserPassword,
                case .success(let other) = parse(String(decoding: URLParts.scrambled(utf8, in: password), as: UTF8.self))
            {
                property(other.description == url.description && other.endpoint == url.endpoint, "description depends on the password")
            }
            let written = render(url)
            guard case .success(let again) = parse(written) else {
                return property(false, "the URL written back as \(shown(written)) does not parse")
            }
            property(
                again.username == url.username && again.password == url.password && again.host == url.host
                    && again.port == url.port && again.database == url.database,
                "\(shown(written)) parses to different fields")
        }
    }

    static func parse(_ text: String) -> Result<PostgresURL, CSOPError> {
        Result { () throws(CSOPError) in try PostgresURL(text, field: field) }
    }

    /// Text every message may contain whatever the URL: a password made of it is not a leak.
    static let fixedText = Array(
        "\(field) must start with postgres:// (postgres://user:password@host:5432/database) only sslmode=disable|allow|prefer is supported (connections are not encrypted), got must name a user: has an invalid port; use a number from 1 to 65535 has no host name"
            .utf8)

    static func render(_ url: PostgresURL) -> String {
        var text = "postgres://" + percentEncoded(url.username)
        if let password = url.password { text += ":" + percentEncoded(password) }
        let host = url.host.contains(":") || url.host.hasPrefix("[") && url.host.hasSuffix("]") ? "[\(url.host)]" : url.host
        text += "@\(host):\(url.port)"
        if let database = url.database { text += "/" + percentEncoded(database) }
        return text
    }

    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        return out
    }
}

/// Where the parts of a `postgres://` URL are, as byte ranges of its UTF-8.
struct URLParts {
    /// The user and password as this parser splits them: the user information ends at the
    /// last `@` before the first `/`; then the host ends at a `/` (the path, up to a `?`) or a
    /// `?` (the query).
    var user: Range<Int>?
    var parserPassword: Range<Int>?
    var database: Range<Int>?
    /// The user information as libpq splits it: it ends at the first `@` (before any `/`), so
    /// a `?` in it is part of it; and the password in it, after its first `:`.
    var libpqUserInfo: Range<Int>?
    var libpqPassword: Range<Int>?
    /// Where the query starts, if there is one.
    var query: Int?

    var passwordRanges: [Range<Int>] {
        var ranges: [Range<Int>] = []
        for range in [parserPassword, libpqPassword] { if let range, !range.isEmpty, !ranges.contains(range) { ranges.append(range) } }
        return ranges
    }

    init(_ utf8: [UInt8]) {
        let start: Int
        if utf8.starts(with: Array("postgres://".utf8)) {
            start = 11
        } else if utf8.starts(with: Array("postgresql://".utf8)) {
            start = 13
        } else {
            return
        }
        let slash = utf8[start...].firstIndex(of: UInt8(ascii: "/")) ?? utf8.count
        var hostStart = start
        if let at = utf8[start..<slash].lastIndex(of: UInt8(ascii: "@")) {
            if let colon = utf8[start..<at].firstIndex(of: UInt8(ascii: ":")) {
                user = start..<colon
                parserPassword = (colon + 1)..<at
            } else {
                user = start..<at
            }
            hostStart = at + 1
        }
        let hostEnd = utf8[hostStart...].firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") } ?? utf8.count
        if hostEnd < utf8.count, utf8[hostEnd] == UInt8(ascii: "/") {
            let pathEnd = utf8[(hostEnd + 1)...].firstIndex(of: UInt8(ascii: "?")) ?? utf8.count
            database = (hostEnd + 1)..<pathEnd
            query = pathEnd < utf8.count ? pathEnd : nil
        } else if hostEnd < utf8.count {
            query = hostEnd
        }
        if let stop = utf8[start...].firstIndex(where: { $0 == UInt8(ascii: "@") || $0 == UInt8(ascii: "/") }),
            utf8[stop] == UInt8(ascii: "@")
        {
            libpqUserInfo = start..<stop
            if let colon = utf8[start..<stop].firstIndex(of: UInt8(ascii: ":")) { libpqPassword = (colon + 1)..<stop }
        }
    }

    /// Whether a `%` in `bytes` is not followed by two hex digits.
    static func hasInvalidEscape(_ bytes: [UInt8]) -> Bool {
        for i in bytes.indices where bytes[i] == UInt8(ascii: "%") {
            guard i + 2 < bytes.count, hexValue(bytes[i + 1]) != nil, hexValue(bytes[i + 2]) != nil else { return true }
        }
        return false
    }

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// RFC 3986 percent-decoding, as text (invalid UTF-8 replaced).
    static func percentDecoded(_ bytes: [UInt8]) -> String { String(decoding: percentDecodedBytes(bytes), as: UTF8.self) }

    /// RFC 3986 percent-decoding: `%` and two hex digits is a byte; anything else stays as it is.
    static func percentDecodedBytes(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count, let high = hexValue(bytes[i + 1]), let low = hexValue(bytes[i + 2]) {
                out.append(high << 4 | low)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }

    /// `utf8` with the letters and digits in `range` changed (each to the next, cyclically),
    /// and everything else, the URL's punctuation and the two characters after each `%`
    /// included, left as it is: the percent-escapes are the password's structure, which
    /// decides whether it is refused.
    static func scrambled(_ utf8: [UInt8], in range: Range<Int>) -> [UInt8] {
        var out = utf8
        var skip = 0
        for i in range {
            if skip > 0 {
                skip -= 1
                continue
            }
            if out[i] == UInt8(ascii: "%") {
                skip = 2
                continue
            }
            switch out[i] {
            case UInt8(ascii: "z"): out[i] = UInt8(ascii: "a")
            case UInt8(ascii: "Z"): out[i] = UInt8(ascii: "A")
            case UInt8(ascii: "9"): out[i] = UInt8(ascii: "0")
            case UInt8(ascii: "a")..<UInt8(ascii: "z"), UInt8(ascii: "A")..<UInt8(ascii: "Z"), UInt8(ascii: "0")..<UInt8(ascii: "9"):
                out[i] += 1
            default: break
            }
        }
        return out
    }
}
