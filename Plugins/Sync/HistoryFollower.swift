import CSOPCore
import CSOPPluginKit
import Synchronization

/// Cluster mode's delivery of channels that keep history: every message reaches this
/// instance's subscriptions exactly once and in offset order, however it arrives — as this
/// instance's own publish, as another instance's history frame, or read back from the table
/// after a gap (a lost NOTIFY, a reconnect).
///
/// One task does all of it, one piece of work at a time, so deliveries of these channels
/// never interleave. Per followed channel (one with a subscription here) it keeps the epoch
/// and the last offset delivered; anything past that is read from PostgreSQL.
final class HistoryFollower: Sendable {
    /// Reads a kept channel's retained messages after an offset (oldest first, at most
    /// `limit`), or the newest `limit` when the offset is nil; makes the stream if needed.
    typealias Reader = @Sendable (_ channel: String, _ after: Int64?, _ limit: Int) async throws(CSOPError) -> HistoryPage

    typealias Completion = @Sendable (Result<JSONValue, CSOPError>) -> Void

    private enum Work: Sendable {
        /// This instance's messages, committed with their offsets.
        case own([SyncMessage], done: @Sendable () -> Void)
        /// Another instance's history frame (with its message, when it fit in the NOTIFY).
        case advanced(ClusterReceiver.Advance)
        /// After a reconnect: read whatever each followed channel missed.
        case catchUp
        case subscribe(Subscribe)
    }

    struct Subscribe: Sendable {
        var channel: String
        var events: Set<String>?
        var since: HistoryPosition?
        /// What the answer says besides the subscription's own fields.
        var answer: JSONObject
        /// Asked right before the subscription is made: no (the call was answered `TIMEOUT`
        /// meanwhile) makes none.
        var commit: @Sendable () -> Bool
        var complete: Completion
    }

    private struct Position {
        var epoch: String
        var last: Int64
    }

    /// Messages read per query.
    static let pageSize = 1000
    /// The most a `since` replays (the data of its messages); more answers `recovered: false`.
    static let maxBacklogBytes = 64 * 1024 * 1024

    private let registry: SubscriptionRegistry
    private let log: @Sendable (PluginHost.LogLevel, String) -> Void
    private let work: AsyncStream<Work>.Continuation
    private let stream: AsyncStream<Work>
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)
    /// Messages read back from the table to fill a gap, for the metrics.
    let recovered = Atomic<Int>(0)

    init(registry: SubscriptionRegistry, log: @escaping @Sendable (PluginHost.LogLevel, String) -> Void) {
        self.registry = registry
        self.log = log
        (stream, work) = AsyncStream.makeStream(of: Work.self)
    }

    /// Starts the worker; work handed over before waits for it.
    func start(read: @escaping Reader) {
        let stream = self.stream
        task.withLock {
            $0 = Task { [self] in
                var followed: [String: Position] = [:]
                for await item in stream { await handle(item, &followed, read) }
            }
        }
    }

    /// Hands over this instance's committed messages; `done` runs once they are delivered.
    func own(_ messages: [SyncMessage], done: @escaping @Sendable () -> Void) {
        if case .terminated = work.yield(.own(messages, done: done)) { done() }
    }

    func advanced(_ advance: ClusterReceiver.Advance) { work.yield(.advanced(advance)) }

    func catchUp() { work.yield(.catchUp) }

    /// Subscribes to a channel that keeps history: answers with the subscription, the
    /// stream's epoch and offset (events after it follow), and with `since`, whether what
    /// came after it could be recovered (it is delivered first, before any live message).
    func subscribe(_ request: Subscribe) {
        if case .terminated = work.yield(.subscribe(request)) {
            request.complete(.failure(CSOPError(.notInitialized, "the sync plugin is shutting down")))
        }
    }

    func stop() {
        work.finish()
        task.withLock { $0?.cancel() }
    }

    // MARK: The worker

    private func handle(_ item: Work, _ followed: inout [String: Position], _ read: Reader) async {
        switch item {
        case .own(let messages, let done):
            var index = 0
            while index < messages.count {
                // One batch's messages of a channel are contiguous offsets, in order.
                let channel = messages[index].channel
                var end = index + 1
                while end < messages.count, messages[end].channel == channel { end += 1 }
                await take(messages[index..<end], channel: channel, &followed, read)
                index = end
            }
            done()
        case .advanced(let advance):
            if let message = advance.message {
                await take([message][...], channel: advance.channel, &followed, read)
                return
            }
            guard var position = current(advance.channel, &followed) else { return }
            if position.epoch == advance.epoch && advance.top <= position.last { return }
            await fill(advance.channel, &position, read)
            followed[advance.channel] = position
        case .catchUp:
            for channel in Array(followed.keys) {
                guard var position = current(channel, &followed) else { continue }
                await fill(channel, &position, read)
                followed[channel] = position
            }
        case .subscribe(let request):
            await subscribe(request, &followed, read)
        }
    }

    /// The position of a channel that still has a subscription here; forgets the others.
    private func current(_ channel: String, _ followed: inout [String: Position]) -> Position? {
        guard let position = followed[channel] else { return nil }
        guard registry.hasSubscriptions(channel) else {
            followed[channel] = nil
            return nil
        }
        return position
    }

    private func take(_ messages: ArraySlice<SyncMessage>, channel: String, _ followed: inout [String: Position], _ read: Reader) async {
        guard var position = current(channel, &followed), let first = messages.first?.offset,
            let last = messages.last?.offset, let epoch = messages.first?.epoch
        else { return }
        if epoch == position.epoch {
            if last <= position.last { return }
            if first == position.last + 1 {
                for message in messages { registry.deliver(message) }
                position.last = last
                followed[channel] = position
                return
            }
        }
        await fill(channel, &position, read)
        followed[channel] = position
    }

    /// Delivers everything after `position` the table holds, and moves it on. A gap the table
    /// cannot fill (trimmed, expired, or a new epoch) is announced to the channel's
    /// subscriptions with a `sync.recovery` event saying `recovered: false`.
    private func fill(_ channel: String, _ position: inout Position, _ read: Reader) async {
        do throws(CSOPError) {
            while true {
                var page = try await read(channel, position.last, Self.pageSize)
                if page.epoch != position.epoch {
                    announceGap(channel, from: position, to: Position(epoch: page.epoch, last: 0))
                    position = Position(epoch: page.epoch, last: 0)
                    page = try await read(channel, 0, Self.pageSize)
                }
                if let first = page.messages.first?.offset, first > position.last + 1 {
                    announceGap(channel, from: position, to: Position(epoch: page.epoch, last: first - 1))
                }
                for message in page.messages {
                    registry.deliver(message)
                    position.last = message.offset ?? position.last
                }
                recovered.add(page.messages.count, ordering: .relaxed)
                if page.messages.count < Self.pageSize {
                    if page.top > position.last {
                        // Expired before it could be read.
                        announceGap(channel, from: position, to: Position(epoch: page.epoch, last: page.top))
                        position.last = page.top
                    }
                    return
                }
            }
        } catch {
            // Disconnected: the reconnect's catch-up reads it.
            log(.warning, "sync could not read the history of a channel (\(error.message)); it is read again after the reconnect")
        }
    }

    private func announceGap(_ channel: String, from: Position, to: Position) {
        let data: JSONValue = [
            "recovered": false, "epoch": .string(to.epoch), "offset": .int(to.last),
            "reason": .string(
                from.epoch == to.epoch
                    ? "messages after the last one delivered are no longer kept" : "the channel's history was reset (a new epoch)"),
        ]
        registry.deliver(
            SyncMessage(
                channel: channel, event: SyncNames.recoveryEvent, data: data.serialized(), timestamp: WallClock.milliseconds(),
                origin: "", offset: nil, epoch: nil))
        log(.warning, "sync: a channel's subscribers missed messages the history no longer holds; they get \(SyncNames.recoveryEvent)")
    }

    private func subscribe(_ request: Subscribe, _ followed: inout [String: Position], _ read: Reader) async {
        do throws(CSOPError) {
            // A channel followed already is caught up first, so the backlog below ends where
            // live delivery goes on; a new one starts at the stream's top.
            var position: Position
            if var known = current(request.channel, &followed) {
                await fill(request.channel, &known, read)
                position = known
            } else {
                let page = try await read(request.channel, nil, 0)
                position = Position(epoch: page.epoch, last: page.top)
            }
            var backlog: [SyncMessage] = []
            var recovered: Bool?
            if let since = request.since {
                recovered = false
                if since.isIn(position.epoch), since.offset <= position.last {
                    var after = since.offset
                    var complete = true
                    var backlogBytes = 0
                    while after < position.last {
                        let page = try await read(request.channel, after, Self.pageSize)
                        let upTo = min(position.last, after + Int64(Self.pageSize))
                        let part = page.messages.filter { ($0.offset ?? 0) <= upTo }
                        let piece = HistoryPage(epoch: page.epoch, top: upTo, messages: part)
                        guard page.epoch == position.epoch, piece.follows(after, upTo: upTo) else {
                            complete = false
                            break
                        }
                        backlog += part
                        backlogBytes += part.reduce(0) { $0 + $1.data.count }
                        // Past this, a re-subscription would hold too much at once: reload instead.
                        if backlogBytes > Self.maxBacklogBytes {
                            complete = false
                            break
                        }
                        after = upTo
                    }
                    recovered = complete
                    if !complete { backlog = [] }
                }
            }
            followed[request.channel] = position
            var answer = request.answer
            answer["epoch"] = .string(position.epoch)
            answer["offset"] = .int(position.last)
            if let recovered { answer["recovered"] = .bool(recovered) }
            let registry = self.registry
            guard request.commit() else { return request.complete(.failure(ClusterTransport.droppedUnsent)) }
            registry.exclusively {
                do throws(CSOPError) {
                    let id = try registry.subscribe(channel: request.channel, events: request.events)
                    answer["subscription"] = .string(id)
                    request.complete(.success(.object(answer)))
                    for message in backlog { registry.deliver(message, only: id) }
                } catch {
                    request.complete(.failure(error))
                }
            }
        } catch {
            request.complete(.failure(error))
        }
    }
}
