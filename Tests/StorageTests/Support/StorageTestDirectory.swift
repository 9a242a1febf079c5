import Foundation

/// A fresh directory under the system temporary directory, removed on deinit.
final class StorageTestDirectory: Sendable {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "csop-storage-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    var databasePath: String { path + "/store.sqlite" }

    /// Every byte of the database and its WAL, to look for plaintext.
    func databaseBytes() -> [UInt8] {
        var bytes: [UInt8] = []
        for suffix in ["", "-wal"] {
            if let data = FileManager.default.contents(atPath: databasePath + suffix) { bytes += data }
        }
        return bytes
    }
}

enum StorageTestEnvironment {
    static var postgresURL: String {
        ProcessInfo.processInfo.environment["CSOP_TEST_POSTGRES_URL"] ?? "postgres://csop:csop@127.0.0.1:5432/csop_test"
    }

    static func uniqueTable() -> String {
        "csop_storage_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
    }

    static let encryptionKey = Data((0..<32).map { UInt8($0) }).base64EncodedString()
    static let otherEncryptionKey = Data((0..<32).map { UInt8(255 - $0) }).base64EncodedString()
}

extension Array where Element == UInt8 {
    /// Whether `needle` occurs anywhere in these bytes.
    func containsBytes(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, count >= needle.count else { return false }
        let first = needle[0]
        var i = 0
        while i <= count - needle.count {
            if self[i] == first && Array(self[i..<(i + needle.count)]) == needle { return true }
            i += 1
        }
        return false
    }
}
