import CSOPCore
import CSOPHost
import CSOPServe
import CSOPTestSupport
import Foundation
import HTTPTypes
import Crypto
import JWTKit
import Testing

/// Tokens, scopes and tenants through a real gateway with HS256 auth on.
@Suite struct AuthGatewayTests {
    private func withAuth<T: Sendable>(
        _ setup: ServeSetup, audience: String? = nil, _ body: @Sendable (Int, CSOPHost) async throws -> T
    ) async throws -> T {
        try await withGateway(setup, configure: { $0.secretFile = setup.secretFile; $0.audience = audience }, body)
    }

    @Test func badTokensAre401WithAReasonThatNeverRepeatsTheToken() async throws {
        let setup = try ServeSetup()
        let other = try ServeSetup()
        let good = try await setup.token("alice", audience: "csop")
        let expired = try await setup.token("alice", ttl: -120, audience: "csop")
        let forged = try await other.token("alice", audience: "csop")
        let wrongAudience = try await setup.token("alice", audience: "elsewhere")
        try await withAuth(setup, audience: "csop") { port, _ in
            let http = HTTP(port: port)
            let noop = #"{"action":"diag.noop"}"#
            #expect(try await http.post("/v1/dispatch", noop, token: good).status == .ok)
            let missing = try await http.post("/v1/dispatch", noop)
            #expect(missing.status == .unauthorized)
            #expect(missing.code == "UNAUTHENTICATED")
            #expect(missing.headers[.wwwAuthenticate] == "Bearer")
            for (token, reason) in [
                (expired, "expired"), (forged, "signature"), (wrongAudience, "audience"), ("not.a.jwt", "well-formed"),
                ("garbage", "well-formed"),
            ] {
                let reply = try await http.post("/v1/dispatch", noop, token: token)
                #expect(reply.status == .unauthorized, "\(reason): \(reply.text)")
                #expect(reply.code == "UNAUTHENTICATED")
                #expect(reply.text.contains(reason), "\(reason): \(reply.text)")
                #expect(!reply.text.contains(token), "the token leaked into the answer")
            }
            // Health needs no token; the client module neither.
            #expect(try await http.get("/healthz").status == .ok)
            #expect(try await http.get("/v1/csop.js").status == .ok)
        }
    }

    /// Refused tokens, missing tokens and refused actions land in the audit log with who and
    /// why, and never with the token or the payload.
    @Test func refusalsAreAuditedWithoutTokensOrPayloads() async throws {
        var setup = try ServeSetup()
        let path = setup.directory.file("audit.jsonl")
        setup.auditLog = try AuditLog(path: path)
        let narrow = try await setup.token("bob", actions: ["diag.*"], tenant: "acme", audience: "csop")
        let expired = try await setup.token("alice", ttl: -120, audience: "csop")
        try await withAuth(setup, audience: "csop") { port, _ in
            let http = HTTP(port: port)
            _ = try await http.post("/v1/dispatch", #"{"action":"diag.noop"}"#)
            _ = try await http.post("/v1/dispatch", #"{"action":"diag.noop"}"#, token: expired)
            let denied = try await http.post("/v1/dispatch", #"{"action":"storage.save","payload":{"key":"k","data":"PAYLOAD-SECRET"}}"#, token: narrow)
            #expect(denied.code == "FORBIDDEN")
            let ws = try await webSocket(port: port) { out, inbox in
                try await out.send(#"{"type":"hello"}"#)
                _ = try await inbox.wait { $0["type"] == .string("error") }
            }
            #expect(ws.closeCode == 4401)
        }
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try JSONValue(parsing: Array($0.utf8)) }
        let failures = lines.filter { $0["event"] == "auth.failed" }
        #expect(failures.contains { $0["reason"] == "no token" })
        #expect(failures.contains { $0["reason"]?.stringValue?.contains("expired") == true })
        #expect(failures.contains { $0["transport"] == "websocket" })
        let refused = try #require(lines.first { $0["event"] == "request" && $0["outcome"] == "FORBIDDEN" })
        #expect(refused["action"] == "storage.save")
        #expect(refused["subject"] == "bob")
        #expect(refused["tenant"] == "acme")
        #expect(lines.filter { $0["event"] == "plugin.loaded" }.count == 4)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains(expired) && !text.contains(narrow), "a token leaked into the audit log")
        #expect(!text.contains("PAYLOAD-SECRET"))
    }

    @Test func actionsOutsideTheTokensPatternsAre403() async throws {
        let setup = try ServeSetup()
        let storageOnly = try await setup.token("alice", actions: ["storage.*"])
        try await withAuth(setup) { port, _ in
            let http = HTTP(port: port)
            #expect(try await http.post("/v1/storage/save", #"{"key":"k","data":1}"#, token: storageOnly).status == .ok)
            for action in ["diag.noop", "compute.execute", "sync.broadcast", "host.info", "nosuch.op"] {
                let reply = try await http.post("/v1/dispatch", #"{"action":"\#(action)"}"#, token: storageOnly)
                #expect(reply.status == .forbidden, "\(action): \(reply.text)")
                #expect(reply.code == "FORBIDDEN")
            }
        }
    }

    @Test func tenantsCannotReachEachOther() async throws {
        let setup = try ServeSetup()
        let alice = try await setup.token("alice", tenant: "acme")
        let bob = try await setup.token("bob", tenant: "globex")
        let carol = try await setup.token("carol", tenant: "acme")
        try await withAuth(setup) { port, _ in
            let http = HTTP(port: port)
            #expect(try await http.post("/v1/storage/save", #"{"key":"plan","data":"acme's"}"#, token: alice).status == .ok)
            // Bob (another tenant) sees nothing of it, and his writes land in his own space.
            #expect(try await http.post("/v1/storage/get", #"{"key":"plan"}"#, token: bob).status == .notFound)
            let list = try await http.post("/v1/storage/list", "{}", token: bob)
            #expect(!list.text.contains("plan"), "\(list.text)")
            #expect(try await http.post("/v1/storage/delete", #"{"key":"plan"}"#, token: bob).data?["deleted"] != .bool(true))
            #expect(try await http.post("/v1/storage/save", #"{"key":"plan","data":"globex's"}"#, token: bob).status == .ok)
            #expect(try await http.post("/v1/storage/get", #"{"key":"plan"}"#, token: alice).data == .string("acme's"))
            // Carol shares Alice's tenant.
            #expect(try await http.post("/v1/storage/get", #"{"key":"plan"}"#, token: carol).data == .string("acme's"))
            // Registered functions are per tenant.
            let register = #"{"name":"double","fn":"return data * 2"}"#
            let registered = try await http.post("/v1/compute/register", register, token: alice)
            #expect(registered.status == .ok, "\(registered.text)")
            let call = #"{"task":"double","data":21}"#
            #expect(try await http.post("/v1/compute/execute", call, token: alice).status == .ok)
            #expect(try await http.post("/v1/compute/execute", call, token: bob).status != .ok)
            // Presence is the token's subject: no impersonation.
            let impersonate = try await http.post("/v1/sync/presence", #"{"channel":"room","userId":"alice"}"#, token: bob)
            #expect(impersonate.status == .forbidden, "\(impersonate.text)")
            #expect(try await http.post("/v1/sync/presence", #"{"channel":"room"}"#, token: alice).data?["userId"] == .string("alice"))
            let seen = try await http.post("/v1/sync/presence", #"{"channel":"room"}"#, token: bob)
            #expect(!seen.text.contains("alice"), "bob sees acme's presence: \(seen.text)")
            // Subscriptions: bob on the same channel name gets nothing of acme's broadcasts.
            let events = try await webSocket(port: port, headers: [.authorization: "Bearer \(bob)"]) { out, inbox in
                try await out.send(#"{"id":"s","action":"sync.subscribe","payload":{"channel":"news"}}"#)
                try await inbox.response("s")
                #expect(try await http.post("/v1/sync/broadcast", #"{"channel":"news","event":"secret"}"#, token: alice).status == .ok)
                try await out.send(#"{"id":"mine","action":"sync.broadcast","payload":{"channel":"news","event":"own"}}"#)
                try await inbox.wait { $0["event"] == .string("own") }
                try await out.close(.normalClosure, reason: nil)
            }
            #expect(!events.frames.contains { $0["event"] == .string("secret") })
        }
    }

    @Test func webSocketTokensFromHandshakeSubprotocolOrFirstMessage() async throws {
        let setup = try ServeSetup()
        let token = try await setup.token("dave")
        try await withAuth(setup) { port, _ in
            // Browsers: the subprotocol csop.bearer.<token>; the server picks "csop".
            let viaSubprotocol = try await webSocket(port: port, headers: [.secWebSocketProtocol: "csop, csop.bearer.\(token)"]) { out, inbox in
                try await out.send(#"{"id":"n","action":"diag.noop"}"#)
                try await inbox.response("n")
                try await out.close(.normalClosure, reason: nil)
            }
            #expect(viaSubprotocol.frames.first?["status"] == .string("ok"))
            // Or the first message.
            let viaMessage = try await webSocket(port: port) { out, inbox in
                try await out.send(#"{"type":"auth","token":"\#(token)"}"#)
                try await inbox.wait { $0["type"] == .string("auth") }
                try await out.send(#"{"id":"n","action":"diag.noop"}"#)
                try await inbox.response("n")
                try await out.close(.normalClosure, reason: nil)
            }
            #expect(viaMessage.frames.first?["status"] == .string("ok"))
            #expect(viaMessage.frames.last?["status"] == .string("ok"))
            // A bad token: one error frame, then close 4401.
            let refused = try await webSocket(port: port, headers: [.authorization: "Bearer bad.to.ken"]) { _, inbox in
                try await inbox.wait { $0["type"] == .string("error") }
            }
            #expect(refused.frames.first?["error"]?["code"] == .string("UNAUTHENTICATED"))
            #expect(refused.closeCode == 4401)
            // No token and a request first: refused the same way.
            let none = try await webSocket(port: port) { out, inbox in
                try await out.send(#"{"id":"n","action":"diag.noop"}"#)
                try await inbox.wait { $0["type"] == .string("error") }
            }
            #expect(none.closeCode == 4401)
        }
    }
}

/// ES256 tokens checked against a JWKS file.
@Suite struct JWKSAuthTests {
    private struct Claims: JWTPayload {
        struct CSOP: Codable, Sendable { var actions: [String] }
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var csop: CSOP?
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    @Test func es256TokensFromAJWKSAreAcceptedAndOthersRefused() async throws {
        let setup = try ServeSetup()
        let key = try ES256PrivateKey(backing: P256.Signing.PrivateKey())
        let parameters = try #require(key.parameters)
        let jwks = setup.directory.file("jwks.json")
        try #"{"keys":[{"kty":"EC","crv":"P-256","use":"sig","alg":"ES256","kid":"k1","x":"\#(parameters.x)","y":"\#(parameters.y)"}]}"#
            .write(toFile: jwks, atomically: true, encoding: .utf8)
        let signer = JWTKeyCollection()
        await signer.add(ecdsa: key, kid: "k1")
        let stranger = JWTKeyCollection()
        await stranger.add(ecdsa: try ES256PrivateKey(backing: P256.Signing.PrivateKey()), kid: "k1")
        let expiry = Date().addingTimeInterval(600)
        let good = try await signer.sign(Claims(sub: "gina", exp: .init(value: expiry), csop: .init(actions: ["diag.*"])), kid: "k1")
        let forged = try await stranger.sign(Claims(sub: "gina", exp: .init(value: expiry), csop: .init(actions: ["*"])), kid: "k1")
        let noScope = try await signer.sign(Claims(sub: "gina", exp: .init(value: expiry), csop: nil), kid: "k1")
        // An unsigned token ("alg": "none") that claims everything.
        let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + Data(#"{"sub":"gina","exp":4102444800,"csop":{"actions":["*"]}}"#.utf8)
            .base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_") + "."
        try await withGateway(setup, configure: { $0.jwksFile = jwks }) { port, _ in
            let http = HTTP(port: port)
            #expect(try await http.post("/v1/diag/noop", "{}", token: good).status == .ok)
            #expect(try await http.post("/v1/storage/get", #"{"key":"k"}"#, token: good).status == .forbidden)
            for (token, reason) in [(forged, "signature"), (noScope, "csop claim"), (unsigned, "refused")] {
                let reply = try await http.post("/v1/diag/noop", "{}", token: token)
                #expect(reply.status == .unauthorized, "\(reason): \(reply.text)")
                #expect(reply.text.contains(reason), "\(reason): \(reply.text)")
            }
        }
    }
}

/// `nbf`, checked with the clock skew.
@Suite struct NotBeforeTests {
    private struct Claims: JWTPayload {
        struct CSOP: Codable, Sendable { var actions: [String] }
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var nbf: NotBeforeClaim
        var csop: CSOP
        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    @Test func aTokenNotYetValidIsRefusedAndOneWithinTheSkewAccepted() async throws {
        let setup = try ServeSetup()
        let secret = try String(contentsOfFile: setup.secretFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        func token(notBefore: Double) async throws -> String {
            try await keys.sign(
                Claims(
                    sub: "hal", exp: .init(value: Date().addingTimeInterval(600)), nbf: .init(value: Date().addingTimeInterval(notBefore)),
                    csop: .init(actions: ["*"])))
        }
        let later = try await token(notBefore: 600)
        let skewed = try await token(notBefore: 10)
        try await withGateway(setup, configure: { $0.secretFile = setup.secretFile; $0.clockSkew = 30 }) { port, _ in
            let refused = try await HTTP(port: port).post("/v1/diag/noop", "{}", token: later)
            #expect(refused.status == .unauthorized)
            #expect(refused.text.contains("not valid before"), "\(refused.text)")
            #expect(try await HTTP(port: port).post("/v1/diag/noop", "{}", token: skewed).status == .ok)
        }
    }
}
