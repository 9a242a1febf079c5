public import CSOPCore
import Foundation

extension CSOPHost {
    /// The bytes one `storage.append` of ``saveStream(_:from:ttl:ifVersion:caller:timeout:)``
    /// carries, and one `storage.read` of ``readStream(_:caller:timeout:)`` asks for.
    public static let streamChunkBytes = 1 << 20

    /// Saves the bytes `chunks` yields as the streamed value of `key` (storage's
    /// `storage.upload`, `storage.append`…, `storage.commit`). Two appends of
    /// ``streamChunkBytes`` run at a time (one is encoded while the other is stored), so
    /// memory stays at a few chunks whatever the value's size. The value replaces the key's
    /// only when every byte is stored (the commit is atomic); if anything fails — the sequence
    /// throws, an append fails, the task is cancelled — the upload is aborted and the key is
    /// left as it was.
    ///
    /// - Parameters:
    ///   - ttl: milliseconds the key lives after the commit; nil for ever.
    ///   - ifVersion: commit only if the key is at this version then (0: does not exist).
    ///   - caller: who saves (a tenant's key space); nil for the local owner.
    ///   - timeout: milliseconds each step (one append, the commit) may take.
    /// - Returns: the commit's answer, `{key, location: "stream", size, version}`.
    /// - Throws: the storage error (a ``CSOPError`` with its code), or the error `chunks` threw.
    public func saveStream<Chunks: AsyncSequence>(
        _ key: String, from chunks: Chunks, ttl: Int64? = nil, ifVersion: Int64? = nil, caller: Caller? = nil,
        timeout: Double = RequestOptions.defaultTimeout
    ) async throws -> JSONValue where Chunks.Element == [UInt8] {
        var options = JSONObject()
        if let ttl { options["ttl"] = .int(ttl) }
        if let ifVersion { options["ifVersion"] = .int(ifVersion) }
        let step = RequestOptions(timeout: timeout)
        let opened = try await dispatch("storage.upload", ["key": .string(key), "options": .object(options)], options: step, caller: caller).outcome.get().value
        guard case .string(let upload)? = opened["upload"] else {
            throw CSOPError(.pluginFault, "storage.upload answered no upload id")
        }
        var offset: Int64 = 0
        var pending: [UInt8] = []
        pending.reserveCapacity(Self.streamChunkBytes)
        // The append running while the next piece is gathered and sent.
        var running: Task<Result<Void, CSOPError>, Never>?
        func append(_ bytes: [UInt8]) async throws(CSOPError) {
            let at = offset
            offset += Int64(bytes.count)
            let previous = running
            running = Task {
                let payload: JSONValue = ["upload": .string(upload), "offset": .int(at), "data": .string(Data(bytes).base64EncodedString())]
                do throws(CSOPError) {
                    _ = try await self.dispatch("storage.append", payload, options: step, caller: caller).outcome.get()
                    return .success(())
                } catch {
                    return .failure(error)
                }
            }
            try await previous?.value.get()
        }
        do {
            for try await chunk in chunks {
                try Task.checkCancellation()
                // Fill `pending` up to one append at a time: each byte is copied once, whatever
                // the size of the pieces.
                var start = chunk.startIndex
                while start < chunk.endIndex {
                    let end = start + min(Self.streamChunkBytes - pending.count, chunk.endIndex - start)
                    pending.append(contentsOf: chunk[start..<end])
                    start = end
                    if pending.count == Self.streamChunkBytes {
                        try await append(pending)
                        pending.removeAll(keepingCapacity: true)
                    }
                }
            }
            if !pending.isEmpty { try await append(pending) }
            try await running?.value.get()
            running = nil
            try Task.checkCancellation()
            return try await dispatch("storage.commit", ["upload": .string(upload), "size": .int(offset)], options: step, caller: caller).outcome.get().value
        } catch {
            // The append still running must end before the abort, or it could find no upload.
            _ = await running?.value
            _ = await dispatch("storage.abort", ["upload": .string(upload)], options: step, caller: caller)
            throw error
        }
    }

    /// The streamed value of `key`, read in slices of ``streamChunkBytes`` as it is iterated
    /// (storage's `storage.read`): memory stays at about one slice whatever the value's size.
    /// Every slice comes from the version the first one read; if the key changes meanwhile,
    /// the iteration throws `CONFLICT` instead of mixing two values.
    public func readStream(_ key: String, caller: Caller? = nil, timeout: Double = RequestOptions.defaultTimeout) -> StoredValueStream {
        StoredValueStream(host: self, key: key, caller: caller, options: RequestOptions(timeout: timeout))
    }
}

/// A streamed value's bytes, slice by slice (``CSOPHost/readStream(_:caller:timeout:)``).
/// Each iteration reads from the start, one slice ahead of the one it yields (so reading the
/// next overlaps with using this one); an iteration given up early leaves that one read to
/// finish on its own.
public struct StoredValueStream: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public typealias Failure = CSOPError

    let host: CSOPHost
    let key: String
    let caller: Caller?
    let options: RequestOptions

    public func makeAsyncIterator() -> Iterator { Iterator(stream: self) }

    /// One `storage.read` answer.
    struct Slice: Sendable {
        var bytes: [UInt8]
        var size: Int64
        var version: Int64
        var done: Bool
    }

    /// Reads slices as they are asked for; `size` and `version` are known after the first.
    public struct Iterator: AsyncIteratorProtocol, Sendable {
        let stream: StoredValueStream
        var offset: Int64 = 0
        var done = false
        /// The read of the slice at `offset`, started when the one before was yielded.
        var ahead: Task<Result<Slice, CSOPError>, Never>?
        /// The value's size and version, from the first slice on.
        public private(set) var size: Int64?
        public private(set) var version: Int64?

        init(stream: StoredValueStream) { self.stream = stream }

        /// The next slice, or nil after the last; a value of 0 bytes yields nothing.
        public mutating func next(isolation actor: isolated (any Actor)?) async throws(CSOPError) -> [UInt8]? {
            while !done {
                let slice: Slice
                if let ahead {
                    self.ahead = nil
                    slice = try await ahead.value.get()
                } else {
                    slice = try await Self.read(stream, offset: offset, version: version)
                }
                (size, version, done) = (slice.size, slice.version, slice.done)
                offset += Int64(slice.bytes.count)
                if !done {
                    let (stream, offset, version) = (stream, offset, slice.version)
                    ahead = Task {
                        do throws(CSOPError) { return .success(try await Self.read(stream, offset: offset, version: version)) } catch { return .failure(error) }
                    }
                }
                if !slice.bytes.isEmpty { return slice.bytes }
            }
            return nil
        }

        public mutating func next() async throws(CSOPError) -> [UInt8]? {
            try await next(isolation: nil)
        }

        static func read(_ stream: StoredValueStream, offset: Int64, version: Int64?) async throws(CSOPError) -> Slice {
            var payload: JSONObject = ["key": .string(stream.key), "offset": .int(offset), "length": .int(Int64(CSOPHost.streamChunkBytes))]
            if let version { payload["version"] = .int(version) }
            let answer = try await stream.host.dispatch("storage.read", .object(payload), options: stream.options, caller: stream.caller).outcome.get().value
            guard case .string(let text)? = answer["data"], let data = Data(base64Encoded: text), case .int(let size)? = answer["size"],
                case .int(let version)? = answer["version"], case .bool(let done)? = answer["done"]
            else {
                throw CSOPError(.pluginFault, "storage.read answered no {data, size, version, done}")
            }
            return Slice(bytes: [UInt8](data), size: size, version: version, done: done)
        }
    }
}
