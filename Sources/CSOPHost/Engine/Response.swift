public import CSOPCore
/// A CSOP response: `{"id","status":"ok","data","duration"}` or
/// `{"id","status":"error","error":{"code","message","retry"},"duration"}`.
public struct Response: Sendable, CustomStringConvertible {
    public var id: String
    public var outcome: Result<RawJSON, CSOPError>
    /// Milliseconds from dispatch to the answer, retries included.
    public var duration: Double
    /// Which instance of its plugin answered (``LoadedPluginInfo/generation``): a front end
    /// that keeps per-connection state a plugin handed out (subscription ids) tells instances
    /// apart by it across reloads. 0 when no plugin answered (the host's own, a refusal).
    /// Not part of the JSON.
    public var generation: Int = 0

    public init(id: String, outcome: Result<RawJSON, CSOPError>, duration: Double) {
        self.id = id
        self.outcome = outcome
        self.duration = duration
    }

    public var isOK: Bool { if case .success = outcome { true } else { false } }

    /// The result value of a successful response.
    public var data: JSONValue? { if case .success(let raw) = outcome { raw.value } else { nil } }

    /// The error of a failed response.
    public var error: CSOPError? { if case .failure(let error) = outcome { error } else { nil } }

    /// The response as one line of compact JSON, as `csop run` prints it.
    public var description: String { String(decoding: serialized(), as: UTF8.self) }

    /// The response as one line of compact JSON (no newline).
    public func serialized() -> [UInt8] {
        var writer = JSONWriter(capacity: 96)
        write(to: &writer)
        return writer.bytes
    }

    public func write(to writer: inout JSONWriter) {
        writer.append("{\"id\":")
        writer.writeString(id)
        switch outcome {
        case .success(let raw):
            writer.append(",\"status\":\"ok\",\"data\":")
            writer.appendRaw(raw.bytes)
        case .failure(let error):
            writer.append(",\"status\":\"error\",\"error\":{\"code\":")
            writer.writeString(error.code.rawValue)
            writer.append(",\"message\":")
            writer.writeString(error.message)
            writer.append(error.retryable ? ",\"retry\":true}" : ",\"retry\":false}")
        }
        writer.append(",\"duration\":")
        writer.writeThousandths(duration)
        writer.append("}")
    }

    /// The response as a JSON value.
    public var json: JSONValue {
        var object: JSONObject = ["id": .string(id)]
        switch outcome {
        case .success(let raw):
            object["status"] = "ok"
            object["data"] = raw.value
        case .failure(let error):
            object["status"] = "error"
            object["error"] = error.json
        }
        object["duration"] = .double(duration)
        return .object(object)
    }
}
