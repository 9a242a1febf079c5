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
        let host = try await global.makeHost()
        _ = host.addEventListener { event in writeAll(1, event.json.bytes + [0x0A]) }
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
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let once = Once()
            let watcher = SignalWatcher([SIGINT, SIGTERM]) { if once.claim() { continuation.resume() } }
            _ = watcher
            stopWatchers.append(watcher)
        }
        if let subscription = response.data?["subscription"] {
            _ = await host.dispatch("sync.unsubscribe", ["subscription": subscription])
        }
        await host.shutdown()
    }
}

/// Keeps signal watchers alive for the life of the process.
nonisolated(unsafe) private var stopWatchers: [SignalWatcher] = []

/// True exactly once.
final class Once: Sendable {
    private let done = Atomic<Bool>(false)
    func claim() -> Bool { !done.exchange(true, ordering: .acquiringAndReleasing) }
}
