import Glibc

/// Writes bytes to a file descriptor, retrying short writes.
/// - Returns: false when a write failed (EPIPE: the reader is gone), true when all was written.
@discardableResult
public func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }
}

/// Writes `text` and a newline to stdout (1) or another descriptor.
public func printLine(_ text: String, to fd: Int32 = 1) { writeAll(fd, Array((text + "\n").utf8)) }
