/// An error as the protocol reports it: a stable code, a message that says what to fix,
/// and whether retrying the same request can help.
///
/// `description` is the code and message only; never put payloads or secrets in a message.
public struct CSOPError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: ErrorCode
    public var message: String
    public var retryable: Bool

    public init(_ code: ErrorCode, _ message: String, retryable: Bool = false) {
        self.code = code
        self.message = message
        self.retryable = retryable
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// The `error` object of an error response.
    public var json: JSONValue {
        .object(["code": .string(code.rawValue), "message": .string(message), "retry": .bool(retryable)])
    }

    public static func invalidPayload(_ message: String) -> CSOPError { CSOPError(.invalidPayload, message) }
    public static func executionFailed(_ message: String, retryable: Bool = false) -> CSOPError {
        CSOPError(.executionFailed, message, retryable: retryable)
    }
}
