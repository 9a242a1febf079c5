import CSOPCore
import CSOPTestSupport
import Foundation
import Testing
@testable import StoragePlugin

@Suite struct StorageEncryptionTests {
    let directory = TemporaryDirectory.storage()
    let secret = "the launch code is 0000-TOP-SECRET"

    func open(key: String?) throws -> PluginHarness {
        var config: JSONObject = ["path": .string(directory.databasePath)]
        if let key { config["encryptionKey"] = .string(key) }
        return try PluginHarness(config: .object(config))
    }

    @Test func encryptedValuesLeaveNoPlaintextAndReadBack() async throws {
        let storage = try open(key: StorageTestEnvironment.encryptionKey)
        let value: JSONValue = ["note": .string(secret), "n": 1]
        for compress in [false, true] {
            let key = JSONValue.string("secret-\(compress)")
            #expect(await storage.call("save", ["key": key, "data": value, "options": ["encrypt": true, "compress": .bool(compress)]]).isOK)
            #expect(await storage.call("get", ["key": key]).raw == value.serialized())
        }
        let bytes = directory.databaseBytes()
        #expect(bytes.count > 0)
        #expect(!bytes.containsBytes(Array(secret.utf8)))
        #expect(!bytes.containsBytes(Array("TOP-SECRET".utf8)))
    }

    @Test func wrongOrMissingKeyGivesAClearError() async throws {
        do {
            let storage = try open(key: StorageTestEnvironment.encryptionKey)
            _ = await storage.call("save", ["key": "s", "data": .string(secret), "options": ["encrypt": true]])
            storage.close()
        }
        do {
            let wrong = try open(key: StorageTestEnvironment.otherEncryptionKey)
            let reply = await wrong.call("get", ["key": "s"])
            #expect(reply.code == "DECRYPTION_FAILED")
            #expect(reply.error?.message.contains("not the one it was saved with") == true)
            #expect(reply.raw == nil)
            wrong.close()
        }
        let missing = try open(key: nil)
        let reply = await missing.call("get", ["key": "s"])
        #expect(reply.code == "DECRYPTION_FAILED")
        #expect(reply.error?.message.contains("encryptionKey") == true)
        let save = await missing.call("save", ["key": "t", "data": 1, "options": ["encrypt": true]])
        #expect(save.code == "INVALID_PAYLOAD")
        #expect(save.error?.message.contains("payload.options.encrypt") == true)
        #expect(await missing.call("get", ["key": "t"]).code == "KEY_NOT_FOUND")
    }

    @Test func codecRejectsTamperedBytes() throws {
        let codec = ValueCodec(encryptionKey: Array(repeating: 7, count: 32))
        let json = Array(#"{"a":"b"}"#.utf8)
        var (bytes, flags) = try codec.encode(json, key: "k", compress: true, encrypt: true)
        #expect(try codec.decode(bytes, flags: flags, key: "k") == json)
        // The key is authenticated: the same bytes under another key do not decrypt.
        #expect(throws: CSOPError.self) { try codec.decode(bytes, flags: flags, key: "other") }
        bytes[bytes.count / 2] ^= 1
        #expect(throws: CSOPError.self) { try codec.decode(bytes, flags: flags, key: "k") }
        flags = ValueCodec.compressedFlag
        #expect(throws: CSOPError.self) { try codec.decode([1, 2, 3], flags: flags, key: "k") }
    }
}
