import NIOCore
import Synchronization

/// The drains waiting to run on one event loop: a connection whose outbox has frames puts its
/// drain here, and the loop runs every waiting drain in one task. A broadcast to a thousand
/// subscribers thus wakes each loop once, instead of scheduling (and, from another thread,
/// waking the loop for) a thousand tasks.
final class LoopReadyQueue: Sendable {
    private struct Pending {
        var drains: [@Sendable () -> Void] = []
        var scheduled = false
    }

    private let loop: any EventLoop
    private let pending = Mutex(Pending())

    private init(loop: any EventLoop) {
        self.loop = loop
    }

    /// Runs `drain` on the loop soon, with the others waiting there.
    func add(_ drain: @escaping @Sendable () -> Void) {
        let schedule = pending.withLock { pending in
            pending.drains.append(drain)
            defer { pending.scheduled = true }
            return !pending.scheduled
        }
        if schedule { loop.execute { self.run() } }
    }

    private func run() {
        let drains = pending.withLock { pending in
            pending.scheduled = false
            defer { pending.drains.removeAll(keepingCapacity: true) }
            return pending.drains
        }
        for drain in drains { drain() }
    }

    private static let queues = Mutex<[ObjectIdentifier: LoopReadyQueue]>([:])

    /// The queue of `loop` (one per loop, kept for the process's life: loops are few).
    static func of(_ loop: any EventLoop) -> LoopReadyQueue {
        queues.withLock { queues in
            if let queue = queues[ObjectIdentifier(loop)] { return queue }
            let queue = LoopReadyQueue(loop: loop)
            queues[ObjectIdentifier(loop)] = queue
            return queue
        }
    }
}
