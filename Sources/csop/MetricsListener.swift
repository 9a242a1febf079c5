import CSOPCLISupport
import CSOPHost
import Dispatch
import Glibc

/// `csop run --metrics-listen ADDR`: answers `GET /metrics` with the host's metrics in
/// Prometheus's text format, for pipe users who have no gateway.
///
/// Hand-written on plain sockets because `csop` links no HTTP stack (the gateway's is in
/// `csop-serve`), and this serves one fixed read-only page: one connection at a time, the
/// request head read within 5 s and at most 8 KiB, anything but `GET /metrics` (or `/`)
/// answered 404 or 405, every answer `Connection: close`. It has no auth: bind it to loopback
/// (the default host) unless the network is trusted.
final class MetricsListener: Sendable {
    private let socket: Int32
    private let stopPipe: (read: Int32, write: Int32)
    private let host: CSOPHost
    /// The bound port (useful with port 0).
    let port: Int

    static let maxHeadBytes = 8192
    static let headTimeoutMilliseconds: Int32 = 5000

    /// Binds `address` (`PORT`, `HOST:PORT`, `[IPV6]:PORT`; the host defaults to 127.0.0.1).
    /// - Throws: a message saying what is wrong with the address or why it cannot be bound.
    init(address: String, host: CSOPHost) throws(MetricsListenerError) {
        let (name, service) = try Self.split(address)
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(name, service, &hints, &found) == 0, let info = found else {
            throw MetricsListenerError("--metrics-listen \(address): \(name) is not a numeric IPv4 or IPv6 address, or \(service) is not a port")
        }
        defer { freeaddrinfo(found) }
        let fd = Glibc.socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw MetricsListenerError("--metrics-listen \(address): socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw MetricsListenerError("--metrics-listen \(address): cannot listen there: \(reason)")
        }
        var bound = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        port = Int(
            bound.ss_family == sa_family_t(AF_INET6)
                ? withUnsafePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
                : withUnsafePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } })
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        for end in fds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        socket = fd
        stopPipe = (fds[0], fds[1])
        self.host = host
    }

    /// `HOST:PORT` → (host, port); `PORT` alone is on 127.0.0.1.
    static func split(_ address: String) throws(MetricsListenerError) -> (String, String) {
        if address.hasPrefix("["), let close = address.firstIndex(of: "]") {
            let rest = address[address.index(after: close)...]
            guard rest.hasPrefix(":") else { throw MetricsListenerError("--metrics-listen \(address): expected [IPV6]:PORT") }
            return (String(address[address.index(after: address.startIndex)..<close]), String(rest.dropFirst()))
        }
        guard let colon = address.lastIndex(of: ":") else { return ("127.0.0.1", address) }
        let name = address[..<colon]
        return (name.isEmpty ? "127.0.0.1" : String(name), String(address[address.index(after: colon)...]))
    }

    /// Serves on a thread of its own until ``stop()``.
    func start() { startThread { self.serve() } }

    /// Stops serving and closes the socket.
    func stop() {
        var byte: UInt8 = 1
        _ = write(stopPipe.write, &byte, 1)
    }

    private func serve() {
        defer {
            close(socket)
            close(stopPipe.read)
            close(stopPipe.write)
        }
        while true {
            var fds = [pollfd(fd: socket, events: Int16(POLLIN), revents: 0), pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 2, -1) >= 0 || errno == EINTR else { return }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            let client = accept(socket, nil, nil)
            guard client >= 0 else { continue }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            answer(client)
            close(client)
        }
    }

    /// Reads one request head and answers it.
    private func answer(_ client: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard let head = readHead(client) else {
            return respond(client, status: "400 Bad Request", body: "the request head did not end within 8 KiB and 5 s\n")
        }
        let line = head.split(separator: UInt8(ascii: "\r"), maxSplits: 1).first ?? []
        let parts = line.split(separator: UInt8(ascii: " "))
        guard parts.count == 3, parts[2].starts(with: Array("HTTP/1.".utf8)) else {
            return respond(client, status: "400 Bad Request", body: "expected GET /metrics HTTP/1.1\n")
        }
        let path = String(decoding: parts[1].prefix { $0 != UInt8(ascii: "?") }, as: UTF8.self)
        guard path == "/metrics" || path == "/" else { return respond(client, status: "404 Not Found", body: "only /metrics is served here\n") }
        let method = String(decoding: parts[0], as: UTF8.self)
        guard method == "GET" || method == "HEAD" else {
            return respond(client, status: "405 Method Not Allowed", body: "only GET /metrics is served here\n", extra: "Allow: GET, HEAD\r\n")
        }
        let done = DispatchSemaphore(value: 0)
        let text = TextBox()
        Task { [host] in
            text.bytes = await host.metricsText() ?? []
            done.signal()
        }
        done.wait()
        respond(
            client, status: "200 OK", body: text.bytes, contentType: "text/plain; version=0.0.4; charset=utf-8", headOnly: method == "HEAD")
    }

    /// The head up to its blank line, or nil past ``maxHeadBytes`` or the deadline.
    private func readHead(_ client: Int32) -> [UInt8]? {
        var head: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(Self.headTimeoutMilliseconds) * 1_000_000
        while head.count <= Self.maxHeadBytes {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else { return nil }
            var fd = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            guard poll(&fd, 1, Int32((deadline - now) / 1_000_000) + 1) > 0 else { return nil }
            let count = read(client, &buffer, buffer.count)
            guard count > 0 else { return nil }
            head += buffer[..<count]
            if head.count >= 4, let end = Self.headEnd(head) { return Array(head[..<end]) }
        }
        return nil
    }

    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        let marker: [UInt8] = [13, 10, 13, 10]
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i..<(i + 4)].elementsEqual(marker) { return i }
        return nil
    }

    private func respond(
        _ client: Int32, status: String, body: String, extra: String = ""
    ) {
        respond(client, status: status, body: Array(body.utf8), contentType: "text/plain; charset=utf-8", extra: extra)
    }

    private func respond(
        _ client: Int32, status: String, body: [UInt8], contentType: String, extra: String = "", headOnly: Bool = false
    ) {
        let head =
            "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\nCache-Control: no-store\r\nConnection: close\r\n\(extra)\r\n"
        _ = writeAll(client, Array(head.utf8) + (headOnly ? [] : body))
    }

    /// The answer handed from the task back to the listener's thread (the semaphore orders it).
    private final class TextBox: @unchecked Sendable {  // Written by the task before it signals; read after the wait.
        var bytes: [UInt8] = []
    }
}

/// Why `--metrics-listen` cannot be used.
struct MetricsListenerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
