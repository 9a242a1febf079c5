import CSOPCore

/// The storage plugin's own error codes, beside the protocol's.
extension ErrorCode {
    /// `get` of a key that does not exist (never retried).
    static let keyNotFound: ErrorCode = "KEY_NOT_FOUND"
    /// The save would take the store past `maxBytes`; nothing changed (never retried).
    static let quotaExceeded: ErrorCode = "QUOTA_EXCEEDED"
    /// The write itself failed (disk full, a database error).
    static let saveFailed: ErrorCode = "SAVE_FAILED"
    /// `ifVersion` did not match the key's version; nothing changed (never retried).
    static let conflict: ErrorCode = "CONFLICT"
    /// The cold tier's PostgreSQL is unreachable (retryable).
    static let notConnected: ErrorCode = "NOT_CONNECTED"
    /// An encrypted value could not be decrypted with the configured key.
    static let decryptionFailed: ErrorCode = "DECRYPTION_FAILED"
    /// Too many watches, or an unknown watch id (`storage.watch`, `storage.unwatch`).
    static let subscriptionFailed: ErrorCode = "SUBSCRIPTION_FAILED"
    /// `storage.append`, `storage.commit` or `storage.abort` of an upload that is not open (never retried).
    static let uploadNotFound: ErrorCode = "UPLOAD_NOT_FOUND"
    /// `storage.get` (or `getMany`) of a streamed value: read it with `storage.read` (never retried).
    static let streamedValue: ErrorCode = "STREAMED_VALUE"
    /// `storage.read` of a JSON value: read it with `storage.get` (never retried).
    static let notStreamed: ErrorCode = "NOT_STREAMED"
}
