import Glibc

/// Reads this process's resident set size from `/proc/self/statm`, keeping the file open so
/// each reading is a single `pread`.
final class ProcessMemory {
    private let fd: Int32
    private let pageSize = UInt64(sysconf(Int32(_SC_PAGESIZE)))

    init() { fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC) }

    deinit { if fd >= 0 { close(fd) } }

    /// Resident bytes, or nil when /proc is unavailable.
    func residentBytes() -> UInt64? {
        guard fd >= 0 else { return nil }
        var buffer = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &buffer) { raw -> UInt64? in
            let count = pread(fd, raw.baseAddress, raw.count, 0)
            guard count > 0 else { return nil }
            // "size resident shared ...": the second field.
            var field = 0
            var value: UInt64 = 0
            for i in 0..<count {
                let byte = raw[i]
                if byte == UInt8(ascii: " ") {
                    if field == 1 { break }
                    field += 1
                } else if field == 1 {
                    value = value * 10 + UInt64(byte &- UInt8(ascii: "0"))
                }
            }
            return value * pageSize
        }
    }
}
