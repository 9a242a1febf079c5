import Foundation
import Glibc

/// The WebSocket load the gateway rows put on a server, from ``RawWebSocket``s on the calling
/// thread (run it with ``onThread(_:)``). Every loop is bounded in count and in time.
enum WebSocketLoad {
    struct InFlightResult: Sendable {
        var latency: LatencyStats
        var throughput: Double
        var completed: Int
        var errors: Int
    }

    /// Sends `{"id":"q<n>","action":"diag.noop"}` on one connection keeping `window` requests
    /// outstanding, until `count` are answered or `seconds` pass (then only the outstanding
    /// ones are awaited). Answers are matched by id; latency is from the write that carried a
    /// request to the read that carried its answer. Waiting for answers, it spins for up to
    /// 200 µs before it blocks (see ``RawWebSocket/receive(spinning:)``).
    static func inFlight(port: Int, count: Int, window: Int, seconds: Double) throws -> InFlightResult {
        let socket = try RawWebSocket(port: port, readBuffer: 1 << 16)
        defer { socket.closeGracefully() }
        var sentAt = [UInt64](repeating: 0, count: count)
        var samples: [UInt64] = []
        samples.reserveCapacity(count)
        var out: [UInt8] = []
        out.reserveCapacity(window * 48)
        var sent = 0
        var completed = 0
        var errors = 0
        let start = DispatchTime.now().uptimeNanoseconds
        let deadline = start + UInt64(seconds * 1e9)
        func queue() {
            RawWebSocket.appendTextFrame(Array("{\"id\":\"q\(sent)\",\"action\":\"diag.noop\"}".utf8), to: &out)
            sent += 1
        }
        func flush(from first: Int) throws {
            guard !out.isEmpty else { return }
            let stamp = DispatchTime.now().uptimeNanoseconds
            for index in first..<sent { sentAt[index] = stamp }
            try socket.send(out)
            out.removeAll(keepingCapacity: true)
        }
        while sent < min(window, count) { queue() }
        try flush(from: 0)
        var last = start
        while completed < sent {
            guard try socket.receive(spinning: 200_000) else { throw BenchError(message: "the server closed the WebSocket after \(completed) answers") }
            let arrived = DispatchTime.now().uptimeNanoseconds
            last = arrived
            let first = sent
            socket.frames { payload in
                guard let id = requestNumber(payload), id < sent else {
                    errors += 1
                    return
                }
                samples.append(arrived - sentAt[id])
                completed += 1
                if isError(payload) { errors += 1 }
                if sent < count, arrived < deadline { queue() }
            }
            try flush(from: first)
        }
        return InFlightResult(
            latency: BenchContext.stats(nanoseconds: samples), throughput: Double(completed) / (Double(last - start) / 1e9),
            completed: completed, errors: errors)
    }

    /// n of a frame that starts `{"id":"q<n>"`.
    private static func requestNumber(_ payload: ArraySlice<UInt8>) -> Int? {
        let prefix: [UInt8] = Array(#"{"id":"q"#.utf8)
        guard payload.count > prefix.count, payload.starts(with: prefix) else { return nil }
        var number = 0
        var index = payload.startIndex + prefix.count
        while index < payload.endIndex, payload[index] >= 0x30, payload[index] <= 0x39 {
            number = number * 10 + Int(payload[index] - 0x30)
            index += 1
        }
        return index < payload.endIndex && payload[index] == 0x22 ? number : nil
    }

    private static func isError(_ payload: ArraySlice<UInt8>) -> Bool {
        RawWebSocket.contains(Array(#""status":"error""#.utf8), in: payload.prefix(64))
    }

    struct FanOutResult: Sendable {
        /// Broadcast written → the last subscriber's event arrived at its socket (the kernel's
        /// receive stamp), per set of rounds.
        var sets: [LatencyStats]
        /// Broadcast written → the client's read of the last subscriber's event (one thread
        /// reads the sockets in turn), per set.
        var readSets: [LatencyStats]
        /// Rounds in which some subscriber got nothing within the round's time.
        var incomplete: Int
        /// Events whose read had no kernel stamp (counted at the read's time instead).
        var unstamped: Int
    }

    /// `subscribers` connections each subscribed to channel `fan`; one more connection
    /// broadcasts `{"n": round}` `warmup + sets × rounds` times (within `seconds`), each after
    /// the previous round reached every subscriber (or 5 s passed); the first `warmup` are not
    /// kept, the others are measured in `sets` consecutive sets.
    static func fanOut(port: Int, subscribers: Int, rounds: Int, sets: Int, warmup: Int, seconds: Double) throws -> FanOutResult {
        var sockets: [RawWebSocket] = []
        sockets.reserveCapacity(subscribers)
        defer { for socket in sockets { socket.closeGracefully() } }
        let subscribe = #"{"id":"s","action":"sync.subscribe","payload":{"channel":"fan"}}"#
        for _ in 0..<subscribers {
            let socket = try RawWebSocket(port: port)
            try socket.sendText(subscribe)
            sockets.append(socket)
        }
        for socket in sockets {
            let answer = try socket.nextText()
            guard RawWebSocket.find(Array(#""status":"ok""#.utf8), in: answer) != nil else {
                throw BenchError(message: "sync.subscribe was refused: \(String(decoding: answer.prefix(300), as: UTF8.self))")
            }
        }
        let publisher = try RawWebSocket(port: port)
        defer { publisher.closeGracefully() }

        for socket in sockets {
            socket.setNonBlocking()
            try socket.stampArrivals()
        }
        var samples = [[UInt64]](repeating: [], count: sets)
        var readSamples = [[UInt64]](repeating: [], count: sets)
        var incomplete = 0
        var unstamped = 0
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        for round in 0..<(warmup + sets * rounds) {
            guard DispatchTime.now().uptimeNanoseconds < end else { break }
            let marker = Array("\"data\":{\"n\":\(round)}".utf8)
            var got = 0
            let broadcast = "{\"id\":\"b\(round)\",\"action\":\"sync.broadcast\",\"payload\":{\"channel\":\"fan\",\"event\":\"tick\",\"data\":{\"n\":\(round)}}}"
            let realStart = RawWebSocket.realtimeNow()
            let start = DispatchTime.now().uptimeNanoseconds
            try publisher.sendText(broadcast)
            let roundEnd = start + 5_000_000_000
            var lastRead = start
            var lastArrival = realStart
            // The subscribers are read in turn, each waited for alone; an event's time is when
            // the kernel put it in its socket, so the order and pace of the reads do not count
            // (only that the client thread shares the server's cores). Polling all 1,000 at
            // once cost the client more: poll's cost is per descriptor, on every wake-up.
            reading: for socket in sockets {
                var reached = false
                var triedRead = false
                while !reached {
                    socket.frames { payload in
                        if RawWebSocket.contains(marker, in: payload) { reached = true }
                    }
                    socket.answerPings()
                    if reached { break }
                    // Read first (by then the event has usually arrived: one call, not two);
                    // wait in poll only when the read found nothing.
                    if triedRead {
                        let now = DispatchTime.now().uptimeNanoseconds
                        guard now < roundEnd else { break reading }
                        var one = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
                        let count = poll(&one, 1, Int32((roundEnd - now) / 1_000_000) + 1)
                        if count < 0, errno != EINTR { throw BenchError(message: "poll: \(String(cString: strerror(errno)))") }
                        guard count > 0 else { continue }
                    }
                    triedRead = true
                    guard try socket.receive() else { throw BenchError(message: "the server closed a subscriber's WebSocket") }
                }
                got += 1
                lastRead = DispatchTime.now().uptimeNanoseconds
                // The read that completed the event carried it (it was sent after the
                // broadcast); a read without a stamp counts at its own time, never earlier.
                if socket.lastArrival >= realStart {
                    lastArrival = max(lastArrival, socket.lastArrival)
                } else {
                    unstamped += 1
                    lastArrival = max(lastArrival, realStart + (lastRead - start))
                }
            }
            let answer = try publisher.nextText()
            guard RawWebSocket.find(Array(#""status":"ok""#.utf8), in: answer) != nil else {
                throw BenchError(message: "sync.broadcast failed: \(String(decoding: answer.prefix(300), as: UTF8.self))")
            }
            if got < subscribers {
                incomplete += 1
            } else if round >= warmup {
                samples[(round - warmup) / rounds].append(lastArrival - realStart)
                readSamples[(round - warmup) / rounds].append(lastRead - start)
            }
        }
        return FanOutResult(
            sets: samples.filter { !$0.isEmpty }.map(BenchContext.stats(nanoseconds:)),
            readSets: readSamples.filter { !$0.isEmpty }.map(BenchContext.stats(nanoseconds:)),
            incomplete: incomplete, unstamped: unstamped)
    }

    struct IdleResult: Sendable {
        var bytesPerConnection: Double
        var opened: Int
        var before: Double
        var after: Double
    }

    /// Opens `count` idle WebSockets to `child` (after 200 untimed ones, so one-time costs
    /// are left out) and returns the growth of the child's resident memory per connection.
    static func idle(_ child: ServerChild, count: Int, seconds: Double) throws -> IdleResult {
        var sockets: [RawWebSocket] = []
        sockets.reserveCapacity(count + 200)
        defer { for socket in sockets { socket.closeGracefully() } }
        for _ in 0..<200 { sockets.append(try RawWebSocket(port: child.port)) }
        usleep(500_000)
        guard let before = child.residentBytes() else { throw BenchError(message: "cannot read the server's /proc status") }
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        var opened = 0
        while opened < count, DispatchTime.now().uptimeNanoseconds < end {
            sockets.append(try RawWebSocket(port: child.port))
            opened += 1
        }
        usleep(1_000_000)
        guard child.isRunning, let after = child.residentBytes() else { throw BenchError(message: "the server ended while connections opened") }
        return IdleResult(bytesPerConnection: (after - before) / Double(max(1, opened)), opened: opened, before: before, after: after)
    }
}
