import ArgumentParser
import CSOPHost

@main
struct CSOPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "csop",
        abstract: "Client-Side Orchestration Protocol host: routes domain.operation requests to plugins.",
        discussion: """
            Shell completions: csop --generate-completion-script bash|zsh|fish (see the README). \
            Manual: man csop, after scripts/install.sh.
            """,
        version: "csop \(CSOPHost.version) (plugin ABI \(CSOPHost.abiVersion))",
        subcommands: [
            DispatchCommand.self, PluginsCommand.self, CheckCommand.self, RunCommand.self, SubscribeCommand.self,
            BenchCommand.self, ServeCommand.self, TokenCommand.self, PluginHostCommand.self,
        ])
}
