import CSOPCLISupport
import ArgumentParser
import CSOPCore
import CSOPHost
import Glibc
import Synchronization

struct SubscribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscribe",
        abstract: "Subscribe to a sync channel and print its events as JSON lines until interrupted.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The channel name.")
    var channel: String

    @Option(help: "Only these event names (comma-separated).")
    var events: String?

    func run() async throws {
        let host = try await global.makeHost(serving: true)
        let stop = StopSignal()
        _ = host.addEventListener { event in
            // A closed stdout (the reader went away) ends the subscription.
            if !writeAll(1, event.json.bytes + [0x0A]) { stop.fire(outputClosed: true) }
        }
        var payload: JSONObject = ["channel": .string(channel)]
        if let events {
            payload["events"] = .array(events.split(separator: ",").map { .string(String($0)) })
        }
        let response = await host.dispatch("sync.subscribe", .object(payload))
        guard response.isOK else {
            writeAll(2, response.serialized() + [0x0A])
            await host.shutdown()
            throw ExitCode(1)
        }
        writeAll(2, response.serialized() + [0x0A])
        let watcher = SignalWatcher(SignalWatcher.stopSignals) { stop.fire(outputClosed: false) }
        defer { watcher.cancel() }
        let outputClosed = await stop.wait()
        if let subscription = response.data?["subscription"] {
            _ = await host.dispatch("sync.unsubscribe", ["subscription": subscription])
        }
        await host.shutdown()
        if outputClosed {
            printLine("csop subscribe: stdout was closed; unsubscribed", to: 2)
            throw ExitCode(1)
        }
    }
}

/// Ends `csop subscribe` once: a stop signal, or stdout closing.
final class StopSignal: Sendable {
    private struct State {
        var fired: Bool?
        var waiter: UnsafeContinuation<Bool, Never>?
    }
    private let state = Mutex(State())

    /// Ends the wait (the first call wins); `outputClosed` is what ``wait()`` returns.
    func fire(outputClosed: Bool) {
        let waiter = state.withLock { state -> UnsafeContinuation<Bool, Never>? in
            guard state.fired == nil else { return nil }
            state.fired = outputClosed
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: outputClosed)
    }

    /// Waits for ``fire(outputClosed:)``. - Returns: whether stdout closed.
    func wait() async -> Bool {
        await withUnsafeContinuation { continuation in
            let fired = state.withLock { state -> Bool? in
                if state.fired == nil { state.waiter = continuation }
                return state.fired
            }
            if let fired { continuation.resume(returning: fired) }
        }
    }
}
