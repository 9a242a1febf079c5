import Glibc

/// Random ids for sync. (Timestamps and `onlineAt` come from CSOPCore's `WallClock`.)
enum SyncClock {
    /// A random 64-bit value as 16 hex digits, for instance and user ids.
    static func randomHex() -> String {
        let value = UInt64.random(in: .min ... .max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
