import CSOPCore
import CSOPTestSupport
import Foundation
import Testing
@testable import StoragePlugin

@Suite struct StorageValidationTests {
    let directory = TemporaryDirectory.storage()

    @Test(arguments: [
        ("save", #"{"data":1}"#, "payload.key is required"),
        ("save", #"{"key":"","data":1}"#, "payload.key must not be empty"),
        ("save", #"{"key":5,"data":1}"#, "payload.key must be a string"),
        ("save", #"{"key":null,"data":1}"#, "payload.key must be a string"),
        ("save", #"{"key":"a"}"#, "payload.data is required"),
        ("save", #"{"key":"a","data":1,"extra":2}"#, "unknown field payload.extra"),
        ("save", #"{"key":"a","data":1,"options":{"expire":5}}"#, "unknown field payload.options.expire"),
        ("save", #"{"key":"a","data":1,"options":{"ttl":0}}"#, "payload.options.ttl"),
        ("save", #"{"key":"a","data":1,"options":"fast"}"#, "payload.options must be an object"),
        ("save", #"{"key":"a","data":1,"options":{"compress":"yes"}}"#, "payload.options.compress must be true or false"),
        ("save", #"{"key":"a","data":1,"options":{"ifVersion":-1}}"#, "payload.options.ifVersion must be between"),
        ("save", #"{"key":"a","data":1,"options":{"ifVersion":1.5}}"#, "payload.options.ifVersion must be an integer"),
        ("save", #"{"key":"a\u0000b","data":1}"#, "payload.key must not contain NUL"),
        ("save", #"[1,2]"#, "payload must be an object"),
        ("get", #"{}"#, "payload.key is required"),
        ("get", #"{"key":["a"]}"#, "payload.key must be a string"),
        ("delete", #"{"key":""}"#, "payload.key must not be empty"),
        ("list", #"{"limit":0}"#, "payload.limit must be between 1 and 10000"),
        ("list", #"{"limit":"ten"}"#, "payload.limit must be an integer"),
        ("list", #"{"prefix":3}"#, "payload.prefix must be a string"),
        ("list", #"{"cursor":true}"#, "payload.cursor must be a string"),
        ("list", #"{"page":2}"#, "unknown field payload.page"),
        ("saveMany", #"{}"#, "payload.items is required"),
        ("saveMany", #"{"items":[]}"#, "payload.items must not be empty"),
        ("saveMany", #"{"items":[{"key":"a","data":1},{"data":2}]}"#, "payload.items[1].key is required"),
        ("saveMany", #"{"items":[{"key":"a","data":1}],"options":{"ifVersion":1}}"#, "unknown field payload.options.ifVersion"),
        ("saveMany", #"{"items":[3]}"#, "payload.items[0] must be an object"),
        ("getMany", #"{"keys":"a"}"#, "payload.keys must be an array"),
        ("getMany", #"{"keys":["a",""]}"#, "payload.keys[1] must not be empty"),
        ("stats", #"{"verbose":true}"#, "unknown field payload.verbose"),
    ])
    func badPayloadsNameTheField(operation: String, payload: String, message: String) async throws {
        let storage = try PluginHarness(config: ["path": .string(directory.databasePath)])
        let reply = await storage.call(operation, rawPayload: Array(payload.utf8))
        #expect(reply.code == "INVALID_PAYLOAD")
        #expect(reply.error?.message.contains(message) == true, "\(reply.error?.message ?? "no error")")
        #expect(reply.error?.retryable == false)
        #expect(await storage.call("list", [:])["keys"] == [], "a rejected request stored something")
    }

    @Test func keyLimitIs1024BytesAndSaidSo() async throws {
        let storage = try PluginHarness(config: ["path": .string(directory.databasePath)])
        let longest = String(repeating: "é", count: 512)  // 1024 bytes
        #expect(await storage.call("save", ["key": .string(longest), "data": 1]).isOK)
        #expect(await storage.call("get", ["key": .string(longest)]).value == 1)
        let tooLong = await storage.call("save", ["key": .string(longest + "x"), "data": 1])
        #expect(tooLong.code == "INVALID_PAYLOAD")
        #expect(tooLong.error?.message == "payload.key is 1025 bytes; the limit is 1024 bytes")
    }

    @Test func batchLimitIs10000Items() async throws {
        let storage = try PluginHarness(config: ["path": .string(directory.databasePath)])
        let keys = JSONValue.array((0...10_000).map { .string("k\($0)") })
        let reply = await storage.call("getMany", ["keys": keys])
        #expect(reply.error?.message == "payload.keys has 10001 elements; the limit is 10000")
    }

    @Test(arguments: [
        (#"{"colour":"red"}"#, "unknown field config.colour"),
        (#"{"maxLocalSize":"big"}"#, "config.maxLocalSize must be an integer"),
        (#"{"maxBytes":-1}"#, "config.maxBytes must be between"),
        (#"{"synchronous":"sometimes"}"#, "config.synchronous must be \"normal\" or \"full\""),
        (#"{"readConnections":0}"#, "config.readConnections must be between 1 and 64"),
        (#"{"encryptionKey":"c2hvcnQ="}"#, "config.encryptionKey (or CSOP_STORAGE_ENCRYPTION_KEY) must be 32 bytes"),
        (#"{"encryptionKeys":{"k1":"c2hvcnQ="}}"#, "config.encryptionKeys.k1 must be 32 bytes in base64"),
        (#"{"encryptionKeys":{"k1":7}}"#, "config.encryptionKeys.k1 must be a string (32 bytes in base64), got number"),
        (#"{"encryptionKeys":{"a b":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}"#, "config.encryptionKeys: a key id must be 1 to 64 letters, digits"),
        (#"{"encryptionKeys":["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="]}"#, "config.encryptionKeys must be an object"),
        (#"{"encryptionKeys":{"k1":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","k2":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}"#, "config.encryptionKeyId is required with several keys: name the one new saves use (\"k1\", \"k2\")"),
        (#"{"encryptionKeys":{"k1":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},"encryptionKeyId":"k2"}"#, "config.encryptionKeyId names no configured key; the keys are \"k1\""),
        (#"{"encryptionKeyId":"k2"}"#, "config.encryptionKeyId names no configured key (none is)"),
        (#"{"encryptionKey":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","encryptionKeys":{"default":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}}"#, "config.encryptionKey is the key with id \"default\", and config.encryptionKeys.default is another"),
        (#"{"postgresTable":"drop table;"}"#, "config.postgresTable must be letters"),
        (#"{"postgresUrl":"mysql://x@localhost/db"}"#, "config.postgresUrl (or CSOP_STORAGE_POSTGRES_URL) must start with postgres://"),
        (#"{"postgresUrl":"postgres://localhost/db"}"#, "must name a user"),
        (#"{"postgresUrl":"postgres://u@localhost/db?sslmode=required"}"#, "config.postgresUrl (or CSOP_STORAGE_POSTGRES_URL): sslmode must be one of"),
        (#"{"postgresUrl":"postgres://u@localhost/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem"}"#, "sslrootcert /nonexistent/ca.pem cannot be read"),
    ])
    func badConfigFailsAtCreateNamingTheKey(config: String, message: String) throws {
        var object = try #require(try JSONValue(parsing: config).objectValue)
        object["path"] = .string(directory.databasePath)
        #expect {
            _ = try PluginHarness(config: .object(object))
        } throws: { error in
            let error = error as? CSOPError
            return error?.code == .invalidPayload && error?.message.contains(message) == true
        }
    }

    @Test func garbageDatabaseFileFailsAtCreateNamingThePath() throws {
        let path = directory.path + "/garbage.sqlite"
        try Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }).write(to: URL(fileURLWithPath: path))
        #expect {
            _ = try PluginHarness(config: ["path": .string(path)])
        } throws: { error in
            let error = error as? CSOPError
            return error?.code == .executionFailed && error?.message.contains(path) == true
                && error?.message.contains("not a database") == true
        }
    }

    @Test func damagedPagesFailAtCreate() async throws {
        do {
            let storage = try PluginHarness(config: ["path": .string(directory.databasePath)])
            var items: [JSONValue] = []
            for i in 0..<300 { items.append(["key": .string("key\(i)"), "data": .string(String(repeating: "d", count: 300))]) }
            #expect(await storage.call("saveMany", ["items": .array(items)]).isOK)
            storage.close()
        }
        // Let SQLite fold the WAL into the file, then scribble over a page in the middle.
        let checkpoint = try SQLiteConnection(path: directory.databasePath, readOnly: false, create: false, busyTimeoutMilliseconds: 1000)
        try checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        let handle = try #require(FileHandle(forUpdatingAtPath: directory.databasePath))
        try handle.seek(toOffset: 4096 * 3)
        handle.write(Data(repeating: 0xA5, count: 4096))
        try handle.close()
        #expect {
            _ = try PluginHarness(config: ["path": .string(directory.databasePath)])
        } throws: { error in
            (error as? CSOPError)?.message.contains(directory.databasePath) == true
        }
    }

    @Test func unwritableDirectoryFailsAtCreateNamingThePath() throws {
        let blocker = directory.path + "/file"
        _ = FileManager.default.createFile(atPath: blocker, contents: Data([1]))
        let path = blocker + "/sub/store.sqlite"
        #expect {
            _ = try PluginHarness(config: ["path": .string(path)])
        } throws: { error in
            (error as? CSOPError)?.message.contains(blocker) == true
        }
    }

    @Test func defaultPathIsUnderTheUsersDataDirectory() {
        #expect(StorageConfiguration.defaultPath(environment: ["XDG_DATA_HOME": "/data"]) == "/data/csop/storage.sqlite")
        #expect(StorageConfiguration.defaultPath(environment: ["HOME": "/home/u"]) == "/home/u/.local/share/csop/storage.sqlite")
    }

    @Test func environmentSuppliesTheColdURLAndKeyButConfigWins() throws {
        let environment = ["CSOP_STORAGE_POSTGRES_URL": "postgres://env@h/db", "CSOP_STORAGE_ENCRYPTION_KEY": StorageTestEnvironment.encryptionKey]
        let fromEnvironment = try StorageConfiguration(config: ["path": "/tmp/x"], environment: environment)
        #expect(fromEnvironment.postgresURL == "postgres://env@h/db")
        #expect(fromEnvironment.encryptionKeys["default"]?.count == 32)
        #expect(fromEnvironment.encryptionKeyId == "default")
        // encryptionKeys.default in the config wins over the environment's key.
        let table = try StorageConfiguration(
            config: ["path": "/tmp/x", "encryptionKeys": ["default": .string(StorageTestEnvironment.otherEncryptionKey)]], environment: environment)
        #expect(table.encryptionKeys["default"] == Array(Data(base64Encoded: StorageTestEnvironment.otherEncryptionKey)!))
        let fromConfig = try StorageConfiguration(
            config: ["path": "/tmp/x", "postgresUrl": "postgres://cfg@h/db", "synchronous": "full"], environment: environment)
        #expect(fromConfig.postgresURL == "postgres://cfg@h/db")
        #expect(fromConfig.synchronous == .full)
    }
}
