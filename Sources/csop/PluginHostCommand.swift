import ArgumentParser
import CSOPHost
import Glibc

/// `csop plugin-host --fd N`: the child process of an isolated plugin (`isolation = "process"`
/// in its plugins.d entry). Started by a host, never by hand; hidden from help.
struct PluginHostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin-host", abstract: "Run one isolated plugin for the host that started this process.", shouldDisplay: false)

    @Option(help: "The socket descriptor the host passed.")
    var fd: Int32

    func run() throws {
        let status = IsolatedPluginHost.run(fd: fd)
        if status != 0 { throw ExitCode(status) }
    }
}
