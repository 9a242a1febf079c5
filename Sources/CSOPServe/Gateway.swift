import CSOPCore
public import CSOPHost
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
public import UnixSignals

/// `csop serve`: a host on the network. HTTP (`POST /v1/dispatch`, `POST /v1/{domain}/{operation}`),
/// WebSocket (`/v1/ws`), Server-Sent Events (`/v1/events`), `/healthz`, `/readyz` and the
/// browser client at `/v1/csop.js`, with bearer tokens, CORS, TLS and limits from a
/// ``GatewayConfiguration``.
///
/// ```swift
/// let host = await CSOPHost.load(HostConfiguration(pluginsDirectory: "plugins.d"))
/// let gateway = try await Gateway(host: host, configuration: GatewayConfiguration())
/// try await gateway.run()   // until SIGTERM or SIGINT
/// ```
/// Stopping (a signal, or ``run(onListening:)``'s task cancelled) stops accepting
/// connections, lets running requests finish for up to `shutdownGrace` seconds, closes
/// WebSockets with 1001 and ends event streams; the host is the caller's to shut down after.
public struct Gateway: Sendable {
    let services: GatewayServices
    let logger: Logger
    private let running = RunningGroup()

    /// - Throws: ``GatewayConfigurationError`` for settings that cannot be used together
    ///   (see ``GatewayConfiguration/validate()``) or unreadable key files.
    public init(host: CSOPHost, configuration: GatewayConfiguration, logger: Logger = Logger(label: "csop.serve")) async throws(GatewayConfigurationError) {
        try configuration.validate()
        let authenticator = configuration.authEnabled ? try await Authenticator(configuration: configuration, audit: host.auditLog) : nil
        self.services = GatewayServices(host: host, configuration: configuration, authenticator: authenticator)
        self.logger = logger
    }

    /// Serves until SIGTERM/SIGINT or until the calling task is cancelled.
    /// - Parameter onListening: called once with the bound port (useful with port 0).
    public func run(gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint], onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let configuration = services.configuration
        let address = try configuration.address()
        let listener = services.router.attach(to: services.host)
        defer { services.host.removeEventListener(listener) }
        let router = makeRouter()
        let headerTimeout = TimeAmount.milliseconds(Int64(configuration.headerTimeout * 1000))
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [HeaderDeadlineHandler(timeout: headerTimeout)],
            idleTimeout: .milliseconds(Int64(configuration.idleTimeout * 1000)))
        var tls: TLSConfiguration?
        if let certificate = configuration.tlsCertificate, let key = configuration.tlsKey {
            do {
                tls = TLSConfiguration.makeServerConfiguration(
                    certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                    privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            } catch {
                throw GatewayConfigurationError("cannot use --tls-cert \(certificate) and --tls-key \(key): \(error)")
            }
        }
        let server = HTTPServerBuilder { [tls, services] responder in
            let guarded = FirstHeadDeadlineChannel(
                base: GatewayChannel(responder: responder, services: services, http1: http1), timeout: headerTimeout)
            guard let tls else { return guarded }
            return try TLSChannel(guarded, tlsConfiguration: tls)
        }
        let app = Application(
            router: router,
            server: server,
            configuration: ApplicationConfiguration(
                address: .hostname(address.host, port: address.port), serverName: nil, backlog: 1024,
                availableConnectionsDelegate: CountingConnections(
                    limit: MaximumAvailableConnections(configuration.maxConnections, logger: logger), metrics: services.metrics)),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? address.port) },
            logger: logger)
        // The server runs in an inner group that only the coordinator stops, so WebSockets are
        // closed with 1001 (by the gateway) before Hummingbird's own shutdown closes them with 1000.
        let inner = ServiceGroup(configuration: .init(services: [.init(service: app)], logger: logger))
        var groupConfiguration = ServiceGroupConfiguration(
            services: [.init(service: ShutdownCoordinator(inner: inner, sockets: services.openSockets))],
            gracefulShutdownSignals: gracefulShutdownSignals, cancellationSignals: [], logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .milliseconds(Int64(configuration.shutdownGrace * 1000))
        let group = ServiceGroup(configuration: groupConfiguration)
        running.set(group)
        try await group.run()
    }

    /// Stops the server as SIGTERM would: no new connections, running requests finish
    /// (up to `shutdownGrace`), WebSockets close with 1001, event streams end; then
    /// ``run(gracefulShutdownSignals:onListening:)`` returns.
    public func stop() async {
        await running.get()?.triggerGracefulShutdown()
    }

    func makeRouter() -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        let routes = HTTPRoutes(services: services)
        router.add(middleware: GatewayErrorMiddleware())
        router.add(middleware: OriginMiddleware(allowed: services.configuration.corsOrigins))
        if let directory = services.configuration.staticDirectory {
            router.add(middleware: FileMiddleware(directory, searchForIndexHtml: true, logger: logger))
        }
        router.get("healthz") { _, _ in routes.healthz() }
        router.get("readyz") { _, _ in await routes.readyz() }
        if services.metrics != nil {
            router.get("metrics") { request, _ in await routes.metrics(request) }
            if let path = services.configuration.statusPath {
                router.get(RouterPath(path)) { _, _ in routes.statusPage() }
            }
        }
        router.get("v1/csop.js") { request, _ in routes.clientScript(request) }
        // POST /v1/dispatch and /v1/{domain}/{operation} are served before the router, on the
        // event loop: see DispatchHandler.
        router.get("v1/events") { request, context in await routes.events(request, context: context) }
        let streams = StreamRoute(services: services)
        router.put("v1/streams/**") { request, context in await streams.put(request, context: context) }
        router.get("v1/streams/**") { request, context in await streams.get(request, context: context) }
        return router
    }
}

/// The service group of a running gateway, for ``Gateway/stop()``.
final class RunningGroup: Sendable {
    private let group = Mutex<ServiceGroup?>(nil)
    func set(_ value: ServiceGroup) { group.withLock { $0 = value } }
    func get() -> ServiceGroup? { group.withLock { $0 } }
}

/// Runs the server's group; on graceful shutdown closes the WebSockets with 1001 (after
/// their running requests are answered), then stops the server, which lets running HTTP
/// requests finish.
struct ShutdownCoordinator: Service {
    let inner: ServiceGroup
    let sockets: OpenSockets

    func run() async throws {
        // Detached, so the inner group does not inherit this task's graceful shutdown (a group
        // run inside a service follows its parent's shutdown at once, and Hummingbird would
        // then close the sockets with 1000 before they are closed with 1001 here).
        let server = Task.detached { [inner] in try await inner.run() }
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await server.value
            } onGracefulShutdown: { [inner, sockets] in
                Task {
                    await sockets.closeAll()
                    await inner.triggerGracefulShutdown()
                }
            }
        } onCancel: {
            server.cancel()
        }
    }
}
