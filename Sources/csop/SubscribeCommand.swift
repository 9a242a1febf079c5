import ArgumentParser
import CSOPCore
import CSOPHost

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
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}
