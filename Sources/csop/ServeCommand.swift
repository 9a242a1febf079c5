import ArgumentParser

/// `csop serve`: runs the gateway, `csop-serve`, which is built and installed beside `csop`
/// and kept out of it so that `csop` links no HTTP stack.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the plugins over HTTP, WebSocket and Server-Sent Events (csop serve --help lists the options).",
        discussion: "Runs csop-serve serve from csop's directory with these arguments.")

    @Argument(parsing: .captureForPassthrough, help: "Options for the server, e.g. --listen 127.0.0.1:7420 --config serve.toml.")
    var arguments: [String] = []

    func run() throws {
        try execSibling("csop-serve", ["serve"] + arguments)
    }
}

/// `csop token`: signs a development token, through `csop-serve token`.
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Sign a token for csop serve (HS256, for development and tests; csop token --help lists the options).")

    @Argument(parsing: .captureForPassthrough, help: "Options, e.g. --secret-file dev.secret --sub alice --actions 'storage.*' --ttl 1h.")
    var arguments: [String] = []

    func run() throws {
        try execSibling("csop-serve", ["token"] + arguments)
    }
}
