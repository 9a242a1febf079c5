import ArgumentParser
import CSOPCLISupport
import CSOPHost
import CSOPServe
import Glibc
import Logging

@main
struct ServeTool: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csop-serve",
        abstract: "The CSOP network gateway (run it as csop serve and csop token).",
        subcommands: [ServeCommand.self, TokenCommand.self])
}

/// `csop serve`: the host on the network.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the plugins over HTTP, WebSocket and Server-Sent Events, with tokens, tenants and limits.",
        discussion: """
            Every option can also be set in the TOML file given with --config (flags win); the README's \
            "Serving over the network" lists the keys. Without auth the server listens on loopback only.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "A TOML config file (keys: listen, static-dir, [tls], [auth], [cors], [limits]).")
    var config: String?
    @Option(help: "HOST:PORT to listen on (default 127.0.0.1:7420; port 0 picks a free one).")
    var listen: String?
    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain: serve HTTPS and WSS.")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key for --tls-cert.")
    var tlsKey: String?
    @Option(name: .customLong("jwt-secret-file"), help: "A file holding the HS256 secret (at least 32 bytes): tokens are required.")
    var jwtSecretFile: String?
    @Option(name: .customLong("jwks-file"), help: "A JWKS file of ES256/RS256 public keys: tokens are required.")
    var jwksFile: String?
    @Option(help: "A token's aud must include this.")
    var audience: String?
    @Option(name: .customLong("clock-skew"), help: "Seconds of clock difference allowed on exp and nbf (default 30).")
    var clockSkew: Double?
    @Flag(name: .customLong("insecure-no-auth"), help: "Allow a non-loopback --listen without auth (another layer must authenticate).")
    var insecureNoAuth = false
    @Flag(name: .customLong("no-metrics"), help: "Keep no metrics and serve no /metrics (each request then costs about 0.1 µs less).")
    var noMetrics = false
    @Option(name: .customLong("cors-origin"), help: "An origin whose pages may call the server (repeatable; * for any).")
    var corsOrigins: [String] = []
    @Option(name: .customLong("static-dir"), help: "Serve the files of this directory at /.")
    var staticDir: String?
    @Option(name: .customLong("status-page"), help: "Where the status page is served (default /; \"\" for none). Its data needs a token allowing host.metrics when auth is on.")
    var statusPage: String?
    @Option(name: .customLong("max-body-bytes"), help: "The largest HTTP body (default 8388608).")
    var maxBodyBytes: Int?
    @Option(name: .customLong("max-frame-bytes"), help: "The largest WebSocket message (default 1048576).")
    var maxFrameBytes: Int?
    @Option(name: .customLong("max-connections"), help: "Connections at once; more wait to be accepted (default 16384).")
    var maxConnections: Int?
    @Option(name: .customLong("max-in-flight"), help: "Requests running at once per WebSocket; past it, the socket is not read (default 256).")
    var maxInFlight: Int?
    @Option(name: .customLong("rate-limit"), help: "Requests per second per token (per client address without auth); 0 turns it off (default 1000).")
    var rateLimit: Double?
    @Option(name: .customLong("rate-burst"), help: "Requests a token may send at once before --rate-limit applies (default 2000).")
    var rateBurst: Double?
    @Option(name: .customLong("header-timeout"), help: "Seconds a request's head may take to arrive once begun (default 10).")
    var headerTimeout: Double?
    @Option(name: .customLong("idle-timeout"), help: "Seconds an HTTP connection may stay idle (default 120).")
    var idleTimeout: Double?
    @Option(name: .customLong("ping-interval"), help: "Seconds between WebSocket pings; 0 turns them off (default 30).")
    var pingInterval: Double?
    @Option(name: .customLong("shutdown-grace"), help: "Seconds running requests get to finish on SIGTERM/SIGINT (default 10).")
    var shutdownGrace: Double?

    func configuration() throws -> GatewayConfiguration {
        var configuration = GatewayConfiguration()
        do throws(GatewayConfigurationError) {
            if let config { try configuration.apply(file: config) }
        } catch {
            throw ValidationError(error.description)
        }
        if let listen { configuration.listen = listen }
        if let tlsCert { configuration.tlsCertificate = tlsCert }
        if let tlsKey { configuration.tlsKey = tlsKey }
        if let jwtSecretFile { configuration.secretFile = jwtSecretFile }
        if let jwksFile { configuration.jwksFile = jwksFile }
        if let audience { configuration.audience = audience }
        if let clockSkew { configuration.clockSkew = clockSkew }
        if insecureNoAuth { configuration.insecureNoAuth = true }
        if !corsOrigins.isEmpty { configuration.corsOrigins = corsOrigins }
        if let staticDir { configuration.staticDirectory = staticDir }
        if let statusPage { configuration.statusPath = statusPage.isEmpty ? nil : statusPage }
        if let maxBodyBytes { configuration.maxBodyBytes = maxBodyBytes }
        if let maxFrameBytes { configuration.maxFrameBytes = maxFrameBytes }
        if let maxConnections { configuration.maxConnections = maxConnections }
        if let maxInFlight { configuration.maxInFlightPerConnection = maxInFlight }
        if let rateLimit { configuration.rateLimit = rateLimit }
        if let rateBurst { configuration.rateBurst = rateBurst }
        if let headerTimeout { configuration.headerTimeout = headerTimeout }
        if let idleTimeout { configuration.idleTimeout = idleTimeout }
        if let pingInterval { configuration.pingInterval = pingInterval }
        if let shutdownGrace { configuration.shutdownGrace = shutdownGrace }
        do throws(GatewayConfigurationError) {
            try configuration.validate()
        } catch {
            throw ValidationError(error.description)
        }
        return configuration
    }

    func run() async throws {
        let configuration = try configuration()
        let host = try await global.makeHost(serving: true) { $0.metrics = noMetrics ? nil : HostMetrics() }
        var logger = Logger(label: "csop.serve")
        logger.logLevel = global.logLevel.level
        let gateway: Gateway
        do throws(GatewayConfigurationError) {
            gateway = try await Gateway(host: host, configuration: configuration, logger: logger)
        } catch {
            await host.shutdown()
            throw ValidationError(error.description)
        }
        let scheme = configuration.tlsCertificate == nil ? "http" : "https"
        let authNote =
            configuration.authEnabled
            ? "tokens required"
            : "no auth: every caller is the local owner\(try configuration.listensOnLoopbackOnly() ? " (loopback only)" : " (--insecure-no-auth)")"
        let failures = host.failures.count
        try await gateway.run { port in
            let (name, _) = (try? configuration.address()) ?? ("127.0.0.1", port)
            let shown = name.contains(":") ? "[\(name)]" : name
            printLine(
                "csop serve: listening on \(scheme)://\(shown):\(port) (\(authNote); \(host.plugins.count) plugins\(failures > 0 ? ", \(failures) failed to load: see /readyz" : ""))",
                to: 2)
        }
        printLine("csop serve: stopped accepting; shutting the host down", to: 2)
        await host.shutdown(gracePeriod: configuration.shutdownGrace * 1000)
    }
}
