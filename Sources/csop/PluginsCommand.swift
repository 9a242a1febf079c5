import CSOPCLISupport
import ArgumentParser
import CSOPCore
import CSOPHost

struct PluginsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugins",
        abstract: "List loaded plugins with their operations, and entries that failed with the reason.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print host.info as JSON.")
    var json = false

    func run() async throws {
        let host = try await global.makeHost()
        defer { Task { await host.shutdown() } }
        if json {
            writeAll(1, (await host.info()).serialized() + [0x0A])
        } else {
            for plugin in host.plugins {
                printLine("\(plugin.name) \(plugin.version)  \(plugin.library)  (generation \(plugin.generation), loaded \(plugin.loadedAt))")
                printLine("  operations: \(plugin.operations.map { "\(plugin.name).\($0)" }.joined(separator: ", "))")
            }
            if host.plugins.isEmpty { printLine("no plugins loaded from \(host.pluginsDirectory)") }
            for failure in host.failures {
                printLine("FAILED \(failure.file): \(failure.kind.rawValue): \(failure.message)")
            }
        }
        await host.shutdown()
        if !host.failures.isEmpty { throw ExitCode(2) }
    }
}
