import CSOPCore

/// A `postgres://user:password@host:port/database` URL, split into its parts.
///
/// `description` leaves the password out so the URL can be logged.
struct PostgresURL: Sendable, CustomStringConvertible {
    var host: String
    var port: Int
    var username: String
    var password: String?
    var database: String?

    /// - Throws: `INVALID_PAYLOAD` naming `field`; the message never repeats the URL.
    init(_ text: String, field: String) throws(CSOPError) {
        var rest = Substring(text)
        if rest.hasPrefix("postgres://") {
            rest = rest.dropFirst("postgres://".count)
        } else if rest.hasPrefix("postgresql://") {
            rest = rest.dropFirst("postgresql://".count)
        } else {
            throw .invalidPayload("\(field) must start with postgres:// (postgres://user:password@host:port/database)")
        }
        if let query = rest.firstIndex(of: "?") {
            let options = rest[rest.index(after: query)...].split(separator: "&")
            for option in options {
                let pair = option.split(separator: "=", maxSplits: 1).map(String.init)
                if pair.first == "sslmode", pair.count == 2, !["disable", "allow", "prefer"].contains(pair[1]) {
                    throw .invalidPayload("\(field): sslmode=\(pair[1]) is not supported; the sync plugin connects without TLS")
                }
            }
            rest = rest[..<query]
        }
        var hostPart = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPart = rest[..<slash]
            let name = Self.decode(rest[rest.index(after: slash)...])
            database = name.isEmpty ? nil : name
        }
        if let at = hostPart.lastIndex(of: "@") {
            let credentials = hostPart[..<at]
            hostPart = hostPart[hostPart.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                username = Self.decode(credentials[..<colon])
                password = Self.decode(credentials[credentials.index(after: colon)...])
            } else {
                username = Self.decode(credentials)
            }
        } else {
            username = "postgres"
        }
        if username.isEmpty { throw .invalidPayload("\(field) has an empty user name") }
        port = 5432
        if let colon = hostPart.lastIndex(of: ":"), !hostPart.hasSuffix("]") {
            guard let value = Int(hostPart[hostPart.index(after: colon)...]), (1...65535).contains(value) else {
                throw .invalidPayload("\(field) has an invalid port; use a number from 1 to 65535")
            }
            port = value
            hostPart = hostPart[..<colon]
        }
        if hostPart.hasPrefix("["), hostPart.hasSuffix("]") { hostPart = hostPart.dropFirst().dropLast() }
        host = String(hostPart)
        if host.isEmpty { throw .invalidPayload("\(field) has no host name") }
    }

    var description: String { "postgres://\(username)@\(host):\(port)/\(database ?? "")" }

    private static func decode(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
