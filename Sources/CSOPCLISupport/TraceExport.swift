public import ArgumentParser
public import CSOPHost
public import Logging
import Tracing

#if OTLP
import OTel
import ServiceLifecycle
#endif

/// `--otlp-endpoint`, `--otlp-protocol`, `--service-name`: the host's spans sent to an
/// OpenTelemetry collector over OTLP/HTTP (swift-otel), in a build with the `OTLP` package
/// trait (`swift build --traits OTLP`). Without the trait, `--otlp-endpoint` is refused with
/// the command that builds it.
public struct TraceExportOptions: ParsableArguments {
    @Option(
        name: .customLong("otlp-endpoint"),
        help: ArgumentHelp(
            "Send the spans to this OpenTelemetry collector over OTLP/HTTP (e.g. http://127.0.0.1:4318).",
            discussion: "A URL with no path gets /v1/traces. Needs a build with the OTLP trait (swift build --traits OTLP). OTEL_* environment variables (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_BSP_SCHEDULE_DELAY, ...) adjust the export.",
            valueName: "url"))
    public var otlpEndpoint: String?

    @Option(name: .customLong("otlp-protocol"), help: "How spans are encoded for --otlp-endpoint.")
    public var otlpProtocol: OTLPEncoding = .protobuf

    @Option(name: .customLong("service-name"), help: "The service.name the exported spans carry.")
    public var serviceName = "csop"

    public init() {}

    /// The traces URL `--otlp-endpoint` names: `/v1/traces` is added to a URL with no path.
    /// - Throws: `ValidationError` for anything but an `http://` or `https://` URL with a host.
    func tracesURL() throws -> String? {
        guard let endpoint = otlpEndpoint else { return nil }
        let scheme = endpoint.hasPrefix("http://") ? "http://" : endpoint.hasPrefix("https://") ? "https://" : nil
        let rest = scheme.map { endpoint.dropFirst($0.count) } ?? ""
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard scheme != nil, !authority.isEmpty, !authority.hasPrefix(":"),
            endpoint.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else {
            throw ValidationError("--otlp-endpoint \(endpoint.debugDescription): expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:4318")
        }
        let path = rest.dropFirst(authority.count)
        return path.isEmpty || path == "/" ? "\(scheme!)\(authority)/v1/traces" : endpoint
    }

    /// Starts the exporter `--otlp-endpoint` asks for and sets it as the host's tracer; it
    /// sends what it still holds when the host shuts down. Nothing without `--otlp-endpoint`.
    /// - Throws: `ValidationError` for a malformed URL, or when this build has no exporter.
    func configure(_ configuration: inout HostConfiguration) throws {
        guard let url = try tracesURL() else { return }
        #if OTLP
        let export = try OTLPExport(tracesURL: url, encoding: otlpProtocol, serviceName: serviceName, logger: configuration.logger)
        configuration.tracer = export.tracer
        configuration.afterShutdown = { await export.finish() }
        #else
        _ = url
        throw ValidationError(
            "--otlp-endpoint: this csop was built without OTLP export; build it with `swift build --traits OTLP` (the README's Tracing section)")
        #endif
    }
}

/// `--otlp-protocol` values: OTLP/HTTP's two encodings.
public enum OTLPEncoding: String, CaseIterable, ExpressibleByArgument, Sendable {
    /// `http/protobuf`, OTLP's default.
    case protobuf
    /// `http/json`.
    case json
}

#if OTLP
/// swift-otel's tracing backend and the service group running its batch processor and
/// exporter.
final class OTLPExport: Sendable {
    let tracer: any Tracer
    private let group: ServiceGroup
    private let running: Task<Void, Never>

    init(tracesURL: String, encoding: OTLPEncoding, serviceName: String, logger: Logger) throws {
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel =
            switch logger.logLevel {
            case .trace: .trace
            case .debug: .debug
            case .info, .notice: .info
            case .warning: .warning
            case .error, .critical: .error
            }
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.endpoint = tracesURL
        configuration.traces.otlpExporter.protocol = encoding == .json ? .httpJSON : .httpProtobuf
        let backend: (factory: any Tracer, service: any Service)
        do {
            let made = try OTel.makeTracingBackend(configuration: configuration)
            backend = (made.factory, made.service)
        } catch {
            throw ValidationError("--otlp-endpoint \(tracesURL): \(error)")
        }
        tracer = backend.factory
        let group = ServiceGroup(services: [backend.service], gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
        self.group = group
        running = Task {
            do { try await group.run() } catch { logger.warning("OTLP span export stopped: \(error)") }
        }
    }

    /// Sends the spans still held (the batch processor's graceful shutdown), waiting at most
    /// 10 s for the collector.
    func finish() async {
        await group.triggerGracefulShutdown()
        let running = running
        await withTaskGroup(of: Void.self) { waiting in
            waiting.addTask { await running.value }
            waiting.addTask { try? await Task.sleep(for: .seconds(10)) }
            await waiting.next()
            waiting.cancelAll()
        }
        running.cancel()
    }
}
#endif
