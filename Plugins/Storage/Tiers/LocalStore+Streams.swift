import CSOPCore

/// Streamed values: uploads in chunks, commits, ranged reads and the cleanup of chunks no key
/// needs (the tables are described at ``StorageSQL``). Every step is one transaction of
/// bounded size: a value of any size is never whole in memory.
extension LocalStore {
    /// An upload as its row holds it.
    struct Upload: Sendable {
        /// The stored key it will be committed under.
        var key: String
        var ttl: Int64?
        var ifVersion: Int64?
    }

    /// A slice of a streamed value.
    struct StreamSlice: Sendable {
        var version: Int64
        /// The whole value's size.
        var size: Int64
        var offset: Int64
        var bytes: [UInt8]
    }

    /// Starts an upload of stored key `key` as stream `stream`, unless its namespace (`range`)
    /// has `maxUploads` open already; `commit` is asked right before the commit.
    func beginUpload(
        stream: String, key: String, ttl: Int64?, ifVersion: Int64?, range: (lower: [UInt8], upper: [UInt8]), maxUploads: Int, callID: UInt64,
        commit: () -> Bool
    ) throws(CSOPError) {
        let opened = try transaction(callID: callID, waiting: .upTo(milliseconds: Self.readBusyWaitMilliseconds), commit: commit) {
            state throws(CSOPError) -> Bool in
            try Self.sqlite { () throws(SQLiteError) -> Bool in
                let count = try state.connection.statement(.uploadCount)
                defer { count.reset() }
                count.bindTextBytes(1, range.lower)
                count.bindTextBytes(2, range.upper)
                _ = try count.step()
                if count.int64(0) >= Int64(maxUploads) { return false }
                let begin = try state.connection.statement(.uploadBegin)
                defer { begin.reset() }
                begin.bind(1, stream)
                begin.bind(2, key)
                if let ttl { begin.bind(3, ttl) } else { begin.bindNull(3) }
                if let ifVersion { begin.bind(4, ifVersion) } else { begin.bindNull(4) }
                begin.bind(5, WallClock.milliseconds())
                _ = try begin.step()
                return true
            }
        }.waited()
        guard opened else {
            throw CSOPError(
                .quotaExceeded,
                "\(maxUploads) uploads are open in this namespace already (config.maxUploads); commit or abort one (storage.commit, storage.abort) or let it expire")
        }
    }

    /// Writes `bytes` at `offset` of upload `stream` (replacing a chunk at the same offset: a
    /// repeated append is harmless) if the upload exists in `namespace`; `commit` is asked
    /// right before the commit. With `maxBytes`, what the namespace's values and open uploads
    /// hold together stays within it: uploads never committed cannot fill the disk either.
    func appendChunk(stream: String, namespace: [UInt8], offset: Int64, bytes: [UInt8], callID: UInt64, waiting: Waiting, commit: () -> Bool) throws(CSOPError) {
        _ = try transaction(callID: callID, waiting: waiting, commit: commit) { state throws(CSOPError) in
            let connection = state.connection
            let growth = try Self.sqlite { () throws(SQLiteError) -> Int64 in
                let replaced = try connection.statement(.chunkLength)
                defer { replaced.reset() }
                replaced.bind(1, stream)
                replaced.bind(2, offset)
                return Int64(bytes.count) - (try replaced.step() ? replaced.int64(0) : 0)
            }
            let owner = try Self.sqlite { () throws(SQLiteError) -> String? in
                let touch = try connection.statement(.uploadTouch)
                defer { touch.reset() }
                touch.bind(1, stream)
                touch.bind(2, WallClock.milliseconds())
                touch.bind(3, growth)
                guard try touch.step() else { return nil }
                let key = touch.text(0)
                _ = try touch.step()
                return key
            }
            guard let owner, StorageNamespace.prefix(ofStored: owner) == namespace else { throw Self.uploadNotFound }
            if let maxBytes, growth > 0 {
                // This upload's row counts the append already; the transaction undoes it if refused.
                let (values, uploads) = try Self.sqlite { () throws(SQLiteError) -> (Int64, Int64) in
                    (try total(of: namespace, &state), try Self.uploadBytes(of: namespace, connection))
                }
                if values + uploads > maxBytes {
                    let whose = namespace.isEmpty ? "storage" : "this tenant's storage"
                    throw CSOPError(
                        .quotaExceeded,
                        "\(whose) holds \(values) bytes of values and \(uploads - growth) bytes of open uploads; this append's \(growth) more would pass config.maxBytes \(maxBytes); commit or abort uploads (storage.abort), delete keys, or raise maxBytes")
                }
            }
            try Self.sqlite { () throws(SQLiteError) in
                let write = try connection.statement(.chunkWrite)
                defer { write.reset() }
                write.bind(1, stream)
                write.bind(2, offset)
                write.bind(3, Int64(bytes.count))
                write.bind(blob: bytes, index: 4)
                _ = try write.step()
            }
        }.waited()
    }

    /// Ends upload `stream` of `namespace` and makes its chunks the value of its key, in one
    /// transaction: the chunks must cover 0..<size without a gap or overlap (and `size` must be
    /// `expectedSize` when given). Returns the upload, its size and the key's new version.
    /// - Throws: `UPLOAD_NOT_FOUND`, `CONFLICT` (ifVersion, a gap, a size mismatch: the upload
    ///   stays open), `QUOTA_EXCEEDED`.
    func commitUpload(
        stream: String, namespace: [UInt8], expectedSize: Int64?, callID: UInt64, commit: () -> Bool
    ) throws(CSOPError) -> (upload: Upload, size: Int64, result: WriteResult) {
        try transaction(callID: callID, waiting: .upTo(milliseconds: Self.readBusyWaitMilliseconds), commit: commit) { state throws(CSOPError) in
            let connection = state.connection
            let upload = try Self.endUpload(stream, of: namespace, connection)
            // The chunks in offset order must each start where the one before ends.
            let (size, stray) = try Self.sqlite { () throws(SQLiteError) -> (Int64, Int64?) in
                let layout = try connection.statement(.chunkLayout)
                defer { layout.reset() }
                layout.bind(1, stream)
                var next: Int64 = 0
                while try layout.step() {
                    guard layout.int64(0) == next else { return (next, layout.int64(0)) }
                    next += layout.int64(1)
                }
                return (next, nil)
            }
            if let stray {
                let what = stray > size ? "a gap: bytes \(size)..<\(stray) are missing" : "an overlap: a chunk at \(stray) starts inside the one before, which ends at \(size)"
                throw CSOPError(.conflict, "the upload's chunks leave \(what); append each byte range once, then commit again")
            }
            if let expectedSize, expectedSize != size {
                throw CSOPError(.conflict, "the upload holds \(size) bytes, not payload.size \(expectedSize); append the rest, then commit again")
            }
            let write = Write(
                key: upload.key, tier: .stream, size: size, storedSize: size, flags: 0, bytes: [], coldRef: stream, ifVersion: upload.ifVersion,
                expires: upload.ttl.map { WallClock.milliseconds() + $0 }, keyId: nil)
            return (upload, size, try writeRows([write], &state))
        }.waited()
    }

    /// Ends upload `stream` of `namespace` without saving; its chunks are deleted in the
    /// background. `commit` is asked right before the commit.
    func abortUpload(stream: String, namespace: [UInt8], callID: UInt64, commit: () -> Bool) throws(CSOPError) {
        _ = try transaction(callID: callID, waiting: .upTo(milliseconds: Self.readBusyWaitMilliseconds), commit: commit) { state throws(CSOPError) in
            _ = try Self.endUpload(stream, of: namespace, state.connection)
            try Self.sqlite { () throws(SQLiteError) in try Self.markDead(stream, state.connection) }
        }.waited()
    }

    /// Up to `length` bytes of the streamed value of stored key `key` from `offset`, read in one
    /// snapshot; nil when the key does not exist.
    /// - Throws: `NOT_STREAMED` for a JSON value, `CONFLICT` when `version` is given and the key
    ///   is at another, `INVALID_PAYLOAD` for an offset past the end.
    func readStream(key: String, offset: Int64, length: Int64, version: Int64?, callID: UInt64) throws(CSOPError) -> StreamSlice? {
        enum Outcome { case missing, notStreamed, otherVersion(Int64), pastEnd(Int64), slice(StreamSlice), damaged }
        let outcome = try withReader(callID: callID) { connection throws(SQLiteError) -> Outcome in
            try Self.run(connection, .beginRead)
            defer { try? Self.run(connection, .commit) }
            let row = try connection.statement(.readForWrite)
            defer { row.reset() }
            row.bind(1, key)
            guard try row.step() else { return .missing }
            if !row.isNull(4), row.int64(4) <= WallClock.milliseconds() { return .missing }
            guard row.int64(0) == Tier.stream.rawValue, !row.isNull(3) else { return .notStreamed }
            let (current, size, stream) = (row.int64(1), row.int64(2), row.text(3))
            if let version, version != current { return .otherVersion(current) }
            if offset > size { return .pastEnd(size) }
            let end = min(size, offset + length)
            var slice = StreamSlice(version: current, size: size, offset: offset, bytes: [])
            guard end > offset else { return .slice(slice) }
            let start = try connection.statement(.chunkStart)
            defer { start.reset() }
            start.bind(1, stream)
            start.bind(2, offset)
            guard try start.step(), !start.isNull(0) else { return .damaged }
            let range = try connection.statement(.chunkRange)
            defer { range.reset() }
            range.bind(1, stream)
            range.bind(2, start.int64(0))
            range.bind(3, end)
            slice.bytes.reserveCapacity(Int(end - offset))
            var position = start.int64(0)
            while try range.step() {
                guard range.int64(0) == position else { return .damaged }
                let chunk = range.blob(1)
                let from = Int(max(0, offset - position)), to = Int(min(Int64(chunk.count), end - position))
                if from < to { slice.bytes.append(contentsOf: chunk[from..<to]) }
                position += Int64(chunk.count)
            }
            return Int64(slice.bytes.count) == end - offset ? .slice(slice) : .damaged
        }
        switch outcome {
        case .missing: return nil
        case .slice(let slice): return slice
        case .notStreamed:
            throw CSOPError(.notStreamed, "'\(StorageNamespace.userKey(key))' holds a JSON value, not a streamed one; read it with storage.get")
        case .otherVersion(let current):
            throw CSOPError(
                .conflict, "'\(StorageNamespace.userKey(key))' is at version \(current), not payload.version \(version ?? 0): it changed while being read; read it again from offset 0")
        case .pastEnd(let size):
            throw .invalidPayload("payload.offset \(offset) is past the end of '\(StorageNamespace.userKey(key))' (\(size) bytes)")
        case .damaged:
            throw CSOPError(.executionFailed, "the chunks of '\(StorageNamespace.userKey(key))' in the storage database at \(path) are damaged or missing")
        }
    }

    /// One round of stream cleanup: uploads idle since before `idleBefore` are ended (their
    /// chunks are then dead), and up to `chunkLimit` chunks of dead streams are deleted. Returns
    /// how many uploads were ended and chunks deleted.
    func purgeStreams(idleBefore: Int64, chunkLimit: Int, callID: UInt64) throws(CSOPError) -> (uploads: Int, chunks: Int) {
        try transaction(callID: callID, waiting: .upTo(milliseconds: Self.readBusyWaitMilliseconds), commit: { true }) {
            state throws(CSOPError) -> (uploads: Int, chunks: Int) in
            try Self.sqlite { () throws(SQLiteError) -> (uploads: Int, chunks: Int) in
                let connection = state.connection
                let idle = try connection.statement(.uploadsIdle)
                defer { idle.reset() }
                idle.bind(1, idleBefore)
                var streams: [String] = []
                while try idle.step() { streams.append(idle.text(0)) }
                idle.reset()
                for stream in streams { try Self.markDead(stream, connection) }
                let chunks = try connection.statement(.deadChunksDelete)
                defer { chunks.reset() }
                chunks.bind(1, Int64(chunkLimit))
                _ = try chunks.step()
                let deleted = Int(connection.changes)
                if deleted < chunkLimit { try Self.run(connection, .deadStreamsDone) }
                return (streams.count, deleted)
            }
        }.waited()
    }

    /// Whether ``purgeStreams(idleBefore:chunkLimit:callID:)`` has anything to do (a read,
    /// so an idle store's purge rounds never take the write lock for it).
    func hasStreamWork(idleBefore: Int64, callID: UInt64) throws(CSOPError) -> Bool {
        try withReader(callID: callID) { connection throws(SQLiteError) in
            let statement = try connection.statement(.streamWork)
            defer { statement.reset() }
            statement.bind(1, idleBefore)
            _ = try statement.step()
            return statement.int64(0) != 0
        }
    }

    /// Deletes the row of upload `stream` if it belongs to `namespace` (inside the caller's
    /// transaction, which rolls it back if anything after fails) and returns what it held.
    /// - Throws: `UPLOAD_NOT_FOUND` when there is no such upload in `namespace`.
    private static func endUpload(_ stream: String, of namespace: [UInt8], _ connection: SQLiteConnection) throws(CSOPError) -> Upload {
        let upload = try sqlite { () throws(SQLiteError) -> Upload? in
            let end = try connection.statement(.uploadEnd)
            defer { end.reset() }
            end.bind(1, stream)
            guard try end.step() else { return nil }
            let upload = Upload(key: end.text(0), ttl: end.isNull(1) ? nil : end.int64(1), ifVersion: end.isNull(2) ? nil : end.int64(2))
            _ = try end.step()
            return upload
        }
        guard let upload, StorageNamespace.prefix(ofStored: upload.key) == namespace else { throw uploadNotFound }
        return upload
    }

    private static func markDead(_ stream: String, _ connection: SQLiteConnection) throws(SQLiteError) {
        let dead = try connection.statement(.streamDead)
        defer { dead.reset() }
        dead.bind(1, stream)
        _ = try dead.step()
    }

    /// An upload id is a capability: never in a message.
    static let uploadNotFound = CSOPError(
        .uploadNotFound,
        "payload.upload names no open upload of yours: it was committed, aborted or idle too long (config.uploadIdleTimeout); start again with storage.upload")
}
