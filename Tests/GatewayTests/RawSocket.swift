import CSOPTestSupport
import Foundation

/// A plain TCP connection to a loopback port, for what an HTTP client library would not do:
/// reading a stream as it comes (SSE), sending a header slowly (slow loris), sending
/// WebSocket frames a library would not (fragments, bad UTF-8).
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
        send(bytes: Array(text.utf8))
    }

    func send(bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Sends a WebSocket handshake for `path` with `headers` (lines ending in CRLF).
    func sendHandshake(path: String = "/v1/ws", headers: String = "") {
        send(
            "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\(headers)\r\n")
    }

    /// One client frame (masked, as a client must): `opcode` 0 continuation, 1 text, 2 binary,
    /// 8 close, 9 ping; payloads under 126 bytes.
    static func frame(_ opcode: UInt8, fin: Bool = true, _ payload: [UInt8]) -> [UInt8] {
        precondition(payload.count < 126)
        let mask: [UInt8] = [0x11, 0x22, 0x33, 0x44]
        return [(fin ? 0x80 : 0) | opcode, 0x80 | UInt8(payload.count)] + mask
            + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }

    /// Sends a header line every 100 ms (a slow loris) until the server closes the connection,
    /// for at most 8 s. - Returns: whether it closed.
    func dribbleUntilClosed() async throws -> Bool {
        for _ in 0..<80 {
            send("X-Drip: 1\r\n")
            if try await read(until: nil, timeout: 0.1).closed { return true }
        }
        return false
    }

    /// How long a test waits for what must come. Generous because it costs nothing when the
    /// server answers: all tests run at once on 2 cores, and a test that computes for seconds
    /// holds one of the two threads the server's request tasks run on (with 5 s, CI once saw
    /// three answers that take a Hummingbird task missing while the whole suite ran).
    static let patience: Double = 60

    /// Reads until `marker` appears, the peer closes, or `timeout` seconds pass.
    /// - Returns: what was read (as text and as bytes), and whether the peer closed.
    func read(until marker: String?, timeout: Double = RawSocket.patience) async throws -> (text: String, closed: Bool, bytes: [UInt8]) {
        let fd = self.fd
        return try await OwnThread.run {
            var received: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            let wanted = marker.map { Array($0.utf8) }
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 50) > 0 else { continue }
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n <= 0 { return (String(decoding: received, as: UTF8.self), true, received) }
                let before = received.count
                received += buffer[0..<n]
                // Look only where the new bytes could complete the marker.
                if let wanted, received.count >= wanted.count {
                    let from = max(0, before - wanted.count + 1)
                    if (from...(received.count - wanted.count)).contains(where: { received[$0..<($0 + wanted.count)].elementsEqual(wanted) }) {
                        break
                    }
                }
            }
            return (String(decoding: received, as: UTF8.self), false, received)
        }
    }
}
