import CSOPCore
import Synchronization

/// Local mode's history: per channel, the last messages in memory, numbered from 1 in one
/// epoch for the life of the process (a restart starts a new epoch: the history is gone).
///
/// ``record(_:)`` runs inside the registry's delivery, one message at a time, so offsets
/// follow delivery order.
final class LocalHistory: Sendable {
    private struct Stream {
        var top: Int64 = 0
        /// Kept messages from `head` on, oldest first, with when each expires.
        var kept: [(message: SyncMessage, expires: Double)] = []
        var head = 0

        mutating func trim(size: Int64, now: Double) {
            while head < kept.count, Int64(kept.count - head) > size || kept[head].expires <= now { head += 1 }
            if head > 64, head * 2 > kept.count {
                kept.removeFirst(head)
                head = 0
            }
        }
    }

    let epoch = SyncClock.randomHex()
    let policy: HistoryPolicy
    private let streams = Mutex<[String: Stream]>([:])

    init(policy: HistoryPolicy) {
        self.policy = policy
    }

    /// Numbers `message` and keeps it, when its channel keeps history.
    func record(_ message: inout SyncMessage) {
        guard let limits = policy.limits(forKept: message.channel) else { return }
        let now = monotonicMilliseconds()
        message.epoch = epoch
        streams.withLock { streams in
            var stream = streams[message.channel, default: Stream()]
            stream.top += 1
            message.offset = stream.top
            stream.kept.append((message, now + Double(limits.age)))
            stream.trim(size: limits.size, now: now)
            streams[message.channel] = stream
        }
    }

    /// Retained messages of a kept channel after `after` (oldest first), or the newest
    /// `limit` when `after` is nil.
    func read(channel: String, after: Int64?, limit: Int) -> HistoryPage {
        let limits = policy.limits(forKept: channel)
        let now = monotonicMilliseconds()
        return streams.withLock { streams in
            guard var stream = streams[channel] else { return HistoryPage(epoch: epoch, top: 0, messages: []) }
            if let limits { stream.trim(size: limits.size, now: now) }
            streams[channel] = stream
            let live = stream.kept[stream.head...].lazy.map(\.message)
            let messages: [SyncMessage]
            if let after {
                messages = Array(live.filter { ($0.offset ?? 0) > after }.prefix(limit))
            } else {
                messages = Array(live.suffix(limit))
            }
            return HistoryPage(epoch: epoch, top: stream.top, messages: messages)
        }
    }
}
