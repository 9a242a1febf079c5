/// A stable, machine-readable error code. The protocol's codes are static members; each
/// plugin declares its own (`extension ErrorCode { static let keyNotFound: ErrorCode =
/// "KEY_NOT_FOUND" }`) in its module. The router never retries `INVALID_*`, `*_NOT_FOUND`,
/// `CONFLICT`, `QUOTA_EXCEEDED`, `FORBIDDEN` or `UNAUTHENTICATED`, whichever plugin reports them.
public struct ErrorCode: RawRepresentable, Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String

    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }

    public var description: String { rawValue }

    /// The action is not `domain.operation` with two identifiers.
    public static let invalidAction: ErrorCode = "INVALID_ACTION"
    /// The payload or options are malformed; the message names the field.
    public static let invalidPayload: ErrorCode = "INVALID_PAYLOAD"
    /// No plugin serves the action's domain.
    public static let capabilityNotFound: ErrorCode = "CAPABILITY_NOT_FOUND"
    /// The plugin does not offer the action's operation.
    public static let operationNotFound: ErrorCode = "OPERATION_NOT_FOUND"
    /// The attempt ran out of time and was cancelled.
    public static let timeout: ErrorCode = "TIMEOUT"
    /// The operation failed while running.
    public static let executionFailed: ErrorCode = "EXECUTION_FAILED"
    /// The host or capability is not ready (not loaded, shutting down).
    public static let notInitialized: ErrorCode = "NOT_INITIALIZED"
    /// The plugin broke the ABI contract (invalid JSON, unknown status).
    public static let pluginFault: ErrorCode = "PLUGIN_FAULT"
    /// The work was called off before it ran (a batch under `failFast`).
    public static let cancelled: ErrorCode = "CANCELLED"
    /// Too much is waiting already (the host's in-flight bytes, a plugin's queue); retryable.
    public static let queueFull: ErrorCode = "QUEUE_FULL"
    /// The caller's token does not allow the action (or a field the action names, such as
    /// another user's presence); never retried.
    public static let forbidden: ErrorCode = "FORBIDDEN"
    /// No valid credentials (a front end's missing or bad token, an unusable caller); never retried.
    public static let unauthenticated: ErrorCode = "UNAUTHENTICATED"
    /// The caller sent too many requests; retryable after a while.
    public static let rateLimited: ErrorCode = "RATE_LIMITED"
    /// The plugin's circuit breaker is open after repeated failures: calls fail at once until
    /// its cool-down ends; retryable later.
    public static let circuitOpen: ErrorCode = "CIRCUIT_OPEN"
    /// The child process of an isolated plugin died while the call ran, or is being
    /// restarted; retryable.
    public static let pluginCrashed: ErrorCode = "PLUGIN_CRASHED"
}
