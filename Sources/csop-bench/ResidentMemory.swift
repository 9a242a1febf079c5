import Foundation

/// Resident memory figures of this process or a child, from `/proc/<pid>/status`.
enum ResidentMemory {
    /// Resets this process's peak (VmHWM) to its current RSS and returns that, in bytes.
    static func resetPeak() -> Int {
        try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
        return field("VmRSS") ?? 0
    }

    /// This process's peak RSS since the last reset, in bytes.
    static func peak() -> Int { field("VmHWM") ?? 0 }

    /// A `kB` field of `/proc/<process>/status` (`VmRSS`, `VmHWM`), in bytes; nil when the
    /// process is gone or has no such field.
    static func field(_ name: String, of process: String = "self") -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(process)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
            return Int(line.split(separator: " ").dropFirst().first ?? "").map { $0 * 1024 }
        }
        return nil
    }
}
