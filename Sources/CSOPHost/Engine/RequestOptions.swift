public import CSOPCore
/// Per-request options: how long one attempt may take and how often to retry.
public struct RequestOptions: Sendable, Hashable {
    /// Milliseconds one attempt may run before it is cancelled (default 5000).
    public var timeout: Double
    /// How many times a retryable failure is retried (default 0).
    public var retry: Int

    public static let defaultTimeout: Double = 5000
    public static let timeoutRange: ClosedRange<Double> = 1...3_600_000
    public static let retryRange: ClosedRange<Int> = 0...10
    private static let keys: Set<String> = ["timeout", "retry"]

    public init(timeout: Double = RequestOptions.defaultTimeout, retry: Int = 0) {
        self.timeout = timeout
        self.retry = retry
    }

    /// Reads the `options` object of a request.
    /// - Throws: `INVALID_PAYLOAD` naming the bad option.
    public init(json: JSONValue?) throws(CSOPError) {
        // Most requests name no options: no Fields (nor its key set) for them.
        guard let json, !json.isNull else {
            self.init()
            return
        }
        let fields = try Fields(json, path: "options", allowed: Self.keys)
        let timeout = try fields.number("timeout", in: Self.timeoutRange) ?? Self.defaultTimeout
        let retry = try fields.int("retry", in: Int64(Self.retryRange.lowerBound)...Int64(Self.retryRange.upperBound)) ?? 0
        self.init(timeout: timeout, retry: Int(retry))
    }

    /// Checks values set in code.
    public func validate() throws(CSOPError) {
        guard Self.timeoutRange.contains(timeout) else {
            throw .invalidPayload("options.timeout must be between 1 and 3600000 ms, got \(timeout)")
        }
        guard Self.retryRange.contains(retry) else {
            throw .invalidPayload("options.retry must be between 0 and 10, got \(retry)")
        }
    }
}
