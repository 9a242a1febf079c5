import CSOPCore
import CSOPHost
import Glibc
import Synchronization

/// `Request.decode` and `CSOPHost.dispatch(json:line:completion:)` on arbitrary bytes.
///
/// - a decode failure is a `CSOPError` with a non-empty code (`INVALID_PAYLOAD` or
///   `INVALID_ACTION`) and message, and keeps the request's id when it had a valid one;
/// - a decoded request has the given id (or a generated `csop_` id), options in range, and
///   decodes to the same request once written back as JSON;
/// - `dispatch(json:)` on a host without plugins answers exactly once, before returning (no
///   timer ever fires here), with a response whose JSON parses back: the decode error for an
///   invalid request, `INVALID_PAYLOAD` for invalid JSON, `host.ping`'s pong or a routing error.
enum RequestFuzzTarget {
    static let target = FuzzTarget(
        name: "request", summary: "Request.decode / CSOPHost.dispatch(json:): errors are CSOPErrors, requests re-decode equal",
        check: check)

    /// A host with no plugins.d (only the built-in `host` domain) and a clock whose timers never
    /// fire, so every answer is synchronous and deterministic.
    static let host = CSOPHost(
        configuration: HostConfiguration(
            pluginsDirectory: "/nonexistent/csop-fuzz/plugins.d", pluginSearchPath: [], searchExecutableDirectory: false),
        scheduler: StoppedClock(), backoff: BackoffPolicy(baseMilliseconds: 0, capMilliseconds: 0, jitter: 0))

    static func check(_ bytes: [UInt8]) {
        let decoded: Result<Request, Request.DecodeFailure>?
        switch Result(catching: { () throws(JSONParseError) in try JSONValue(parsing: bytes) }) {
        case .success(let json):
            let result = Request.decode(json)
            decoded = result
            switch result {
            case .success(let request): checkDecoded(request, from: json)
            case .failure(let failure): checkFailure(failure, from: json)
            }
        case .failure:
            decoded = nil
        }
        checkDispatch(bytes, decoded: decoded)
    }

    static func checkFailure(_ failure: Request.DecodeFailure, from json: JSONValue) {
        let error = failure.error
        property(!error.code.rawValue.isEmpty && !error.message.isEmpty, "a decode error without code or message: \(error)")
        property(error.code == .invalidPayload || error.code == .invalidAction, "decode answered \(error.code), not INVALID_*")
        property(!error.retryable, "a decode error marked retryable: \(error)")
        if let id = failure.id {
            property(json["id"] == .string(id), "the failure names id \(shown(id)), which the request did not give")
        }
    }

    static func checkDecoded(_ request: Request, from json: JSONValue) {
        if case .string(let id)? = json["id"] {
            property(request.id == id, "decoded id \(shown(request.id)) is not the given \(shown(id))")
        } else {
            property(isGeneratedID(request.id), "generated id \(shown(request.id)) is not csop_ and 16 hex digits")
        }
        property(json["action"] == .string(request.action), "decoded action differs from the request's")
        property(RequestOptions.timeoutRange.contains(request.options.timeout), "timeout \(request.options.timeout) out of range")
        property(RequestOptions.retryRange.contains(request.options.retry), "retry \(request.options.retry) out of range")
        let written: JSONValue = [
            "id": .string(request.id), "action": .string(request.action), "payload": request.payload,
            "options": ["timeout": .double(request.options.timeout), "retry": .int(Int64(request.options.retry))],
        ]
        let reparsed = Result(catching: { () throws(JSONParseError) in try JSONValue(parsing: written.serialized()) })
        guard case .success(let again) = reparsed, case .success(let second) = Request.decode(again) else {
            return property(false, "the decoded request written back as \(written) does not decode")
        }
        property(second.id == request.id, "id changed on the way back")
        property(second.action == request.action, "action changed on the way back")
        property(second.payload == request.payload, "payload changed on the way back")
        property(second.options == request.options, "options changed on the way back: \(request.options) → \(second.options)")
    }

    static func checkDispatch(_ bytes: [UInt8], decoded: Result<Request, Request.DecodeFailure>?) {
        let answers = Mutex<[Response]>([])
        host.dispatch(json: bytes, line: 7) { response in answers.withLock { $0.append(response) } }
        let responses = answers.withLock { $0 }
        property(responses.count == 1, "dispatch(json:) answered \(responses.count) times before returning, not once")
        let response = responses[0]
        let line = response.serialized()
        guard case .success(let json) = Result(catching: { () throws(JSONParseError) in try JSONValue(parsing: line) }) else {
            return property(false, "the response line \(shown(line)) is not valid JSON")
        }
        property(!line.contains(0x0A), "the response line contains a raw newline")
        property(json["id"] == .string(response.id), "the response line's id differs from the response's")
        switch response.outcome {
        case .success:
            property(json["status"] == "ok", "an ok response written with status \(json["status"] ?? .null)")
            guard case .success(let request)? = decoded else {
                return property(false, "dispatch answered ok to a request that does not decode")
            }
            property(request.action == "host.ping" || request.action == "host.info", "ok for \(shown(request.action)) on a host without plugins")
        case .failure(let error):
            property(json["status"] == "error", "an error response written with status \(json["status"] ?? .null)")
            property(json["error"]?["code"] == .string(error.code.rawValue), "the written error code differs")
            property(json["error"]?["message"] == .string(error.message), "the written error message differs")
            property(!error.code.rawValue.isEmpty && !error.message.isEmpty, "an error response without code or message")
            switch decoded {
            case nil:
                property(error.code == .invalidPayload && error.message.hasPrefix("line 7 is not valid JSON"), "invalid JSON answered \(error)")
            case .failure(let failure)?:
                property(error == failure.error, "dispatch answered \(error), decode said \(failure.error)")
                property(failure.id.map { response.id == $0 } ?? isGeneratedID(response.id), "the answer lost the request's id")
            case .success(let request)?:
                // Without an id each decode generates its own.
                property(
                    isGeneratedID(request.id) ? isGeneratedID(response.id) : response.id == request.id,
                    "the answer's id \(shown(response.id)) is not the request's \(shown(request.id))")
                property(!error.retryable, "a routing error marked retryable: \(error)")
            }
        }
    }

    static func isGeneratedID(_ id: String) -> Bool {
        let utf8 = Array(id.utf8)
        return utf8.count == 21 && id.hasPrefix("csop_")
            && utf8[5...].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}

/// Monotonic time, and timers that never fire: the fuzz host never times out or retries later.
struct StoppedClock: Scheduler {
    struct Timer: ScheduledTimer {
        func cancel() {}
    }

    func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) * 1000 + Double(time.tv_nsec) / 1_000_000
    }

    func schedule(after milliseconds: Double, _ work: @escaping @Sendable () -> Void) -> any ScheduledTimer { Timer() }
}
