public import CSOPCore
import Foundation

extension CSOPHost {
    /// The bytes one `storage.append` of ``saveStream(_:from:ttl:ifVersion:caller:timeout:)``
    /// carries, and one `storage.read` of ``readStream(_:caller:timeout:)`` asks for.
    public static let streamChunkBytes = 1 << 20

    /// Saves the bytes `chunks` yields as the streamed value of `key` (storage's
    /// `storage.upload`, `storage.append`…, `storage.commit`), holding at most about two chunks
    /// of ``streamChunkBytes`` in memory whatever the value's size. The value replaces the
    /// key's only when every byte is stored (the commit is atomic); if anything fails — the
    /// sequence throws, an append fails, the task is cancelled — the upload is aborted and
    /// the key is left as it was.
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
        let opened = try await dispatch("storage.upload", ["key": .string(key), "options": .object(options)], options: step, caller: caller).value()
        guard case .string(let upload)? = opened["upload"] else {
            throw CSOPError(.pluginFault, "storage.upload answered no upload id")
        }
        var offset: Int64 = 0
        var pending: [UInt8] = []
        pending.reserveCapacity(Self.streamChunkBytes)
        func append(_ bytes: ArraySlice<UInt8>) async throws(CSOPError) {
            let payload: JSONValue = ["upload": .string(upload), "offset": .int(offset), "data": .string(Data(bytes).base64EncodedString())]
            _ = try await dispatch("storage.append", payload, options: step, caller: caller).value()
            offset += Int64(bytes.count)
        }
        do {
            for try await chunk in chunks {
                try Task.checkCancellation()
                pending.append(contentsOf: chunk)
                while pending.count >= Self.streamChunkBytes {
                    try await append(pending[..<Self.streamChunkBytes])
                    pending.removeFirst(Self.streamChunkBytes)
                }
            }
            if !pending.isEmpty { try await append(pending[...]) }
            try Task.checkCancellation()
            return try await dispatch("storage.commit", ["upload": .string(upload), "size": .int(offset)], options: step, caller: caller).value()
        } catch {
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
/// Each iteration reads from the start.
public struct StoredValueStream: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public typealias Failure = CSOPError

    let host: CSOPHost
    let key: String
    let caller: Caller?
    let options: RequestOptions

    public func makeAsyncIterator() -> Iterator { Iterator(stream: self) }

    /// Reads the next slice when asked; `size` and `version` are known after the first.
    public struct Iterator: AsyncIteratorProtocol, Sendable {
        let stream: StoredValueStream
        var offset: Int64 = 0
        var done = false
        /// The value's size and version, from the first slice on.
        public private(set) var size: Int64?
        public private(set) var version: Int64?

        init(stream: StoredValueStream) { self.stream = stream }

        /// The next slice, or nil after the last; a value of 0 bytes yields nothing.
        public mutating func next(isolation actor: isolated (any Actor)?) async throws(CSOPError) -> [UInt8]? {
            while !done {
                var payload: JSONObject = ["key": .string(stream.key), "offset": .int(offset), "length": .int(Int64(CSOPHost.streamChunkBytes))]
                if let version { payload["version"] = .int(version) }
                let answer = try await stream.host.dispatch("storage.read", .object(payload), options: stream.options, caller: stream.caller).value()
                guard case .string(let text)? = answer["data"], let data = Data(base64Encoded: text), case .int(let size)? = answer["size"],
                    case .int(let version)? = answer["version"], case .bool(let last)? = answer["done"]
                else {
                    throw CSOPError(.pluginFault, "storage.read answered no {data, size, version, done}")
                }
                (self.size, self.version, done) = (size, version, last)
                offset += Int64(data.count)
                if !data.isEmpty { return [UInt8](data) }
            }
            return nil
        }

        public mutating func next() async throws(CSOPError) -> [UInt8]? {
            try await next(isolation: nil)
        }
    }
}

extension Response {
    /// The answer's data, or its error thrown.
    func value() throws(CSOPError) -> JSONValue {
        switch outcome {
        case .success(let raw): return raw.value
        case .failure(let error): throw error
        }
    }
}
