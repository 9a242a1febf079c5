import CSOPCore

extension ErrorCode {
    /// A batch task that never started because an earlier one failed under `failFast`.
    static let cancelled: ErrorCode = "CANCELLED"
}
