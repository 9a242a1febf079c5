import CSOPCore
import CSOPPluginKit
import Foundation

/// Streamed values: bytes of any size up to `maxStreamSize`, saved in chunks
/// (`storage.upload`, `storage.append`…, `storage.commit`) and read in slices (`storage.read`),
/// so neither the plugin nor its caller ever holds the whole value. They live in the hot
/// tier's SQLite file (``LocalStore``), count against `maxBytes` like JSON values (open
/// uploads count too, from their first append), and take
/// `ttl` and `ifVersion`; a key holds either a JSON value or a streamed one, and a save of
/// either kind replaces the other.
extension StoragePlugin {
    static let uploadFields: Set<String> = ["key", "options"]
    static let appendFields: Set<String> = ["upload", "offset", "data"]
    static let commitFields: Set<String> = ["upload", "size"]
    static let abortFields: Set<String> = ["upload"]
    static let readFields: Set<String> = ["key", "offset", "length", "version"]

    /// How many chunks of dead streams one cleanup transaction deletes, and the most
    /// transactions of one purge round.
    static let deadChunkBatch = 16
    static let deadChunkRounds = 64

    /// `{key, options?: {ttl?, ifVersion?}}` → `{upload, key, maxChunk}`: opens an upload. The
    /// `upload` id is a secret of the caller's (another namespace cannot use it); `ttl` counts
    /// from the commit, and `ifVersion` is checked at the commit.
    func upload(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: Self.uploadFields, allowNull: false)
        let key = try StorageRequest.key(fields)
        if let options = fields.object["options"], case .object(let object) = options, object["encrypt"] != nil || object["compress"] != nil {
            throw .invalidPayload(
                "payload.options.encrypt and .compress are not available for streamed values: they are stored as sent (encrypt or compress the bytes before the upload)")
        }
        let options = try StorageRequest.options(fields, allowIfVersion: true)
        let stream = Self.newColdRef()
        let stored = space.storedKey(key)
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            try await self.onWriter { () throws(CSOPError) in
                try self.local.beginUpload(
                    stream: stream, key: stored, ttl: options.ttl, ifVersion: options.ifVersion, range: space.range,
                    maxUploads: self.configuration.maxUploads, callID: call.id, commit: { call.beginCommit() })
            }
            return .value(["upload": .string(stream), "key": .string(key), "maxChunk": .int(Int64(StorageLimits.maxChunkBytes))])
        }
    }

    /// `{upload, offset, data}` → `{upload, offset, length}`: writes `data` (base64, 1 byte to
    /// `maxChunk`) at byte `offset` of the upload. Appends may come in any order and be repeated
    /// (the same offset again replaces that chunk); the commit checks that they cover the value
    /// without a gap or overlap.
    func append(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: Self.appendFields, allowNull: false)
        let stream = try Self.uploadID(fields)
        guard let offset = try fields.int("offset", in: 0...configuration.maxStreamSize) else {
            throw .invalidPayload("payload.offset is required: the byte of the value this chunk starts at (0 for the first)")
        }
        let text = try fields.requiredString("data", maxLength: (StorageLimits.maxChunkBytes / 3 + 1) * 4 + 4)
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            guard let decoded = Data(base64Encoded: text) else {
                throw .invalidPayload("payload.data must be base64 (RFC 4648, with padding)")
            }
            let bytes = [UInt8](decoded)
            if bytes.count > StorageLimits.maxChunkBytes {
                throw .invalidPayload("payload.data holds \(bytes.count) bytes; one append carries at most \(StorageLimits.maxChunkBytes)")
            }
            if offset + Int64(bytes.count) > self.configuration.maxStreamSize {
                throw .invalidPayload("the value would pass config.maxStreamSize (\(self.configuration.maxStreamSize) bytes)")
            }
            if let maxBytes = self.configuration.maxBytes, offset + Int64(bytes.count) > maxBytes {
                throw CSOPError(.quotaExceeded, "the value would pass config.maxBytes (\(maxBytes) bytes) by itself")
            }
            try await self.onWriter { () throws(CSOPError) in
                try self.local.appendChunk(
                    stream: stream, namespace: space.prefix, offset: offset, bytes: bytes, callID: call.id, waiting: Self.lockWait(call),
                    commit: { call.beginCommit() })
            }
            return .value(["upload": .string(stream), "offset": .int(offset), "length": .int(Int64(bytes.count))])
        }
    }

    /// `{upload, size?}` → `{key, location: "stream", size, version}`: makes the upload the
    /// key's value, atomically; with `size`, only if the upload holds exactly that many bytes.
    /// A failed commit (a gap, a size mismatch, `ifVersion`, the quota) leaves the upload open.
    func commit(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: Self.commitFields, allowNull: false)
        let stream = try Self.uploadID(fields)
        let expected = try fields.int("size", in: 0...Int64.max)
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            let (upload, size, result) = try await self.onWriter { () throws(CSOPError) in
                try self.local.commitUpload(stream: stream, namespace: space.prefix, expectedSize: expected, callID: call.id, commit: { call.beginCommit() })
            }
            let version = result.versions[0]
            self.metrics.wrote(cold: false, bytes: size)
            self.watches.announce(WatchRegistry.Change(key: upload.key, version: version, deleted: false))
            await self.deleteCold(result.obsoleteColdRefs, callID: call.id)
            return .value([
                "key": .string(StorageNamespace.userKey(upload.key)), "location": "stream", "size": .int(size), "version": .int(version),
            ])
        }
    }

    /// `{upload}` → `{aborted: true}`: ends the upload without saving; its chunks are deleted
    /// in the background.
    func abort(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: Self.abortFields, allowNull: false)
        let stream = try Self.uploadID(fields)
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            try await self.onWriter { () throws(CSOPError) in try self.local.abortUpload(stream: stream, namespace: space.prefix, callID: call.id, commit: { call.beginCommit() }) }
            return .value(["aborted": true])
        }
    }

    /// `{key, offset?, length?, version?}` → `{key, version, size, offset, length, done, data}`:
    /// up to `length` bytes (default 1 MiB, at most `maxChunk`) of a streamed value from
    /// `offset` (default 0), as base64, read in one snapshot. Pass the `version` of the first
    /// slice with the next ones: if the key changes meanwhile, the read fails with `CONFLICT`
    /// instead of mixing two values. `done` is true when the slice reaches the end.
    func read(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: Self.readFields, allowNull: false)
        let key = space.storedKey(try StorageRequest.key(fields))
        let offset = try fields.int("offset", in: 0...Int64.max) ?? 0
        let length = try fields.int("length", in: 1...Int64(StorageLimits.maxChunkBytes)) ?? StorageLimits.defaultReadBytes
        let version = try fields.int("version", in: 1...Int64.max)
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            guard let slice = try self.local.readStream(key: key, offset: offset, length: length, version: version, callID: call.id) else {
                throw Self.notFound(key)
            }
            if offset == 0 { self.metrics.read(cold: false) }  // A value read, not each slice.
            let data = Data(slice.bytes).base64EncodedString()
            let userKey = StorageNamespace.userKey(key)
            var writer = JSONWriter(capacity: data.utf8.count + userKey.utf8.count + 128)
            writer.append("{\"key\":")
            writer.writeString(userKey)
            writer.append(",\"version\":")
            writer.writeInt(slice.version)
            writer.append(",\"size\":")
            writer.writeInt(slice.size)
            writer.append(",\"offset\":")
            writer.writeInt(slice.offset)
            writer.append(",\"length\":")
            writer.writeInt(Int64(slice.bytes.count))
            writer.append(slice.offset + Int64(slice.bytes.count) >= slice.size ? ",\"done\":true,\"data\":\"" : ",\"done\":false,\"data\":\"")
            writer.appendRaw(data.utf8)  // Base64 needs no escaping.
            writer.append("\"}")
            return .raw(writer.bytes)
        }
    }

    /// Ends idle uploads and deletes the chunks of dead streams, in bounded transactions on the
    /// writer thread (part of every purge round). A failure is logged; the next round retries.
    func purgeStreams() async {
        let idleBefore = WallClock.milliseconds() - configuration.uploadIdleTimeout
        do throws(CSOPError) {
            guard try local.hasStreamWork(idleBefore: idleBefore, callID: 0) else { return }
            var (uploads, chunks) = (0, 0)
            for _ in 0..<Self.deadChunkRounds {
                let round = try await onWriter { () throws(CSOPError) in
                    try self.local.purgeStreams(idleBefore: idleBefore, chunkLimit: Self.deadChunkBatch, callID: 0)
                }
                uploads += round.uploads
                chunks += round.chunks
                if round.chunks < Self.deadChunkBatch || Task.isCancelled { break }
            }
            if uploads > 0 { log(.info, "storage: ended \(uploads) uploads idle for over \(configuration.uploadIdleTimeout) ms (config.uploadIdleTimeout)") }
            if chunks > 0 { log(.debug, "storage: deleted \(chunks) chunks of streamed values no key needs") }
        } catch {
            log(.warning, "storage: cleaning up streamed values failed (the next round retries): \(error.message)")
        }
    }

    /// `payload.upload`: the 32 hex digits `storage.upload` answered.
    private static func uploadID(_ fields: Fields) throws(CSOPError) -> String {
        let id = try fields.requiredString("upload", maxLength: 32)
        guard id.utf8.count == 32, id.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            throw .invalidPayload("payload.upload must be the id storage.upload answered (32 hex digits)")
        }
        return id
    }
}
