/// A stable, machine-readable error code. The protocol's codes are static members;
/// capabilities add their own with ``init(_:)``.
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

    public static let keyNotFound: ErrorCode = "KEY_NOT_FOUND"
    public static let quotaExceeded: ErrorCode = "QUOTA_EXCEEDED"
    public static let saveFailed: ErrorCode = "SAVE_FAILED"
    public static let conflict: ErrorCode = "CONFLICT"
    public static let invalidTask: ErrorCode = "INVALID_TASK"
    public static let workerCrashed: ErrorCode = "WORKER_CRASHED"
    public static let queueFull: ErrorCode = "QUEUE_FULL"
    public static let resourceExhausted: ErrorCode = "RESOURCE_EXHAUSTED"
    public static let notConnected: ErrorCode = "NOT_CONNECTED"
    public static let channelError: ErrorCode = "CHANNEL_ERROR"
    public static let subscriptionFailed: ErrorCode = "SUBSCRIPTION_FAILED"
}
