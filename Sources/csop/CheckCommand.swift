import ArgumentParser
import CSOPCLISupport
import CSOPHost

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate plugins.d without creating any plugin or touching any database (exit 1 on any problem).",
        discussion: """
            Checks each entry's syntax, that its library is found, its permissions, the registration symbol, \
            the ABI version and descriptor, and its [config] where the plugin can check it.
            """)

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print the results as JSON.")
    var json = false

    func run() throws {
        let configuration = global.makeConfiguration()
        let results = PluginCheck.run(configuration)
        var problems = 0
        var rows: [JSONValue] = []
        for result in results {
            switch result.status {
            case .ok(let plugin):
                rows.append(["file": .string(result.file), "status": "ok", "name": .string(plugin.name), "version": .string(plugin.version), "library": .string(plugin.library)])
                if !json { printLine("ok        \(result.file): \(plugin.name) \(plugin.version) from \(plugin.library)") }
            case .disabled:
                rows.append(["file": .string(result.file), "status": "disabled"])
                if !json { printLine("disabled  \(result.file)") }
            case .failed(let failure):
                problems += 1
                rows.append(["file": .string(result.file), "status": "failed", "kind": .string(failure.kind.rawValue), "message": .string(failure.message)])
                if !json { printLine("FAILED    \(result.file): \(failure.kind.rawValue): \(failure.message)") }
            }
        }
        if json {
            writeAll(1, JSONValue.object(["directory": .string(configuration.pluginsDirectory), "entries": .array(rows)]).serialized() + [0x0A])
        } else if results.isEmpty {
            printLine("no *.conf entries in \(configuration.pluginsDirectory)")
        }
        if problems > 0 { throw ExitCode(1) }
    }
}
