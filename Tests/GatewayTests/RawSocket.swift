import CSOPTestSupport
import Foundation

/// A plain TCP connection to a loopback port, for what an HTTP client library would not do:
/// reading a stream as it comes (SSE), sending a header slowly (slow loris).
final class RawSocket: @unchecked Sendable {
    // @unchecked: the descriptor is only used by one test task at a time.
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw ServeProcessError(message: "cannot connect to port \(port): errno \(errno)") }
    }

    deinit { close(fd) }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until `marker` appears, the peer closes, or `timeout` seconds pass.
    /// - Returns: what was read, and whether the peer closed.
    func read(until marker: String?, timeout: Double) async throws -> (text: String, closed: Bool) {
        let fd = self.fd
        return try await OwnThread.run {
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 50) > 0 else { continue }
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return (String(decoding: received, as: UTF8.self), true) }
                received += buffer[0..<n]
                if let marker, String(decoding: received, as: UTF8.self).contains(marker) { break }
            }
            return (String(decoding: received, as: UTF8.self), false)
        }
    }
}
