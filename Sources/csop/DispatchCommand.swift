import ArgumentParser
import CSOPCLISupport
import CSOPHost
import Glibc

struct DispatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatch",
        abstract: "Send one request and print the response JSON (exit 1 on an error response).",
        discussion: """
            Examples:
              csop dispatch storage.save '{"key":"a","data":{"x":1}}'
              csop dispatch storage.save - < payload.json
              csop dispatch compute.execute @task.json --timeout 2000
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The action, e.g. storage.save.", valueName: "action"))
    var action: String

    @Argument(
        help: ArgumentHelp(
            "The payload: a JSON object, - to read it from stdin, or @FILE to read it from a file.",
            valueName: "payload"))
    var payload: String = "{}"

    @Option(help: ArgumentHelp("Milliseconds one attempt may take (1–3600000).", valueName: "ms"))
    var timeout: Int = Int(RequestOptions.defaultTimeout)

    @Option(help: ArgumentHelp("Retries for retryable failures (0–10).", valueName: "n"))
    var retry: Int = 0

    func run() async throws {
        let text: [UInt8]
        do {
            text = try PayloadSource(payload).read()
        } catch {
            printLine("csop dispatch: \(error)", to: 2)
            throw ExitCode(2)
        }
        let host = try await global.makeHost()
        let response: Response
        do throws(JSONParseError) {
            let value = try JSONValue(parsing: text)
            response = await host.dispatch(
                Request(action: action, payload: value, options: RequestOptions(timeout: Double(timeout), retry: retry)))
        } catch {
            response = Response(
                id: Request.generateID(),
                outcome: .failure(.invalidPayload("the payload (\(PayloadSource(payload).name)) is not valid JSON: \(error)")), duration: 0)
        }
        writeAll(1, response.serialized() + [0x0A])
        await host.shutdown()
        if !response.isOK { throw ExitCode(1) }
    }
}

/// Where `csop dispatch` reads its payload: the argument itself, stdin (`-`) or a file (`@path`).
struct PayloadSource {
    /// The longest payload read from stdin or a file.
    static let maxBytes = 128 << 20

    var argument: String
    init(_ argument: String) { self.argument = argument }

    /// How the payload is named in messages.
    var name: String {
        if argument == "-" { return "stdin" }
        if argument.hasPrefix("@") { return "file \(argument.dropFirst())" }
        return "argument"
    }

    /// The payload's bytes. - Throws: a message naming the file and the problem.
    func read() throws(PayloadError) -> [UInt8] {
        if argument == "-" { return try Self.readAll(fd: 0, name: "stdin") }
        guard argument.hasPrefix("@") else { return Array(argument.utf8) }
        let path = String(argument.dropFirst())
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw PayloadError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
            throw PayloadError("\(path) is not a regular file")
        }
        return try Self.readAll(fd: fd, name: path)
    }

    private static func readAll(fd: Int32, name: String) throws(PayloadError) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw PayloadError("cannot read \(name): \(String(cString: strerror(errno)))")
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
            if bytes.count > maxBytes { throw PayloadError("\(name) holds more than \(maxBytes) bytes") }
        }
    }
}

struct PayloadError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
