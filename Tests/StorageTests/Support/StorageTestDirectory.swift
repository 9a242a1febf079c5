import CSOPTestSupport
import Foundation

extension TemporaryDirectory {
    /// A fresh directory for one suite's databases.
    static func storage() -> TemporaryDirectory {
        // The suites keep it in a stored property; a failure to create /tmp entries is fatal anyway.
        try! TemporaryDirectory("csop-storage")
    }

    var databasePath: String { file("store.sqlite") }

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
