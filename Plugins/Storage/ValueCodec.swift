import CSOPCore
import CZlib
import Crypto
import Foundation

/// Turns a value's compact JSON into the bytes a tier stores and back: zlib deflate when
/// `compress` helps, then AES-256-GCM (nonce, ciphertext, tag) with the storage key as
/// authenticated data, so a row copied under another key does not decrypt. The key is the
/// stored one (``StorageNamespace``): a tenant's value does not decrypt under another tenant's
/// key of the same name; messages name the user's key.
///
/// Encryption keys have ids (``StorageConfiguration/encryptionKeys``). A value is encrypted
/// under the current one, and its id is kept beside it in the index (`key_id`), so a get finds
/// its key and `storage.rotate` finds the values still under an old one. A value without an id
/// was saved before ids existed, under the key now called `default`.
struct ValueCodec: Sendable {
    static let compressedFlag: Int64 = 1
    static let encryptedFlag: Int64 = 2

    let keys: [String: SymmetricKey]
    /// The key new encrypted values use.
    let currentKeyId: String?

    init(keys: [String: [UInt8]], currentKeyId: String?) {
        self.keys = keys.mapValues { SymmetricKey(data: $0) }
        self.currentKeyId = currentKeyId
    }

    /// The stored bytes, flags and encryption key id (nil when not encrypted) for `json`.
    /// - Throws: `INVALID_PAYLOAD` when `encrypt` is asked for without a configured key.
    func encode(_ json: [UInt8], key: String, compress: Bool, encrypt: Bool) throws(CSOPError) -> (bytes: [UInt8], flags: Int64, keyId: String?) {
        var bytes = json
        var flags: Int64 = 0
        if compress, let deflated = Self.deflate(json), deflated.count < json.count {
            bytes = deflated
            flags |= Self.compressedFlag
        }
        guard encrypt else { return (bytes, flags, nil) }
        let (sealed, keyId) = try seal(bytes, key: key)
        return (sealed, flags | Self.encryptedFlag, keyId)
    }

    /// The compact JSON of a stored value whose encryption key (when `flags` say encrypted) has
    /// id `keyId` (nil: `default`).
    /// - Throws: `DECRYPTION_FAILED` naming the key id when that key is not configured or is not
    ///   the one the value was saved with; `EXECUTION_FAILED` for corrupt data.
    func decode(_ stored: [UInt8], flags: Int64, keyId: String?, key: String) throws(CSOPError) -> [UInt8] {
        var bytes = stored
        if flags & Self.encryptedFlag != 0 { bytes = try open(bytes, keyId: keyId, key: key) }
        if flags & Self.compressedFlag != 0 {
            guard let inflated = Self.inflate(bytes) else {
                throw .executionFailed("the stored value of '\(StorageNamespace.userKey(key))' is damaged: its compressed data does not inflate")
            }
            bytes = inflated
        }
        return bytes
    }

    /// An encrypted value's bytes under the current key instead of `keyId`'s, its compression
    /// untouched.
    func reencrypt(_ stored: [UInt8], keyId: String?, key: String) throws(CSOPError) -> (bytes: [UInt8], keyId: String) {
        try seal(try open(stored, keyId: keyId, key: key), key: key)
    }

    private func seal(_ bytes: [UInt8], key: String) throws(CSOPError) -> ([UInt8], String) {
        guard let currentKeyId, let secret = keys[currentKeyId] else {
            throw .invalidPayload(
                "payload.options.encrypt needs an encryption key: set config.encryptionKey or CSOP_STORAGE_ENCRYPTION_KEY (32 bytes, base64), or config.encryptionKeys")
        }
        do {
            let sealed = try AES.GCM.seal(bytes, using: secret, authenticating: Array(key.utf8))
            guard let combined = sealed.combined else { throw CSOPError.executionFailed("AES-GCM produced no combined box") }
            return (Array(combined), currentKeyId)
        } catch {
            throw .executionFailed("encrypting the value of '\(StorageNamespace.userKey(key))' failed")
        }
    }

    private func open(_ bytes: [UInt8], keyId: String?, key: String) throws(CSOPError) -> [UInt8] {
        let id = keyId ?? StorageConfiguration.defaultKeyId
        guard let secret = keys[id] else {
            let where_ = id == StorageConfiguration.defaultKeyId
                ? "set config.encryptionKey (or CSOP_STORAGE_ENCRYPTION_KEY) or config.encryptionKeys.default"
                : "add it to config.encryptionKeys"
            throw CSOPError(
                .decryptionFailed,
                "'\(StorageNamespace.userKey(key))' was saved encrypted with the key with id \"\(id)\", which is not configured: \(where_) to read it")
        }
        do {
            let box = try AES.GCM.SealedBox(combined: bytes)
            return Array(try AES.GCM.open(box, using: secret, authenticating: Array(key.utf8)))
        } catch {
            throw CSOPError(
                .decryptionFailed,
                "'\(StorageNamespace.userKey(key))' could not be decrypted with the key with id \"\(id)\": it is not the one it was saved with (or the data is damaged)")
        }
    }

    /// An 8-byte little-endian original length, then a zlib stream.
    static func deflate(_ input: [UInt8]) -> [UInt8]? {
        var bound = compressBound(uLong(input.count))
        var output = [UInt8](repeating: 0, count: Int(bound) + 8)
        let length = UInt64(input.count)
        for i in 0..<8 { output[i] = UInt8(truncatingIfNeeded: length >> (8 * UInt64(i))) }
        let code = output.withUnsafeMutableBufferPointer { out in
            input.withUnsafeBufferPointer { inBuffer in
                compress2(out.baseAddress! + 8, &bound, inBuffer.baseAddress, uLong(input.count), 6)
            }
        }
        guard code == Z_OK else { return nil }
        output.removeLast(output.count - 8 - Int(bound))
        return output
    }

    static func inflate(_ input: [UInt8]) -> [UInt8]? {
        guard input.count >= 8 else { return nil }
        var length: UInt64 = 0
        for i in 0..<8 { length |= UInt64(input[i]) << (8 * UInt64(i)) }
        guard length <= UInt64(StorageLimits.maxValueBytes) else { return nil }
        var outLength = uLongf(length)
        var output = [UInt8](repeating: 0, count: Int(length))
        let code = output.withUnsafeMutableBufferPointer { out in
            input.withUnsafeBufferPointer { inBuffer in
                uncompress(out.baseAddress ?? UnsafeMutablePointer(bitPattern: 1), &outLength, inBuffer.baseAddress! + 8, uLong(input.count - 8))
            }
        }
        guard code == Z_OK, outLength == uLongf(length) else { return nil }
        return output
    }
}
