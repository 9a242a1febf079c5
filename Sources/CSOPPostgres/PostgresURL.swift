public import CSOPCore
public import NIOCore
public import NIOSSL
public import PostgresNIO

/// A `postgres://user:password@host:port/database?sslmode=…` URL, parsed the same way for
/// every plugin that talks to PostgreSQL.
///
/// The user is required; the port defaults to 5432 and the database to the user's name (as
/// the server does). The query options are libpq's `sslmode` (default `prefer`),
/// `sslrootcert`, `sslcert` and `sslkey` (see ``SSLMode``); any other option is refused rather
/// than ignored. The files they name are read when the URL is parsed, so a missing or unusable
/// file is an `INVALID_PAYLOAD` then, not a failure at the first connection.
/// `description` leaves the password out so the URL can be logged.
public struct PostgresURL: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String?
    /// How the connection is encrypted and the server's certificate checked.
    public internal(set) var sslMode: SSLMode = .prefer
    /// The PEM CA bundle the server's certificate chain is verified against: `sslrootcert`, or
    /// `~/.postgresql/root.crt` when it exists and the mode verifies; nil when nothing is verified.
    public internal(set) var sslRootCert: String?
    /// The PEM client certificate (chain) presented to the server, with ``sslKey``.
    public internal(set) var sslCert: String?
    /// The unencrypted PEM private key of ``sslCert``.
    public internal(set) var sslKey: String?
    /// The TLS settings built from the options, nil for `sslmode=disable`.
    public internal(set) var tlsConfiguration: TLSConfiguration?
    /// What postgres-nio is given: the TLS context is made once, when the URL is parsed.
    public internal(set) var tls: PostgresConnection.Configuration.TLS = .disable

    /// - Parameters:
    ///   - field: the config key (or variable) the URL came from, for messages.
    ///   - homeDirectory: where `.postgresql/root.crt` is looked for (libpq's default
    ///     `sslrootcert`); `$HOME`, else the user's home from the password database.
    /// - Throws: `INVALID_PAYLOAD` naming `field` (and the option and file when one is wrong);
    ///   the message never repeats the URL, its password or any key material.
    public init(_ text: String, field: String, homeDirectory: String? = PostgresURL.homeDirectory()) throws(CSOPError) {
        var rest = Substring(text)
        if rest.hasPrefix("postgres://") {
            rest = rest.dropFirst("postgres://".count)
        } else if rest.hasPrefix("postgresql://") {
            rest = rest.dropFirst("postgresql://".count)
        } else {
            throw .invalidPayload("\(field) must start with postgres:// (postgres://user:password@host:5432/database)")
        }
        var options: [String: String] = [:]
        if let query = rest.firstIndex(of: "?") {
            options = try Self.parseOptions(rest[rest.index(after: query)...], field: field)
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
        try configureTLS(options, field: field, homeDirectory: homeDirectory)
    }

    public var description: String { "postgres://\(username)@\(host):\(port)/\(database ?? username)" }

    /// `host:port/database`, for messages.
    public var endpoint: String { "\(host):\(port)/\(database ?? username)" }

    /// The PostgresNIO configuration for this URL, TLS included (``tls``): the one helper the
    /// cold tier and cluster sync both connect with. The TLS server name (SNI and the
    /// `verify-full` check) is ``host``; for an IP address the check is against the
    /// certificate's IP addresses and no SNI is sent.
    public func connectionConfiguration(connectTimeoutMilliseconds: Int64 = 5000) -> PostgresConnection.Configuration {
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: username, password: password, database: database ?? username, tls: tls)
        configuration.options.connectTimeout = .milliseconds(connectTimeoutMilliseconds)
        return configuration
    }

    /// PostgreSQL's own message for `error` when there is one, or what went wrong with TLS in
    /// words; never the query or its binds.
    public static func describe(_ error: any Error) -> String {
        if let problem = tlsProblem(error, host: nil) { return "TLS/certificate problem: \(problem)" }
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            return "\(error.code)"
        }
        return "\(error)"
    }

    static func decode(_ text: Substring) -> String {
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
