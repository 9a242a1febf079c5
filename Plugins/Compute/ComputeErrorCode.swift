import CSOPCore

/// The compute plugin's own error codes, beside the protocol's.
extension ErrorCode {
    /// No built-in or registered task has that name (never retried).
    static let invalidTask: ErrorCode = "INVALID_TASK"
    /// A worker's JavaScript engine could not be set up (retryable).
    static let workerCrashed: ErrorCode = "WORKER_CRASHED"
    /// The script went past its memory cap and was stopped.
    static let resourceExhausted: ErrorCode = "RESOURCE_EXHAUSTED"
    /// More registered functions than the plugin keeps (never retried).
    static let quotaExceeded: ErrorCode = "QUOTA_EXCEEDED"
    /// The jobs database cannot be reached (retryable).
    static let notConnected: ErrorCode = "NOT_CONNECTED"
    /// No job of the caller's has that id.
    static let jobNotFound: ErrorCode = "JOB_NOT_FOUND"
}
