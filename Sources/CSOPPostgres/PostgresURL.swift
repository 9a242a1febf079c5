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
        // Scanned by Unicode scalar, never by Character: a combining mark after a separator
        // (`:`, `@`, `/`) joins it into one Character and would hide it, moving a password
        // into the user name.
        var rest = Substring(text).unicodeScalars
        if text.utf8.starts(with: "postgres://".utf8) {
            rest = rest.dropFirst("postgres://".unicodeScalars.count)
        } else if text.utf8.starts(with: "postgresql://".utf8) {
            rest = rest.dropFirst("postgresql://".unicodeScalars.count)
        } else {
            throw .invalidPayload("\(field) must start with postgres:// (postgres://user:password@host:5432/database)")
        }
        // As libpq reads it, the user information ends at an `@` before the first `/`, and
        // a `?` in it is part of it (libpq takes the first `@`; the last one is taken here,
        // so that a raw `@` in a password works too). Only then do the host, the path and the
        // query follow — the query never starts inside the password.
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        if let at = rest[..<slash].lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                username = try Self.decode(Substring(credentials[..<colon]), part: "the user name", field: field)
                password = try Self.decode(Substring(credentials[credentials.index(after: colon)...]), part: "the password", field: field)
            } else {
                username = try Self.decode(Substring(credentials), part: "the user name", field: field)
            }
        } else {
            username = ""
        }
        // Without a user there is no telling where a password would end: nothing after it is read.
        if username.isEmpty { throw .invalidPayload("\(field) must name a user: postgres://user:password@host:5432/database") }
        let hostEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        var hostPart = rest[..<hostEnd]
        rest = rest[hostEnd...]
        if rest.first == "/" {
            let pathEnd = rest.firstIndex(of: "?") ?? rest.endIndex
            let name = try Self.decode(Substring(rest.dropFirst()[..<pathEnd]), part: "the database name", field: field)
            database = name.isEmpty ? nil : name
            rest = rest[pathEnd...]
        }
        port = 5432
        if let colon = hostPart.lastIndex(of: ":"), hostPart.last != "]" {
            guard let value = Int(String(Substring(hostPart[hostPart.index(after: colon)...]))), (1...65535).contains(value) else {
                throw .invalidPayload("\(field) has an invalid port; use a number from 1 to 65535")
            }
            port = value
            hostPart = hostPart[..<colon]
        }
        if hostPart.first == "[", hostPart.last == "]" { hostPart = hostPart.dropFirst().dropLast() }
        host = String(Substring(hostPart))
        if host.isEmpty { throw .invalidPayload("\(field) has no host name") }
        // The options come last: an error about them repeats an option name or mode, which is
        // only ever the query's once user, host and port have been read.
        let options = rest.first == "?" ? try Self.parseOptions(Substring(rest.dropFirst()), field: field) : [:]
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

    /// RFC 3986 percent-decoding of one part of the URL, which must come out as UTF-8 text.
    /// - Parameter part: what the text is, for messages ("the password"); the message never
    ///   repeats the text.
    /// - Throws: `INVALID_PAYLOAD` for a `%` not followed by two hex digits, which libpq
    ///   refuses too, and for bytes that are not UTF-8.
    static func decode(_ text: Substring, part: String, field: String) throws(CSOPError) -> String {
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        let utf8 = Array(text.utf8)
        guard utf8.contains(UInt8(ascii: "%")) else { return String(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var i = 0
        while i < utf8.count {
            guard utf8[i] == UInt8(ascii: "%") else {
                bytes.append(utf8[i])
                i += 1
                continue
            }
            guard i + 2 < utf8.count, let high = hex(utf8[i + 1]), let low = hex(utf8[i + 2]) else {
                throw .invalidPayload(
                    "\(field): \(part) has a % that does not start a percent-escape (% and two hex digits); write a literal % as %25")
            }
            bytes.append(high << 4 | low)
            i += 3
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw .invalidPayload("\(field): \(part) is not UTF-8 text once percent-decoded; percent-encode the UTF-8 bytes of each character")
        }
        return decoded
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
