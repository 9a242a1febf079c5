import Foundation
import Glibc

/// A WebSocket client on a plain blocking socket: the handshake, masked text frames out,
/// frames in. No event loop and no task per message, so one thread can keep a server busy
/// without becoming the bottleneck itself; not a general client (no fragmentation, no
/// extensions, pings answered only by ``answerPings``).
final class RawWebSocket {
    let fd: Int32
    private var input: [UInt8] = []
    private var consumed = 0
    private var scratch: [UInt8]
    /// Pings seen since the last ``answerPings()``.
    private var pings: [[UInt8]] = []
    /// Set by ``stampArrivals()``: reads ask the kernel when their bytes arrived.
    private var stamping = false
    /// With ``stampArrivals()`` on: when the bytes of the last read arrived at this socket
    /// (CLOCK_REALTIME nanoseconds; for several packets, the last one's); 0 when that read
    /// got no stamp.
    private(set) var lastArrival: UInt64 = 0

    /// Connects to `127.0.0.1:port` and upgrades `path`.
    /// - Parameters:
    ///   - headers: extra request header lines, e.g. `Authorization: Bearer …`.
    ///   - readBuffer: bytes read at once (small for many idle connections, large for load).
    init(port: Int, path: String = "/v1/ws", headers: [String] = [], timeout: Double = 10, readBuffer: Int = 4096) throws {
        fd = try Self.connectLoopback(port: port)
        scratch = [UInt8](repeating: 0, count: readBuffer)
        setReceiveTimeout(timeout)
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        for header in headers { request += header + "\r\n" }
        request += "\r\n"
        do {
            try send(Array(request.utf8))
            let terminator: [UInt8] = [13, 10, 13, 10]
            var end: Int?
            while end == nil {
                guard try receive() else { throw BenchError(message: "the server closed the connection during the handshake") }
                end = Self.find(terminator, in: input)
            }
            let head = String(decoding: input[0..<end!], as: UTF8.self)
            guard head.hasPrefix("HTTP/1.1 101") else {
                throw BenchError(message: "the upgrade was refused: \(head.prefix(while: { $0 != "\r" }))")
            }
            consumed = end! + 4
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    /// A TCP connection to `127.0.0.1:port` with Nagle off.
    static func connectLoopback(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError(message: "socket(): \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr = in_addr(s_addr: inet_addr("127.0.0.1"))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw BenchError(message: "connect to 127.0.0.1:\(port): \(reason)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return fd
    }

    /// One `POST` with `Connection: close`: the status line and the body.
    static func post(port: Int, path: String, body: String, headers: [String] = []) throws -> (status: String, body: [UInt8]) {
        let fd = try connectLoopback(port: port)
        defer { close(fd) }
        var time = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        var request = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nContent-Type: application/json\r\n"
        request += "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n"
        for header in headers { request += header + "\r\n" }
        request += "\r\n" + body
        let bytes = Array(request.utf8)
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress!, $0.count) }) == bytes.count else {
            throw BenchError(message: "could not send the request")
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while received.count < 1 << 20 {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count <= 0 { break }
            received += chunk[0..<count]
        }
        guard let end = find([13, 10, 13, 10], in: received) else { throw BenchError(message: "no HTTP answer") }
        let status = String(decoding: received[0..<end], as: UTF8.self).prefix(while: { $0 != "\r" })
        return (String(status), Array(received[(end + 4)...]))
    }

    func setReceiveTimeout(_ seconds: Double) {
        var time = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Makes reads return at once when nothing is waiting (for use under poll).
    func setNonBlocking() {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    /// Makes every later read also learn when its bytes reached the socket (`SO_TIMESTAMPNS`:
    /// stamped by the kernel as the packet arrives, before any thread reads it), in
    /// ``lastArrival``.
    func stampArrivals() throws {
        var one: Int32 = 1
        guard setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS_OLD, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw BenchError(message: "setsockopt(SO_TIMESTAMPNS): \(String(cString: strerror(errno)))")
        }
        stamping = true
    }

    /// Now on the clock of ``lastArrival``.
    static func realtimeNow() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// One read into `scratch` (`recv` with `flags`), or with ``stamping`` a `recvmsg` that
    /// also sets ``lastArrival`` from its `SCM_TIMESTAMPNS` control message.
    private func readScratch(flags: Int32 = 0) -> Int {
        guard stamping else { return scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, flags) } }
        lastArrival = 0
        // cmsghdr (len, level, type) then an 8-aligned timespec.
        var control: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        let count = scratch.withUnsafeMutableBytes { data in
            withUnsafeMutableBytes(of: &control) { controlBytes in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    return recvmsg(fd, &message, flags)
                }
            }
        }
        // One control message at most: the stamp (len 32, SOL_SOCKET, SCM_TIMESTAMPNS = 35).
        if count > 0, control.0 >= 32, Int32(truncatingIfNeeded: control.1) == SOL_SOCKET,
            Int32(truncatingIfNeeded: control.1 >> 32) == SO_TIMESTAMPNS_OLD
        {
            lastArrival = control.2 * 1_000_000_000 + control.3
        }
        return count
    }

    /// Appends one masked text frame to `buffer` (mask key 0: the payload goes as is).
    static func appendTextFrame(_ payload: some Collection<UInt8>, to buffer: inout [UInt8]) {
        buffer.append(0x81)
        let count = payload.count
        if count < 126 {
            buffer.append(0x80 | UInt8(count))
        } else if count <= 0xFFFF {
            buffer.append(0x80 | 126)
            buffer.append(UInt8(count >> 8))
            buffer.append(UInt8(count & 0xFF))
        } else {
            buffer.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { buffer.append(UInt8((count >> shift) & 0xFF)) }
        }
        buffer.append(contentsOf: [0, 0, 0, 0])
        buffer.append(contentsOf: payload)
    }

    func sendText(_ text: String) throws {
        var frame: [UInt8] = []
        Self.appendTextFrame(Array(text.utf8), to: &frame)
        try send(frame)
    }

    /// Writes all of `bytes`.
    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                throw BenchError(message: "write: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }

    /// Reads what the socket has (blocking unless non-blocking). False at end of stream;
    /// throws on a timeout or error. A non-blocking socket with nothing to read returns true.
    @discardableResult
    func receive() throws -> Bool {
        while true {
            let count = readScratch()
            if count > 0 {
                keepScratch(count)
                return true
            }
            if count == 0 { return false }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                if fcntl(fd, F_GETFL) & O_NONBLOCK != 0 { return true }
                throw BenchError(message: "no answer within the receive timeout")
            }
            throw BenchError(message: "read: \(String(cString: strerror(errno)))")
        }
    }

    /// Like ``receive()`` on a blocking socket, but it first retries a read that finds nothing
    /// (`MSG_DONTWAIT`) for up to `spin` nanoseconds, and blocks only then. A client that does
    /// not sleep between a server's answers is not woken for each one, so the scheduler has no
    /// wake-up at which to move it onto the event loop's core: blocking at once, runs under
    /// load were bimodal (88–155k/s), spinning they held at 106–152k/s.
    func receive(spinning spin: UInt64) throws -> Bool {
        let start = DispatchTime.now().uptimeNanoseconds
        while true {
            let count = readScratch(flags: Int32(MSG_DONTWAIT))
            if count > 0 {
                keepScratch(count)
                return true
            }
            if count == 0 { return false }
            if errno == EINTR { continue }
            guard errno == EAGAIN || errno == EWOULDBLOCK else { throw BenchError(message: "recv: \(String(cString: strerror(errno)))") }
            if DispatchTime.now().uptimeNanoseconds - start >= spin { return try receive() }
        }
    }

    /// Appends the first `count` bytes of `scratch` to the unconsumed input.
    private func keepScratch(_ count: Int) {
        if consumed > 0, consumed == input.count {
            input.removeAll(keepingCapacity: true)
            consumed = 0
        } else if consumed > 1 << 16 {
            input.removeFirst(consumed)
            consumed = 0
        }
        input.append(contentsOf: scratch[0..<count])
    }

    /// Calls `body` with each complete text frame's payload received so far; remembers
    /// pings; returns false once a close frame arrived.
    @discardableResult
    func frames(_ body: (ArraySlice<UInt8>) -> Void) -> Bool {
        while let (opcode, payload) = nextFrame() {
            switch opcode {
            case 0x0, 0x1, 0x2: body(input[payload])
            case 0x8: return false
            case 0x9: pings.append(Array(input[payload]))
            default: break
            }
        }
        return true
    }

    /// The next complete frame in the buffer (consumed), or nil.
    private func nextFrame() -> (opcode: UInt8, payload: Range<Int>)? {
        let available = input.count - consumed
        guard available >= 2 else { return nil }
        let second = input[consumed + 1]
        var length = Int(second & 0x7F)
        var header = 2
        if length == 126 {
            guard available >= 4 else { return nil }
            length = Int(input[consumed + 2]) << 8 | Int(input[consumed + 3])
            header = 4
        } else if length == 127 {
            guard available >= 10 else { return nil }
            length = 0
            for i in 0..<8 { length = length << 8 | Int(input[consumed + 2 + i]) }
            header = 10
        }
        if second & 0x80 != 0 { header += 4 }  // A server should not mask; skip the key if it does.
        guard available >= header + length else { return nil }
        let opcode = input[consumed] & 0x0F
        let payload = (consumed + header)..<(consumed + header + length)
        consumed += header + length
        return (opcode, payload)
    }

    /// Answers the pings seen so far with pongs (so a server's keep-alive does not close us).
    func answerPings() {
        guard !pings.isEmpty else { return }
        var out: [UInt8] = []
        for ping in pings {
            out.append(0x8A)
            out.append(0x80 | UInt8(ping.count))
            out.append(contentsOf: [0, 0, 0, 0])
            out.append(contentsOf: ping)
        }
        pings.removeAll()
        try? send(out)
    }

    /// Sends a close frame (1000) and stops writing.
    func closeGracefully() {
        try? send([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
        shutdown(fd, Int32(SHUT_WR))
    }

    /// Reads and returns the next text frame, blocking up to the receive timeout.
    func nextText() throws -> [UInt8] {
        while true {
            while let (opcode, payload) = nextFrame() {
                switch opcode {
                case 0x0, 0x1, 0x2: return Array(input[payload])
                case 0x8: throw BenchError(message: "the server closed the WebSocket")
                case 0x9: pings.append(Array(input[payload]))
                default: break
                }
            }
            guard try receive() else { throw BenchError(message: "the server closed the WebSocket") }
        }
    }

    /// Whether `needle` occurs in `haystack` (a frame's payload, without copying it).
    static func contains(_ needle: [UInt8], in haystack: ArraySlice<UInt8>) -> Bool {
        find(needle, in: haystack) != nil
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int = 0) -> Int? {
        guard start <= haystack.count else { return nil }
        return find(needle, in: haystack[start...])
    }

    /// The index in `haystack` (a slice keeps its base's indices) where `needle` starts.
    private static func find(_ needle: [UInt8], in haystack: ArraySlice<UInt8>) -> Int? {
        guard !needle.isEmpty, haystack.count >= needle.count else { return nil }
        var i = haystack.startIndex
        while i <= haystack.endIndex - needle.count {
            if haystack[i] == needle[0] {
                var j = 1
                while j < needle.count, haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count { return i }
            }
            i += 1
        }
        return nil
    }
}
