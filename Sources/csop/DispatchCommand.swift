import ArgumentParser
import CSOPCore
import CSOPHost

struct DispatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatch",
        abstract: "Send one request and print the response JSON (exit 1 on an error response).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The action, e.g. storage.save.")
    var action: String

    @Argument(help: "The payload as a JSON object (default {}).")
    var payload: String = "{}"

    @Option(help: "Milliseconds one attempt may take.")
    var timeout: Double = RequestOptions.defaultTimeout

    @Option(help: "Retries for retryable failures.")
    var retry: Int = 0

    func run() async throws {
        let host = try await global.makeHost()
        let response: Response
        do throws(JSONParseError) {
            let value = try JSONValue(parsing: payload)
            response = await host.dispatch(Request(action: action, payload: value, options: RequestOptions(timeout: timeout, retry: retry)))
        } catch {
            response = Response(
                id: Request.generateID(),
                outcome: .failure(.invalidPayload("PAYLOAD_JSON is not valid JSON: \(error)")), duration: 0)
        }
        writeAll(1, response.serialized() + [0x0A])
        await host.shutdown()
        if !response.isOK { throw ExitCode(1) }
    }
}
