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
        let codec = ValueCodec(keys: ["k7": Array(repeating: 7, count: 32)], currentKeyId: "k7")
        let json = Array(#"{"a":"b"}"#.utf8)
        var (bytes, flags, keyId) = try codec.encode(json, key: "k", compress: true, encrypt: true)
        #expect(keyId == "k7")
        #expect(try codec.decode(bytes, flags: flags, keyId: "k7", key: "k") == json)
        // The key is authenticated: the same bytes under another key do not decrypt.
        #expect(throws: CSOPError.self) { try codec.decode(bytes, flags: flags, keyId: "k7", key: "other") }
        // Nor under another key id (here: `default`, not configured).
        #expect(throws: CSOPError.self) { try codec.decode(bytes, flags: flags, keyId: nil, key: "k") }
        bytes[bytes.count / 2] ^= 1
        #expect(throws: CSOPError.self) { try codec.decode(bytes, flags: flags, keyId: "k7", key: "k") }
        flags = ValueCodec.compressedFlag
        #expect(throws: CSOPError.self) { try codec.decode([1, 2, 3], flags: flags, keyId: nil, key: "k") }
    }

    // MARK: Key rotation

    static let oldKey = StorageTestEnvironment.encryptionKey
    static let newKey = StorageTestEnvironment.otherEncryptionKey

    func open(_ config: JSONObject) throws -> PluginHarness {
        var config = config
        config["path"] = .string(directory.databasePath)
        return try PluginHarness(config: .object(config))
    }

    /// `key_id` of every encrypted row, by stored key, read with the test's own connection.
    func keyIds() throws -> [String: String] {
        let connection = try SQLiteConnection(path: directory.databasePath, readOnly: true, create: false, busyTimeoutMilliseconds: 5000)
        let statement = try SQLiteStatement(connection: connection, sql: "SELECT key, coalesce(key_id, '(null)') FROM csop_storage WHERE flags & 2 != 0")
        var ids: [String: String] = [:]
        while try statement.step() { ids[statement.text(0).replacingOccurrences(of: "\0", with: "/")] = statement.text(1) }
        return ids
    }

    @Test func rotationReencryptsOldValuesUnderTheCurrentKeyAndKeepsVersions() async throws {
        let tenant = Caller(subject: "u", tenant: "t", actions: .all)
        do {
            let before = try open(["encryptionKey": .string(Self.oldKey)])
            #expect(await before.call("save", ["key": "a", "data": .string(secret), "options": ["encrypt": true]])["version"] == 1)
            #expect(await before.call("save", ["key": "a", "data": .string(secret), "options": ["encrypt": true]])["version"] == 2)
            let big: JSONValue = .string(String(repeating: "compressible ", count: 500))
            #expect(await before.call("save", ["key": "b", "data": big, "options": ["encrypt": true, "compress": true]]).isOK)
            #expect(await before.call("save", ["key": "plain", "data": 1]).isOK)
            #expect(await before.call("save", ["key": "a", "data": "tenant's", "options": ["encrypt": true]], caller: tenant).isOK)
            before.close()
        }
        #expect(try keyIds() == ["a": "default", "b": "default", "/t/a": "default"])

        let both = try open(["encryptionKeys": ["default": .string(Self.oldKey), "2026-11": .string(Self.newKey)], "encryptionKeyId": "2026-11"])
        // Old values read under their own key; new saves use the current one.
        #expect(await both.call("get", ["key": "a"]).value == .string(secret))
        #expect(await both.call("save", ["key": "c", "data": 3, "options": ["encrypt": true]]).isOK)
        #expect(try keyIds()["c"] == "2026-11")

        let rotated = await both.call("rotate", [:])
        #expect(rotated.value == ["rotated": 3, "changed": 0, "remaining": 0, "currentKeyId": "2026-11", "unreadable": [:]], "\(rotated.value ?? .null) \(rotated.error?.description ?? "")")
        #expect(try keyIds() == ["a": "2026-11", "b": "2026-11", "c": "2026-11", "/t/a": "2026-11"])
        // Nothing left to do the second time; versions did not move.
        #expect(await both.call("rotate", [:])["rotated"] == 0)
        #expect(await both.call("save", ["key": "a", "data": .string(secret), "options": ["ifVersion": 2, "encrypt": true]])["version"] == 3)
        both.close()

        // The old key can go: every value reads under the new one alone.
        let after = try open(["encryptionKeys": ["2026-11": .string(Self.newKey)]])
        #expect(await after.call("get", ["key": "a"]).value == .string(secret))
        #expect(await after.call("get", ["key": "b"]).value == .string(String(repeating: "compressible ", count: 500)))
        #expect(await after.call("get", ["key": "a"], caller: tenant).value == "tenant's")
        #expect(await after.call("get", ["key": "plain"]).value == 1)
        after.close()

        // With only the old key, the error names the key id the value needs.
        let stale = try open(["encryptionKey": .string(Self.oldKey)])
        let refused = await stale.call("get", ["key": "a"])
        #expect(refused.code == "DECRYPTION_FAILED")
        #expect(refused.error?.message.contains("the key with id \"2026-11\", which is not configured") == true, "\(refused.error?.message ?? "")")
        #expect(refused.error?.message.contains(Self.newKey) == false)
    }

    @Test func valuesWhoseKeyIsGoneAreCountedUnreadableAndLeftAlone() async throws {
        do {
            let before = try open(["encryptionKeys": ["old": .string(Self.oldKey)]])
            #expect(await before.call("save", ["key": "lost", "data": 1, "options": ["encrypt": true]]).isOK)
            before.close()
        }
        let storage = try open(["encryptionKeys": ["new": .string(Self.newKey)]])
        let reply = await storage.call("rotate", ["limit": 5])
        #expect(reply.value == ["rotated": 0, "changed": 0, "remaining": 1, "currentKeyId": "new", "unreadable": ["old": 1]], "\(reply.value ?? .null)")
        let get = await storage.call("get", ["key": "lost"])
        #expect(get.code == "DECRYPTION_FAILED")
        #expect(get.error?.message.contains("\"old\"") == true)
        #expect(try keyIds() == ["lost": "old"])
    }

    @Test func rotateIsTheOwnersAndNeedsAKey() async throws {
        let storage = try open(["encryptionKey": .string(Self.oldKey)])
        let tenant = Caller(subject: "u", tenant: "t", actions: .all)
        #expect(await storage.call("rotate", [:], caller: tenant).code == "FORBIDDEN")
        #expect(await storage.call("rotate", ["limit": 0]).code == "INVALID_PAYLOAD")
        #expect(await storage.call("rotate", ["keys": 1]).code == "INVALID_PAYLOAD")
        storage.close()
        let keyless = try open([:])
        let reply = await keyless.call("rotate", [:])
        #expect(reply.code == "INVALID_PAYLOAD")
        #expect(reply.error?.message.contains("no encryption key is configured") == true)
    }

    /// A save between rotate's read and its write wins: the rotation writes nothing.
    @Test func aSaveDuringRotationWins() throws {
        let store = try LocalStore(configuration: StorageConfiguration(path: directory.databasePath))
        let codec = ValueCodec(keys: ["default": Array(repeating: 1, count: 32), "new": Array(repeating: 2, count: 32)], currentKeyId: "default")
        func write(_ text: String) throws {
            let (bytes, flags, keyId) = try codec.encode(Array(text.utf8), key: "k", compress: false, encrypt: true)
            _ = try store.write(
                [LocalStore.Write(key: "k", tier: .local, size: 3, storedSize: Int64(bytes.count), flags: flags, bytes: bytes, keyId: keyId)],
                callID: 1, waiting: .upTo(milliseconds: 1000), commit: { true }
            ).waited()
        }
        try write("\"1\"")
        let rows = try store.encryptedRows(notUnder: "new", after: "", limit: 10, callID: 2)
        #expect(rows.map(\.key) == ["k"])
        try write("\"2\"")
        let (bytes, keyId) = try ValueCodec(keys: ["default": Array(repeating: 1, count: 32), "new": Array(repeating: 2, count: 32)], currentKeyId: "new")
            .reencrypt(rows[0].stored.bytes, keyId: rows[0].stored.keyId, key: "k")
        #expect(try store.replaceEncrypted(rows[0], bytes: bytes, storedSize: Int64(bytes.count), newColdRef: nil, keyId: keyId, callID: 3) == false)
        let current = try #require(try store.read("k", callID: 4))
        #expect(try codec.decode(current.bytes, flags: current.flags, keyId: current.keyId, key: "k") == Array("\"2\"".utf8))
        #expect(current.keyId == "default")
    }
}
