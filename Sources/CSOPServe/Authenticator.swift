public import CSOPCore
public import CSOPHost
import Foundation
import JWTKit
import Synchronization

/// Checks bearer tokens: JWTs signed with HS256 (a shared secret) or ES256/RS256 (keys from a
/// JWKS file), with `sub`, `exp` (required), `nbf` and `aud` checked against a small clock
/// skew, and the CSOP claim naming what the token may do:
///
/// ```json
/// {"sub": "alice", "exp": 1767225600, "aud": "csop",
///  "csop": {"actions": ["storage.*", "sync.*"], "tenant": "acme"}}
/// ```
/// `csop.actions` is a list of patterns (`*`, `domain.*`, `domain.operation`) or one string
/// of them separated by commas; `csop.tenant` defaults to `sub`.
///
/// A refusal says why (expired, bad signature, wrong audience...) but never repeats the token
/// or the secret. Verified tokens are remembered until they expire (at most 10,000 of them),
/// so a client that sends the same token with every request pays for verification once.
public final class Authenticator: Sendable {
    private let keys: JWTKeyCollection
    private let audience: String?
    private let clockSkew: Double
    private let cache = Mutex<[String: (caller: Caller, expires: Double)]>([:])
    private static let cacheLimit = 10_000
    /// Where refusals are recorded (`auth.failed`: the reason, never the token).
    private let audit: AuditLog?

    /// Reads the secret file and the JWKS file of `configuration`.
    /// - Parameter audit: where refused tokens are recorded.
    /// - Throws: ``GatewayConfigurationError`` when a file cannot be read or holds no usable key.
    public init(configuration: GatewayConfiguration, audit: AuditLog? = nil) async throws(GatewayConfigurationError) {
        self.audit = audit
        let keys = JWTKeyCollection()
        if let path = configuration.secretFile {
            let secret = try Self.read(path, what: "the HS256 secret file")
            let trimmed = secret.trimmingCharacters(in: .whitespacesAndNewlines)
            guard trimmed.utf8.count >= 32 else {
                throw GatewayConfigurationError(
                    "the HS256 secret in \(path) is \(trimmed.utf8.count) bytes; use at least 32 random bytes (e.g. openssl rand -base64 48 > \(path))")
            }
            await keys.add(hmac: HMACKey(from: trimmed), digestAlgorithm: .sha256)
        }
        if let path = configuration.jwksFile {
            let text = try Self.read(path, what: "the JWKS file")
            do {
                try await keys.add(jwksJSON: text)
            } catch {
                throw GatewayConfigurationError("\(path) is not a usable JWKS ({\"keys\": [...]} with ES256 or RS256 public keys): \(error)")
            }
        }
        self.keys = keys
        self.audience = configuration.audience
        self.clockSkew = configuration.clockSkew
    }

    private static func read(_ path: String, what: String) throws(GatewayConfigurationError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw GatewayConfigurationError("cannot read \(what) \(path)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The caller a token stands for: its subject, tenant and allowed actions. A refusal is
    /// recorded in the audit log.
    /// - Throws: `UNAUTHENTICATED` saying what is wrong with the token.
    public func verify(_ token: String) async throws(CSOPError) -> Caller {
        if let caller = cached(token) { return caller }
        do throws(Refusal) {
            return try await check(token)
        } catch {
            countRefusal(error.kind)
            audit?.record("auth.failed", ["outcome": error.error.code.rawValue, "reason": error.error.message])
            throw error.error
        }
    }

    /// Records a request that came without a token, over `transport` (`http`, `websocket`).
    func recordMissingToken(transport: String) {
        countRefusal("missing")
        audit?.record("auth.failed", ["outcome": ErrorCode.unauthenticated.rawValue, "reason": "no token", "transport": transport])
    }

    private func check(_ token: String) async throws(Refusal) -> Caller {
        let now = Date().timeIntervalSince1970
        guard token.utf8.count <= 16_384 else { throw Self.refusal("the token is longer than 16 KiB", kind: "too_long") }
        let claims: TokenClaims
        do {
            claims = try await keys.verify(token, as: TokenClaims.self)
        } catch let error as JWTError {
            throw Self.refusal(error)
        } catch let error as DecodingError {
            throw Self.refusal(Self.reason(error), kind: "claims")
        } catch {
            throw Self.refusal("the token could not be verified", kind: "invalid")
        }
        let expires = claims.exp.value.timeIntervalSince1970
        guard expires + clockSkew > now else { throw Self.refusal("the token expired at \(Self.format(expires))", kind: "expired") }
        if let notBefore = claims.nbf?.value.timeIntervalSince1970, notBefore - clockSkew > now {
            throw Self.refusal("the token is not valid before \(Self.format(notBefore))", kind: "not_yet_valid")
        }
        if let audience {
            guard let aud = claims.aud, aud.value.contains(audience) else {
                throw Self.refusal("the token's audience (aud) does not include \"\(audience)\"", kind: "audience")
            }
        }
        guard let csop = claims.csop else {
            throw Self.refusal("the token has no csop claim; add \"csop\": {\"actions\": [\"storage.*\", ...]}", kind: "claims")
        }
        let caller: Caller
        do throws(CSOPError) {
            caller = try Self.caller(subject: claims.sub.value, tenant: csop.tenant, actions: csop.actions)
        } catch {
            throw Self.refusal("its claims are not usable: \(error.message)", kind: "claims")
        }
        cache.withLock { cache in
            if cache.count >= Self.cacheLimit { cache.removeAll(keepingCapacity: true) }
            cache[token] = (caller, expires)
        }
        return caller
    }

    /// The caller of a token verified before and not expired since, without waiting (what
    /// an event-loop handler tries before ``verify(_:)``); nil otherwise.
    func cached(_ token: String) -> Caller? {
        guard let hit = cache.withLock({ $0[token] }), hit.expires + clockSkew > Date().timeIntervalSince1970 else { return nil }
        return hit.caller
    }

    /// Signs a token with the HS256 secret (for `csop token`).
    public func sign(subject: String, tenant: String?, actions: [String], lifetime: Double, audience: String?) async throws -> String {
        let now = Date()
        let claims = TokenClaims(
            sub: SubjectClaim(value: subject), exp: ExpirationClaim(value: now.addingTimeInterval(lifetime)),
            nbf: nil, aud: audience.map { AudienceClaim(value: [$0]) }, iat: IssuedAtClaim(value: now),
            csop: TokenClaims.CSOPClaim(actions: actions, tenant: tenant))
        return try await keys.sign(claims)
    }

    /// A caller from a token's claims (or `csop token`'s options), checked.
    /// - Throws: `INVALID_PAYLOAD` naming the bad subject, tenant or pattern.
    public static func caller(subject: String, tenant: String?, actions: [String]) throws(CSOPError) -> Caller {
        guard !actions.isEmpty else { throw .invalidPayload("csop.actions is empty: the token would allow nothing") }
        let caller = Caller(subject: subject, tenant: tenant, actions: try ActionPatterns(actions))
        try caller.validate()
        return caller
    }

    /// A refused token: the error for the caller, and a short kind for the metrics.
    private struct Refusal: Error {
        let error: CSOPError
        let kind: String
    }

    private static func refusal(_ reason: String, kind: String) -> Refusal {
        Refusal(error: CSOPError(ErrorCode.unauthenticated, "the bearer token was refused: \(reason)", retryable: false), kind: kind)
    }

    /// Refused tokens by kind (`missing`, `malformed`, `bad_signature`, `unknown_key`,
    /// `algorithm`, `expired`, `not_yet_valid`, `audience`, `claims`, `too_long`, `invalid`),
    /// for the gateway's `csop_gateway_auth_failures_total`.
    var refusals: [String: Int] { refusalCounts.withLock { $0 } }
    private let refusalCounts = Mutex<[String: Int]>([:])

    private func countRefusal(_ kind: String) { refusalCounts.withLock { $0[kind, default: 0] += 1 } }

    private static func format(_ seconds: Double) -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: seconds))
    }

    private static func refusal(_ error: JWTError) -> Refusal {
        switch error.errorType {
        case .malformedToken: refusal("it is not a well-formed JWT (three base64url parts separated by dots)", kind: "malformed")
        case .signatureVerificationFailed: refusal("its signature does not verify with the server's keys", kind: "bad_signature")
        case .unknownKID, .missingKIDHeader: refusal("its key id (kid) names no key the server has", kind: "unknown_key")
        case .unsupportedAlgorithm, .signingAlgorithmFailure, .noKeyProvided:
            refusal("it is signed with an algorithm the server does not accept", kind: "algorithm")
        case .claimVerificationFailure: refusal("a claim failed verification", kind: "claims")
        default: refusal("it could not be verified", kind: "invalid")
        }
    }

    private static func reason(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, let context):
            let path = (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            return "it lacks the \(path) claim"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? "its payload is not a JSON object of claims" : "its \(path) claim has the wrong type"
        @unknown default:
            return "its claims could not be read"
        }
    }
}

/// The claims a CSOP token carries.
struct TokenClaims: JWTPayload {
    var sub: SubjectClaim
    var exp: ExpirationClaim
    var nbf: NotBeforeClaim?
    var aud: AudienceClaim?
    var iat: IssuedAtClaim?
    var csop: CSOPClaim?

    struct CSOPClaim: Codable, Sendable {
        var actions: [String]
        var tenant: String?

        init(actions: [String], tenant: String?) {
            self.actions = actions
            self.tenant = tenant
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            if let list = try? container.decode([String].self, forKey: .actions) {
                actions = list
            } else {
                actions = try container.decode(String.self, forKey: .actions).split(separator: ",")
                    .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            tenant = try container.decodeIfPresent(String.self, forKey: .tenant)
        }
    }

    /// Checked in ``Authenticator/verify(_:)`` instead, with the configured clock skew.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
