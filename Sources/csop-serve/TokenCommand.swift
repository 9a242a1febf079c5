import ArgumentParser
import CSOPCLISupport
import CSOPCore
import Foundation
import CSOPServe

/// `csop token`: signs a development token with the HS256 secret csop serve checks.
struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token",
        abstract: "Sign a token (HS256) for csop serve: for development and tests.",
        discussion: "Example: csop token --secret-file dev.secret --sub alice --actions 'storage.*,sync.*' --ttl 1h")

    @Option(name: .customLong("secret-file"), help: "The HS256 secret file csop serve uses (--jwt-secret-file).")
    var secretFile: String
    @Option(help: "The subject (sub): who the token stands for.")
    var sub: String
    @Option(help: "Action patterns, comma-separated: *, domain.* or domain.operation.")
    var actions: String
    @Option(help: "The tenant (default: the subject).")
    var tenant: String?
    @Option(help: "The audience (aud).")
    var audience: String?
    @Option(help: "How long the token lives: seconds, or a number with s, m, h or d (default 1h).")
    var ttl: String = "1h"

    func run() async throws {
        guard let lifetime = Self.seconds(ttl), lifetime > 0, lifetime <= 366 * 86_400 else {
            throw ValidationError("--ttl \(ttl) is not a lifetime; write e.g. 3600, 90s, 15m, 1h or 7d (at most 366d)")
        }
        let patterns = actions.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        do throws(CSOPError) {
            _ = try Authenticator.caller(subject: sub, tenant: tenant, actions: patterns)
        } catch {
            throw ValidationError(error.message)
        }
        var configuration = GatewayConfiguration()
        configuration.secretFile = secretFile
        let authenticator: Authenticator
        do throws(GatewayConfigurationError) {
            authenticator = try await Authenticator(configuration: configuration)
        } catch {
            throw ValidationError(error.description)
        }
        printLine(try await authenticator.sign(subject: sub, tenant: tenant, actions: patterns, lifetime: lifetime, audience: audience))
    }

    static func seconds(_ text: String) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        if let last = text.last, let unit = units[last] { return Double(text.dropLast()).map { $0 * unit } }
        return Double(text)
    }
}
