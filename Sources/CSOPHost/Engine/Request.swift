public import CSOPCore
import Synchronization

/// A CSOP request: `{"id"?, "action", "payload", "options"}`.
public struct Request: Sendable {
    public var id: String
    public var action: String
    public var payload: JSONValue
    public var options: RequestOptions
    /// Who the request runs for: nil for the local owner (everything allowed, no tenant).
    /// Never read from JSON (``decode(_:)`` leaves it nil, so a client cannot claim one); an
    /// authenticating front end sets it after checking a token.
    public var caller: Caller?
    /// The W3C trace context the request belongs to (a `traceparent` header, the `trace`
    /// field); nil when the caller sent none. Plugins get it across the ABI.
    public var trace: TraceContext?

    public static let maxIDLength = 256
    private static let fields: [String] = ["id", "action", "payload", "options", "trace"]

    /// Creates a request; an id (`csop_` and 16 random hex digits) is generated when nil.
    /// - Parameter caller: who it runs for; nil (the default) for the local owner.
    public init(
        id: String? = nil, action: String, payload: JSONValue = .object(JSONObject()), options: RequestOptions = RequestOptions(),
        caller: Caller? = nil, trace: TraceContext? = nil
    ) {
        self.trace = trace
        self.id = id ?? Request.generateID()
        self.action = action
        self.payload = payload
        self.options = options
        self.caller = caller
    }

    /// Reads a request from its JSON form.
    /// - Returns: the request, or the id it named (if any) with the error to answer.
    public static func decode(_ json: JSONValue) -> Result<Request, DecodeFailure> {
        guard case .object(let object) = json else {
            return .failure(DecodeFailure(id: nil, error: .invalidPayload("a request must be a JSON object, got \(json.typeName)")))
        }
        var id: String?
        if let idValue = object["id"], !idValue.isNull {
            guard case .string(let text) = idValue, !text.isEmpty, text.utf8.count <= maxIDLength else {
                return .failure(DecodeFailure(id: nil, error: .invalidPayload("id must be a non-empty string of at most \(maxIDLength) bytes")))
            }
            id = text
        }
        do throws(CSOPError) {
            for member in object.members where !Self.fields.contains(member.key) {
                throw .invalidPayload("unknown request field \"\(member.key)\"; a request has id, action, payload, options and trace")
            }
            guard let actionValue = object["action"] else {
                throw CSOPError(.invalidAction, "the request has no action; add \"action\": \"domain.operation\"")
            }
            guard case .string(let action) = actionValue else {
                throw CSOPError(.invalidAction, "action must be a string like \"storage.save\", got \(actionValue.typeName)")
            }
            let payload = object["payload"] ?? .object(JSONObject())
            let options = try RequestOptions(json: object["options"])
            var trace: TraceContext?
            if let value = object["trace"], !value.isNull { trace = try TraceContext(json: value) }
            return .success(Request(id: id, action: action, payload: payload, options: options, trace: trace))
        } catch {
            return .failure(DecodeFailure(id: id, error: error))
        }
    }

    /// Why a request could not be decoded, and the id to answer with.
    public struct DecodeFailure: Error, Sendable {
        public var id: String?
        public var error: CSOPError
    }

    private static let idState = Atomic<UInt64>(0)
    private static let idSeed = UInt64.random(in: .min ... .max)

    /// `csop_` followed by 16 hex digits, unique within the process and unpredictable across processes.
    public static func generateID() -> String {
        var z = idSeed &+ idState.add(1, ordering: .relaxed).newValue &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let hex: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 21) { buffer in
            for (i, c) in "csop_".utf8.enumerated() { buffer[i] = c }
            for i in 0..<16 { buffer[5 + i] = hex.utf8Start[Int((z >> UInt64(60 - 4 * i)) & 0xF)] }
            return 21
        }
    }
}
