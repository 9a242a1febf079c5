import ArgumentParser
import Glibc

@main
struct CSOPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csop",
        abstract: "Client-Side Orchestration Protocol host: routes domain.operation requests to plugins.",
        version: "0.1.0",
        subcommands: [
            DispatchCommand.self, PluginsCommand.self, RunCommand.self, SubscribeCommand.self, BenchCommand.self,
        ])
}
