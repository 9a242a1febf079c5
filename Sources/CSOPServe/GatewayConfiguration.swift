import CSOPCore
import CSOPHost
import Glibc

/// Everything `csop serve` can be told, with its defaults. Each setting is a flag and a key of
/// the TOML config file (`--config FILE`); a flag wins over the file.
///
/// ```toml
/// listen = "0.0.0.0:7420"
/// static-dir = "public"                   # files served at /, optional
/// status-page = "/"                       # --status-page: the status page's path ("" for none)
/// [tls]
/// cert = "/etc/csop/cert.pem"             # --tls-cert
/// key = "/etc/csop/key.pem"               # --tls-key
/// [auth]
/// secret-file = "/etc/csop/hs256.secret"  # --jwt-secret-file (HS256)
/// jwks-file = "/etc/csop/jwks.json"       # --jwks-file (ES256, RS256)
/// audience = "csop"                       # --audience
/// clock-skew = 30                         # --clock-skew, seconds
/// insecure-no-auth = false                # --insecure-no-auth
/// [cors]
/// origins = ["https://app.example"]       # --cors-origin, repeatable
/// [limits]
/// body-bytes = 8_388_608                  # --max-body-bytes
/// frame-bytes = 1_048_576                 # --max-frame-bytes
/// connections = 16_384                    # --max-connections
/// in-flight = 256                         # --max-in-flight (per connection)
/// rate = 1000                             # --rate-limit, requests/s per token (0: off)
/// burst = 2000                            # --rate-burst
/// header-timeout = 10                     # --header-timeout, seconds
/// idle-timeout = 120                      # --idle-timeout, seconds
/// ping-interval = 30                      # --ping-interval, seconds
/// shutdown-grace = 10                     # --shutdown-grace, seconds
/// ```
public struct GatewayConfiguration: Sendable, Equatable {
    /// Where to listen: `HOST:PORT` (`[::1]:7420` for IPv6). Port 0 picks a free port.
    public var listen = "127.0.0.1:7420"
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// HS256 shared secret: a file holding at least 32 bytes (surrounding whitespace ignored).
    public var secretFile: String?
    /// ES256/RS256 public keys: a JWKS JSON file (`{"keys": [...]}`).
    public var jwksFile: String?
    /// When set, a token's `aud` must include it.
    public var audience: String?
    /// Seconds of clock difference tolerated on `exp` and `nbf`.
    public var clockSkew: Double = 30
    /// Serve without auth on a non-loopback address (every caller is the local owner).
    public var insecureNoAuth = false
    /// Origins allowed by CORS (`*` for any); none by default.
    public var corsOrigins: [String] = []
    /// A directory whose files are served at `/` (an app, a test page); nil serves none.
    public var staticDirectory: String?
    /// Where the status page is served (plugins, live charts from `/metrics`); nil: nowhere.
    /// A file of ``staticDirectory`` at the same path wins.
    public var statusPath: String? = "/"
    public var maxBodyBytes = 8 << 20
    public var maxFrameBytes = 1 << 20
    public var maxConnections = 16_384
    public var maxInFlightPerConnection = 256
    /// Requests per second per token (per client address without auth); 0 turns it off.
    public var rateLimit: Double = 1000
    public var rateBurst: Double = 2000
    public var headerTimeout: Double = 10
    public var idleTimeout: Double = 120
    public var pingInterval: Double = 30
    public var shutdownGrace: Double = 10

    public init() {}

    /// Whether tokens are checked.
    public var authEnabled: Bool { secretFile != nil || jwksFile != nil }

    /// Applies the settings of a TOML config file.
    /// - Throws: ``GatewayConfigurationError`` naming the file, key and what to write instead.
    public mutating func apply(file path: String) throws(GatewayConfigurationError) {
        guard let handle = fopen(path, "r") else {
            throw GatewayConfigurationError("cannot read the config file \(path): \(String(cString: strerror(errno)))")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = fread(&chunk, 1, chunk.count, handle)
            if count <= 0 { break }
            bytes += chunk[0..<count]
            if bytes.count > 1 << 20 { break }
        }
        fclose(handle)
        guard bytes.count <= 1 << 20 else { throw GatewayConfigurationError("\(path) is larger than 1 MiB; is it the right file?") }
        let document: JSONObject
        do throws(PluginConfigError) {
            document = try PluginConfigFile.document(String(decoding: bytes, as: UTF8.self), path: path)
        } catch {
            throw GatewayConfigurationError(error.description)
        }
        do throws(CSOPError) {
            try apply(Fields(.object(document), path: path, allowed: ["listen", "static-dir", "status-page", "tls", "auth", "cors", "limits"]))
        } catch {
            throw GatewayConfigurationError("\(path): \(error.message)")
        }
    }

    private mutating func apply(_ fields: Fields) throws(CSOPError) {
        if let value = try fields.string("listen") { listen = value }
        if let value = try fields.string("static-dir") { staticDirectory = value }
        if let value = try fields.string("status-page", nonEmpty: false, maxLength: 256) { statusPath = value.isEmpty ? nil : value }
        if fields.has("tls") {
            let tls = try fields.nested("tls", allowed: ["cert", "key"])
            if let value = try tls.string("cert") { tlsCertificate = value }
            if let value = try tls.string("key") { tlsKey = value }
        }
        if fields.has("auth") {
            let auth = try fields.nested("auth", allowed: ["secret-file", "jwks-file", "audience", "clock-skew", "insecure-no-auth"])
            if let value = try auth.string("secret-file") { secretFile = value }
            if let value = try auth.string("jwks-file") { jwksFile = value }
            if let value = try auth.string("audience") { audience = value }
            if let value = try auth.number("clock-skew", in: 0...3600) { clockSkew = value }
            if let value = try auth.bool("insecure-no-auth") { insecureNoAuth = value }
        }
        if fields.has("cors") {
            let cors = try fields.nested("cors", allowed: ["origins"])
            if let values = try cors.array("origins", maxCount: 256) {
                corsOrigins = try values.enumerated().map { (index, value) throws(CSOPError) in
                    guard case .string(let origin) = value, !origin.isEmpty else {
                        throw .invalidPayload("\(cors.path).origins[\(index)] must be an origin like \"https://app.example\"")
                    }
                    return origin
                }
            }
        }
        if fields.has("limits") {
            let limits = try fields.nested(
                "limits",
                allowed: [
                    "body-bytes", "frame-bytes", "connections", "in-flight", "rate", "burst", "header-timeout", "idle-timeout",
                    "ping-interval", "shutdown-grace",
                ])
            if let value = try limits.int("body-bytes", in: 1024...(1 << 30)) { maxBodyBytes = Int(value) }
            if let value = try limits.int("frame-bytes", in: 1024...(1 << 30)) { maxFrameBytes = Int(value) }
            if let value = try limits.int("connections", in: 1...1_000_000) { maxConnections = Int(value) }
            if let value = try limits.int("in-flight", in: 1...65_536) { maxInFlightPerConnection = Int(value) }
            if let value = try limits.number("rate", in: 0...10_000_000) { rateLimit = value }
            if let value = try limits.number("burst", in: 1...10_000_000) { rateBurst = value }
            if let value = try limits.number("header-timeout", in: 0.1...3600) { headerTimeout = value }
            if let value = try limits.number("idle-timeout", in: 0.1...86_400) { idleTimeout = value }
            if let value = try limits.number("ping-interval", in: 0...3600) { pingInterval = value }
            if let value = try limits.number("shutdown-grace", in: 0...3600) { shutdownGrace = value }
        }
    }

    /// The host and port of ``listen``.
    public func address() throws(GatewayConfigurationError) -> (host: String, port: Int) {
        var text = Substring(listen)
        var host: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw badListen() }
            host = text[text.index(after: text.startIndex)..<close]
            text = text[text.index(after: close)...]
            guard text.hasPrefix(":") else { throw badListen() }
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw badListen() }
            host = text[..<colon]
            text = text[colon...]
        }
        guard !host.isEmpty, let port = Int(text.dropFirst()), (0...65_535).contains(port) else { throw badListen() }
        return (String(host), port)
    }

    private func badListen() -> GatewayConfigurationError {
        GatewayConfigurationError("--listen \(listen) is not HOST:PORT; write e.g. 127.0.0.1:7420, 0.0.0.0:7420 or [::1]:7420")
    }

    /// Whether ``listen`` names a loopback address only.
    public func listensOnLoopbackOnly() throws(GatewayConfigurationError) -> Bool {
        let host = try address().host
        return host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Checks the settings against each other: TLS needs both files, and a non-loopback
    /// address needs auth unless ``insecureNoAuth`` says otherwise.
    public func validate() throws(GatewayConfigurationError) {
        _ = try address()
        if (tlsCertificate == nil) != (tlsKey == nil) {
            throw GatewayConfigurationError("TLS needs both --tls-cert and --tls-key (one of them is missing)")
        }
        if !authEnabled, !insecureNoAuth, try !listensOnLoopbackOnly() {
            throw GatewayConfigurationError(
                "refusing to listen on \(listen) without auth: anyone who can reach it could read and write every tenant's data. Configure --jwt-secret-file or --jwks-file, listen on 127.0.0.1, or pass --insecure-no-auth if another layer authenticates"
            )
        }
        if rateBurst < 1 { throw GatewayConfigurationError("--rate-burst must be at least 1") }
        if let statusPath {
            let reserved = ["/metrics", "/healthz", "/readyz"]
            guard statusPath.hasPrefix("/"), !statusPath.hasPrefix("/v1/"), !reserved.contains(statusPath),
                !statusPath.split(separator: "/").contains(".."), statusPath.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "?") && $0 != UInt8(ascii: "#") })
            else {
                throw GatewayConfigurationError(
                    "--status-page \(statusPath) is not a usable path: write one like / or /status (not under /v1/, not /metrics, /healthz or /readyz), or \"\" for no status page")
            }
        }
    }
}

/// A `csop serve` setting that cannot be used, with what to change.
public struct GatewayConfigurationError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
