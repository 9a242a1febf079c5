import CSOPCore

/// The sync plugin's own error codes, beside the protocol's.
extension ErrorCode {
    /// Cluster mode's PostgreSQL connection is down (retryable).
    static let notConnected: ErrorCode = "NOT_CONNECTED"
    /// The channel name is not valid.
    static let channelError: ErrorCode = "CHANNEL_ERROR"
    /// Too many subscriptions, or an unknown subscription id.
    static let subscriptionFailed: ErrorCode = "SUBSCRIPTION_FAILED"
}
