public import CSOPCore
public import NIOCore
public import PostgresNIO

/// A `postgres://user:password@host:port/database` URL, parsed the same way for every
/// plugin that talks to PostgreSQL.
///
/// The user is required; the port defaults to 5432 and the database to the user's name (as
/// the server does). The only query option is `sslmode`, and only `disable`, `allow` or
/// `prefer`: connections are not encrypted yet, and an option we would ignore is refused.
/// `description` leaves the password out so the URL can be logged.
public struct PostgresURL: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String?

    /// - Parameter field: the config key (or variable) the URL came from, for messages.
    /// - Throws: `INVALID_PAYLOAD` naming `field`; the message never repeats the URL.
    public init(_ text: String, field: String) throws(CSOPError) {
        var rest = Substring(text)
        if rest.hasPrefix("postgres://") {
            rest = rest.dropFirst("postgres://".count)
        } else if rest.hasPrefix("postgresql://") {
            rest = rest.dropFirst("postgresql://".count)
        } else {
            throw .invalidPayload("\(field) must start with postgres:// (postgres://user:password@host:5432/database)")
        }
        if let query = rest.firstIndex(of: "?") {
            for option in rest[rest.index(after: query)...].split(separator: "&") {
                let pair = option.split(separator: "=", maxSplits: 1).map(String.init)
                guard pair.first == "sslmode", pair.count == 2, ["disable", "allow", "prefer"].contains(pair[1]) else {
                    throw .invalidPayload(
                        "\(field): only sslmode=disable|allow|prefer is supported (connections are not encrypted), got \(option)")
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
            username = ""
        }
        if username.isEmpty { throw .invalidPayload("\(field) must name a user: postgres://user:password@host:5432/database") }
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

    public var description: String { "postgres://\(username)@\(host):\(port)/\(database ?? username)" }

    /// `host:port/database`, for messages.
    public var endpoint: String { "\(host):\(port)/\(database ?? username)" }

    /// A PostgresNIO configuration for this URL, without TLS.
    public func connectionConfiguration(connectTimeoutMilliseconds: Int64 = 5000) -> PostgresConnection.Configuration {
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database ?? username, tls: .disable)
        configuration.options.connectTimeout = .milliseconds(connectTimeoutMilliseconds)
        return configuration
    }

    /// PostgreSQL's own message for `error` when there is one; never the query or its binds.
    public static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            return "\(error.code)"
        }
        return "\(error)"
    }

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

extension PostgresConnection {
    /// Starts closing without waiting, keeping the connection alive until it is closed
    /// (postgres-nio asserts when an open connection is released).
    public func closeInBackground() {
        let closing: EventLoopFuture<Void> = close()
        closing.whenComplete { _ in withExtendedLifetime(self) {} }
    }
}
