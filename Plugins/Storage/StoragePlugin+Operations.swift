import CSOPCore
import CSOPPluginKit

extension StoragePlugin {
    /// A value ready for a tier: encoded bytes, flags, when it expires and where it should go.
    struct PreparedSave: Sendable {
        var item: StorageRequest.SaveItem
        var bytes: [UInt8]
        var flags: Int64
        /// `options.ttl` from when the save was prepared, in milliseconds since the Unix epoch.
        var expires: Int64?
        /// The encryption key's id, for an encrypted value.
        var keyId: String?
        var size: Int64 { Int64(item.json.count) }

        /// The index row that keeps this value in the local tier.
        var localWrite: LocalStore.Write {
            LocalStore.Write(
                key: item.key, tier: .local, size: size, storedSize: Int64(bytes.count), flags: flags,
                bytes: bytes, coldRef: nil, ifVersion: item.ifVersion, expires: expires, keyId: keyId)
        }
    }

    static let keyFields: Set<String> = ["key"]
    static let listFields: Set<String> = ["prefix", "limit", "cursor"]

    /// How long a write of `call` may wait for the database lock: its whole timeout (the
    /// host's cancel at the timeout ends the wait at once).
    static func lockWait(_ call: PluginCall) -> LocalStore.Waiting {
        .upTo(milliseconds: max(1, Int(min(call.timeoutMilliseconds, 3_600_000))))
    }

    func prepare(_ item: StorageRequest.SaveItem) throws(CSOPError) -> PreparedSave {
        let (bytes, flags, keyId) = try codec.encode(item.json, key: item.key, compress: item.compress, encrypt: item.encrypt)
        return PreparedSave(item: item, bytes: bytes, flags: flags, expires: item.ttl.map { WallClock.milliseconds() + $0 }, keyId: keyId)
    }

    // MARK: save

    func save(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let item = space.stored(try StorageRequest.save(call.payload))
        if item.json.count > Self.inlineValueLimit || Int64(item.json.count) > configuration.maxLocalSize {
            runLater(call) { () async throws(CSOPError) -> PluginReply in
                let results = try await self.store([try self.prepare(item)], call: call)
                return .raw(results[0])
            }
            return
        }
        let prepared = try prepare(item)
        let commit = { call.beginCommit() }
        guard writesWaiting == 0 else { return saveWaiting(call, prepared) }
        if item.ifVersion == nil {
            let fast = try local.fastSaveLocal(
                key: item.key, size: prepared.size, bytes: prepared.bytes, flags: prepared.flags, expires: prepared.expires, keyId: prepared.keyId, callID: call.id,
                waiting: .never, commit: commit)
            switch fast {
            case .done(let version?):
                watches.announce(WatchRegistry.Change(key: item.key, version: version, deleted: false))
                return call.succeed(rawJSON: self.saveReply(key: item.key, cloud: false, size: prepared.size, version: version, warning: nil))
            case .done(nil): break  // The key is in the cold tier: the full write moves it.
            case .wouldBlock: return saveWaiting(call, prepared)
            }
        }
        guard case .done(let result) = try local.write([prepared.localWrite], callID: call.id, waiting: .never, commit: commit) else {
            return saveWaiting(call, prepared)
        }
        finishSave(call, prepared, result)
    }

    /// A small save whose database was busy: on the writer thread, waiting for the lock.
    private func saveWaiting(_ call: PluginCall, _ prepared: PreparedSave) {
        onWriter(call) { () throws(CSOPError) in
            let result = try self.local.write([prepared.localWrite], callID: call.id, waiting: Self.lockWait(call), commit: { call.beginCommit() })
            self.finishSave(call, prepared, try result.waited())
        }
    }

    private func finishSave(_ call: PluginCall, _ prepared: PreparedSave, _ result: LocalStore.WriteResult) {
        let reply = self.saveReply(key: prepared.item.key, cloud: false, size: prepared.size, version: result.versions[0], warning: nil)
        watches.announce(WatchRegistry.Change(key: prepared.item.key, version: result.versions[0], deleted: false))
        if result.obsoleteColdRefs.isEmpty {
            call.succeed(rawJSON: reply)
        } else {
            runLater(call) { () async throws(CSOPError) -> PluginReply in
                await self.deleteCold(result.obsoleteColdRefs, callID: call.id)
                return .raw(reply)
            }
        }
    }

    /// Saves every item atomically: cold values are uploaded first, then one SQLite
    /// transaction points the index at them, then the cold rows they replace are deleted.
    /// Returns each item's reply.
    func store(_ items: [PreparedSave], call: PluginCall) async throws(CSOPError) -> [[UInt8]] {
        let callID = call.id
        var writes: [LocalStore.Write] = []
        var warnings: [String?] = []
        var uploaded: [String] = []
        writes.reserveCapacity(items.count)
        for prepared in items {
            var write = prepared.localWrite
            var warning: String?
            if prepared.size > configuration.maxLocalSize {
                let limit = "\(prepared.size) bytes, over maxLocalSize \(configuration.maxLocalSize)"
                if let cold {
                    let ref = Self.newColdRef()
                    do throws(ColdStore.Failure) {
                        try await cold.put(
                            ref: ref, key: StorageNamespace.userKey(prepared.item.key), tenant: StorageNamespace.tenant(ofStored: prepared.item.key),
                            bytes: prepared.bytes, callID: callID)
                        uploaded.append(ref)
                        write.tier = .cloud
                        write.coldRef = ref
                        write.bytes = []
                    } catch {
                        if case .unreachable(let reason) = error {
                            warning = "the value is \(limit), but it was stored locally: \(reason)"
                            log(.warning, "storage: '\(StorageNamespace.userKey(prepared.item.key))' kept local: \(reason)")
                        } else {
                            await deleteCold(uploaded, callID: callID)
                            throw error.error
                        }
                    }
                } else {
                    warning = "the value is \(limit), but it was stored locally: no cold tier is configured (config.postgresUrl)"
                }
            }
            writes.append(write)
            warnings.append(warning)
        }
        let result: LocalStore.WriteResult
        do throws(CSOPError) {
            if Task.isCancelled { throw LocalStore.cancelledBeforeCommit }
            let pending = writes
            result = try await onWriter { () throws(CSOPError) in
                try self.local.write(pending, callID: callID, waiting: Self.lockWait(call), commit: { call.beginCommit() }).waited()
            }
        } catch {
            await deleteCold(uploaded, callID: callID)
            throw error
        }
        if watches.watchCount > 0 || watches.feed.load() != nil {
            watches.announce(writes.indices.map { WatchRegistry.Change(key: writes[$0].key, version: result.versions[$0], deleted: false) })
        }
        await deleteCold(result.obsoleteColdRefs, callID: callID)
        return writes.indices.map { i in
            self.saveReply(
                key: writes[i].key, cloud: writes[i].tier == .cloud, size: writes[i].size, version: result.versions[i],
                warning: warnings[i])
        }
    }

    /// Deletes unreferenced cold rows; a failure only leaves orphans, so it is logged.
    func deleteCold(_ refs: [String], callID: UInt64) async {
        guard let cold, !refs.isEmpty else { return }
        do throws(ColdStore.Failure) {
            try await cold.delete(refs: refs, callID: callID)
        } catch {
            log(.warning, "storage: \(refs.count) unreferenced cold-tier rows were left in \(cold.table): \(error.error.message)")
        }
    }

    static func newColdRef() -> String {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64, low = generator.next() as UInt64
        let hex = String(high, radix: 16), lowHex = String(low, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex + String(repeating: "0", count: 16 - lowHex.count) + lowHex
    }

    /// - Parameter key: the stored key; the reply names the user's.
    func saveReply(key stored: String, cloud: Bool, size: Int64, version: Int64, warning: String?) -> [UInt8] {
        metrics.wrote(cold: cloud, bytes: size)
        let key = StorageNamespace.userKey(stored)
        var writer = JSONWriter(capacity: 96 + key.utf8.count)
        writer.append("{\"key\":")
        writer.writeString(key)
        writer.append(cloud ? ",\"location\":\"cloud\",\"size\":" : ",\"location\":\"local\",\"size\":")
        writer.writeInt(size)
        writer.append(",\"version\":")
        writer.writeInt(version)
        if let warning {
            writer.append(",\"warning\":")
            writer.writeString(warning)
        }
        writer.append("}")
        return writer.bytes
    }

    // MARK: get

    func get(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: Self.keyFields, allowNull: false)
        let key = space.storedKey(try StorageRequest.key(fields))
        guard let row = try local.read(key, callID: call.id) else { throw Self.notFound(key) }
        if row.tier == .stream { throw Self.streamed(key) }
        metrics.read(cold: row.tier != .local)
        if row.tier == .local {
            call.succeed(rawJSON: try codec.decode(row.bytes, flags: row.flags, keyId: row.keyId, key: key))
            return
        }
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            // The cold tier's round trip to PostgreSQL, as a span of its own when traced.
            let start = call.isTraced ? WallClock.nanoseconds() : 0
            let json: [UInt8]?
            do throws(CSOPError) {
                json = try await self.resolveValue(key, first: row, callID: call.id)
            } catch {
                if call.isTraced { call.recordSpan("storage.cold.get", start: start, end: WallClock.nanoseconds(), error: error.code.rawValue) }
                throw error
            }
            if call.isTraced {
                call.recordSpan("storage.cold.get", start: start, end: WallClock.nanoseconds(), attributes: ["storage.bytes": .int(Int64(json?.count ?? 0))])
            }
            guard let json else { throw Self.notFound(key) }
            return .raw(json)
        }
    }

    /// The JSON of a key's row (`key` as stored), fetching it from the cold tier when the index
    /// placed it there and following a concurrent move; nil when the key was deleted meanwhile.
    func resolveValue(_ key: String, first: LocalStore.Row, callID: UInt64) async throws(CSOPError) -> [UInt8]? {
        var row = first
        for _ in 0..<5 {
            if row.tier == .local { return try codec.decode(row.bytes, flags: row.flags, keyId: row.keyId, key: key) }
            if row.tier == .stream { throw Self.streamed(key) }
            guard let cold else {
                throw CSOPError(
                    .notConnected, "'\(StorageNamespace.userKey(key))' is in the cold tier, but no cold tier is configured (config.postgresUrl)")
            }
            let bytes: [UInt8]?
            do throws(ColdStore.Failure) {
                bytes = try await cold.get(ref: row.coldRef ?? "", callID: callID)
            } catch {
                throw error.error
            }
            if let bytes { return try codec.decode(bytes, flags: row.flags, keyId: row.keyId, key: key) }
            // The row was replaced while we read: look at the index again.
            guard let next = try local.read(key, callID: callID) else { return nil }
            row = next
        }
        throw CSOPError(.executionFailed, "'\(StorageNamespace.userKey(key))' kept moving between tiers while being read; retry", retryable: true)
    }

    /// - Parameter key: the stored key; the message names the user's.
    static func streamed(_ key: String) -> CSOPError {
        CSOPError(.streamedValue, "'\(StorageNamespace.userKey(key))' holds a streamed value; read it in slices with storage.read")
    }

    /// - Parameter key: the stored key; the message names the user's.
    static func notFound(_ key: String) -> CSOPError {
        CSOPError(.keyNotFound, "no value is stored under '\(StorageNamespace.userKey(key))'")
    }

    // MARK: delete

    func delete(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: Self.keyFields, allowNull: false)
        let key = space.storedKey(try StorageRequest.key(fields))
        if writesWaiting == 0, case .done(let outcome) = try local.delete(key, callID: call.id, waiting: .never, commit: { call.beginCommit() }) {
            return finishDelete(call, key, outcome)
        }
        onWriter(call) { () throws(CSOPError) in
            let outcome = try self.local.delete(key, callID: call.id, waiting: Self.lockWait(call), commit: { call.beginCommit() })
            self.finishDelete(call, key, try outcome.waited())
        }
    }

    private func finishDelete(_ call: PluginCall, _ key: String, _ outcome: LocalStore.Deletion) {
        if outcome.deleted { watches.announce(WatchRegistry.Change(key: key, version: outcome.version, deleted: true)) }
        var writer = JSONWriter()
        writer.append(outcome.deleted ? "{\"deleted\":true,\"key\":" : "{\"deleted\":false,\"key\":")
        writer.writeString(StorageNamespace.userKey(key))
        writer.append("}")
        let reply = writer.bytes
        guard let coldRef = outcome.coldRef else { return call.succeed(rawJSON: reply) }
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            await self.deleteCold([coldRef], callID: call.id)
            return .raw(reply)
        }
    }

    // MARK: list

    func list(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: Self.listFields, allowNull: false)
        let prefix = try fields.string("prefix", nonEmpty: false, maxLength: StorageLimits.maxKeyBytes)
        let cursor = try fields.string("cursor", nonEmpty: false, maxLength: StorageLimits.maxKeyBytes)
        let limit = try fields.int("limit", in: 1...StorageLimits.maxListLimit) ?? StorageLimits.defaultListLimit
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            var keys = try self.local.list(
                range: space.range(startingWith: prefix), after: cursor.map(space.storedKey), limit: limit + 1, callID: call.id
            ).map(StorageNamespace.userKey)
            let more = keys.count > Int(limit)
            if more { keys.removeLast() }
            var writer = JSONWriter(capacity: keys.count * 24 + 32)
            writer.append("{\"keys\":[")
            for (i, key) in keys.enumerated() {
                if i > 0 { writer.append(",") }
                writer.writeString(key)
            }
            writer.append("],\"cursor\":")
            if more, let last = keys.last { writer.writeString(last) } else { writer.append("null") }
            writer.append("}")
            return .raw(writer.bytes)
        }
    }

    // MARK: saveMany / getMany

    func saveMany(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let items = try StorageRequest.saveMany(call.payload).map(space.stored)
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            var prepared: [PreparedSave] = []
            prepared.reserveCapacity(items.count)
            for item in items { prepared.append(try self.prepare(item)) }
            let replies = try await self.store(prepared, call: call)
            var writer = JSONWriter(capacity: replies.count * 80 + 32)
            writer.append("{\"count\":")
            writer.writeInt(Int64(replies.count))
            writer.append(",\"items\":[")
            for (i, reply) in replies.enumerated() {
                if i > 0 { writer.append(",") }
                writer.appendRaw(reply)
            }
            writer.append("]}")
            return .raw(writer.bytes)
        }
    }

    func getMany(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let keys = try StorageRequest.keys(call.payload)
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            var writer = JSONWriter(capacity: keys.count * 64 + 32)
            var missing: [String] = []
            writer.append("{\"values\":{")
            var first = true
            for key in keys {
                if Task.isCancelled { throw CSOPError(.timeout, "getMany was cancelled (timed out)", retryable: true) }
                let stored = space.storedKey(key)
                guard let row = try self.local.read(stored, callID: call.id) else {
                    missing.append(key)
                    continue
                }
                guard let json = try await self.resolveValue(stored, first: row, callID: call.id) else {
                    missing.append(key)
                    continue
                }
                if !first { writer.append(",") }
                first = false
                writer.writeString(key)
                writer.append(":")
                writer.appendRaw(json)
            }
            writer.append("},\"missing\":")
            writer.write(.array(missing.map { .string($0) }))
            writer.append("}")
            return .raw(writer.bytes)
        }
    }

    // MARK: stats

    func stats(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        _ = try Fields(call.payload, path: "payload", allowed: [])
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            let stats = try self.local.stats(range: space.range, callID: call.id)
            func tier(_ stats: LocalStore.TierStats) -> JSONValue {
                ["count": .int(stats.count), "bytes": .int(stats.bytes), "storedBytes": .int(stats.storedBytes)]
            }
            let all = [stats.local, stats.cloud, stats.stream]
            var result: JSONObject = [
                "local": tier(stats.local), "cloud": tier(stats.cloud), "stream": tier(stats.stream),
                "total": ["count": .int(all.reduce(0) { $0 + $1.count }), "bytes": .int(all.reduce(0) { $0 + $1.bytes })],
                "maxLocalSize": .int(self.configuration.maxLocalSize),
                "coldTier": .bool(self.cold != nil),
            ]
            result["maxBytes"] = self.configuration.maxBytes.map { .int($0) } ?? .null
            return .value(.object(result))
        }
    }

    /// `{}` → `{ready, detail?}`: whether the plugin can serve, for `/readyz`. Without a cold
    /// tier it is always ready; with one, a `SELECT 1` on the cold tier's PostgreSQL must answer.
    func health(_ call: PluginCall) throws(CSOPError) {
        _ = try Fields(call.payload, path: "payload", allowed: [])
        // The change feed does not decide readiness: without it, watches still see this process.
        var state: JSONObject = [:]
        if let changes = watches.feed.load() {
            state["changeFeed"] = changes.isConnected ? "connected" : "reconnecting"
            if !changes.isConnected, let failure = changes.lastFailure { state["changeFeedDetail"] = .string(failure) }
        }
        let feed = state
        let reply = { @Sendable (fields: JSONObject) -> JSONValue in
            var object = fields
            for member in feed.members { object[member.key] = member.value }
            return .object(object)
        }
        guard let cold else { return call.succeed(reply(["ready": true, "coldTier": false])) }
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            do throws(ColdStore.Failure) {
                try await cold.ping(callID: call.id)
                return .value(reply(["ready": true, "coldTier": true]))
            } catch {
                return .value(reply(["ready": false, "coldTier": true, "detail": .string(error.error.message)]))
            }
        }
    }

    // MARK: expiry

    /// Keys purged per transaction, and the most transactions of one purge round.
    static let purgeBatch = 1000
    static let purgeRounds = 100

    /// Deletes the keys whose `options.ttl` has passed from both tiers (every `purgeInterval`,
    /// each batch on the writer thread). Reads never see an expired key whether or not it is
    /// purged yet; until it is, its bytes still count against `maxBytes`. A failure is logged
    /// and the next round tries again.
    func purgeExpired() async {
        let now = WallClock.milliseconds()
        var removed = 0
        do throws(CSOPError) {
            for _ in 0..<Self.purgeRounds {
                let (keys, refs) = try await onWriter { () throws(CSOPError) in
                    try self.local.purgeExpired(now: now, limit: Self.purgeBatch, callID: 0)
                }
                removed += keys.count
                watches.announce(keys.map { WatchRegistry.Change(key: $0.key, version: $0.version, deleted: true, expired: true) })
                await deleteCold(refs, callID: 0)
                if keys.count < Self.purgeBatch || Task.isCancelled { break }
            }
        } catch {
            log(.warning, "storage: purging expired keys failed (the next round retries): \(error.message)")
        }
        if removed > 0 { log(.debug, "storage: purged \(removed) expired keys") }
    }

    // MARK: sweep

    /// Cold rows made at least this long ago may be swept unless the index references them.
    static let defaultSweepAge = 7200.0
    /// Candidates checked per round trip to each tier.
    static let sweepBatch = 1000

    /// `{olderThan?}` → `{checked, removed, coldTier}`: deletes the cold-tier rows that no index
    /// row references — what a crash between a cold write and its index row leaves behind.
    ///
    /// Safe against concurrent saves: every save writes a fresh ref, so a row older than
    /// `olderThan` seconds (default two hours, at least 60) that no index row names now can
    /// only come to be named by a save that has been running that long, and a save lasts at most
    /// its timeout (one hour at most) and the 30 s commit grace. The owner's only: it sees every
    /// tenant's rows.
    func sweep(_ call: PluginCall) throws(CSOPError) {
        guard call.caller == nil else {
            throw CSOPError(.forbidden, "storage.sweep looks at every tenant's cold rows: only the host's owner may run it")
        }
        let fields = try Fields(call.payload, path: "payload", allowed: ["olderThan"])
        let olderThan = try fields.number("olderThan", in: 60...31_536_000) ?? Self.defaultSweepAge
        guard let cold else { return call.succeed(["checked": 0, "removed": 0, "coldTier": false]) }
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            var cursor = ""
            var (checked, removed) = (0, 0)
            while true {
                let refs: [String]
                do throws(ColdStore.Failure) {
                    refs = try await cold.refs(olderThan: olderThan, after: cursor, limit: Self.sweepBatch, callID: call.id)
                } catch {
                    throw error.error
                }
                guard let last = refs.last else { break }
                cursor = last
                checked += refs.count
                let referenced = try self.local.referencedColdRefs(refs, callID: call.id)
                let orphans = refs.filter { !referenced.contains($0) }
                do throws(ColdStore.Failure) {
                    try await cold.delete(refs: orphans, callID: call.id)
                } catch {
                    throw error.error
                }
                removed += orphans.count
                if refs.count < Self.sweepBatch { break }
            }
            if removed > 0 { self.log(.warning, "storage: the sweep removed \(removed) cold-tier rows that no key referenced") }
            return .value(["checked": .int(Int64(checked)), "removed": .int(Int64(removed)), "coldTier": true])
        }
    }
}

extension StoragePlugin {
    // MARK: rotate

    /// Values examined per read of the index.
    static let rotateBatch = 100

    /// `{limit?}` → `{rotated, changed, remaining, currentKeyId, unreadable}`: re-encrypts up to
    /// `limit` (default 10,000) encrypted values that are under another key than
    /// `encryptionKeyId`, in key order, across every namespace; the owner's only.
    ///
    /// Each value is decrypted and encrypted again (its compression untouched), then written
    /// back only if its key is still at the version it was read at; a save in between wins and
    /// counts as `changed` (it used the current key already). A cold value gets a new cold row,
    /// and the old one is deleted once the index points at the new one. The version does not
    /// change. Values whose key is not configured, or that do not decrypt, are counted in
    /// `unreadable` by key id and left as they are. `remaining` counts the values still under
    /// another key afterwards: call again until it is 0 (or only the unreadable are left).
    func rotate(_ call: PluginCall) throws(CSOPError) {
        guard call.caller == nil else {
            throw CSOPError(.forbidden, "storage.rotate re-encrypts every tenant's values: only the host's owner may run it")
        }
        let fields = try Fields(call.payload, path: "payload", allowed: ["limit"])
        let limit = Int(try fields.int("limit", in: 1...1_000_000) ?? 10_000)
        guard let current = codec.currentKeyId else {
            throw .invalidPayload("storage.rotate re-encrypts under config.encryptionKeyId, and no encryption key is configured (config.encryptionKeys)")
        }
        runLater(call) { () async throws(CSOPError) -> PluginReply in
            var cursor = ""
            var (examined, rotated, changed) = (0, 0, 0)
            var unreadable: [String: Int64] = [:]
            while examined < limit {
                let rows = try self.local.encryptedRows(notUnder: current, after: cursor, limit: min(Self.rotateBatch, limit - examined), callID: call.id)
                guard let last = rows.last else { break }
                cursor = last.key
                for row in rows {
                    if Task.isCancelled { throw CSOPError(.timeout, "storage.rotate was cancelled (timed out); call it again to go on", retryable: true) }
                    examined += 1
                    do throws(CSOPError) {
                        if try await self.rotate(row, callID: call.id) { rotated += 1 } else { changed += 1 }
                    } catch where error.code == .decryptionFailed {
                        unreadable[row.stored.keyId ?? StorageConfiguration.defaultKeyId, default: 0] += 1
                    }
                }
                if rows.count < Self.rotateBatch { break }
            }
            let remaining = try self.local.countEncrypted(notUnder: current, callID: call.id)
            if rotated > 0 { self.log(.info, "storage: re-encrypted \(rotated) values under the key with id \"\(current)\"") }
            var unreadableObject = JSONObject()
            for (id, count) in unreadable.sorted(by: { $0.key < $1.key }) { unreadableObject[id] = .int(count) }
            return .value([
                "rotated": .int(Int64(rotated)), "changed": .int(Int64(changed)), "remaining": .int(remaining),
                "currentKeyId": .string(current), "unreadable": .object(unreadableObject),
            ])
        }
    }

    /// Re-encrypts one value; false when its key changed meanwhile (nothing written).
    private func rotate(_ row: LocalStore.EncryptedRow, callID: UInt64) async throws(CSOPError) -> Bool {
        guard row.stored.tier == .cloud, let oldRef = row.stored.coldRef else {
            let (bytes, keyId) = try codec.reencrypt(row.stored.bytes, keyId: row.stored.keyId, key: row.key)
            return try await onWriter { () throws(CSOPError) in
                try self.local.replaceEncrypted(row, bytes: bytes, storedSize: Int64(bytes.count), newColdRef: nil, keyId: keyId, callID: callID)
            }
        }
        guard let cold else {
            throw CSOPError(.notConnected, "'\(StorageNamespace.userKey(row.key))' is in the cold tier, but no cold tier is configured (config.postgresUrl)")
        }
        let stored: [UInt8]?
        do throws(ColdStore.Failure) { stored = try await cold.get(ref: oldRef, callID: callID) } catch { throw error.error }
        guard let stored else { return false }  // Replaced while we read.
        let (bytes, keyId) = try codec.reencrypt(stored, keyId: row.stored.keyId, key: row.key)
        let newRef = Self.newColdRef()
        do throws(ColdStore.Failure) {
            try await cold.put(
                ref: newRef, key: StorageNamespace.userKey(row.key), tenant: StorageNamespace.tenant(ofStored: row.key), bytes: bytes, callID: callID)
        } catch {
            throw error.error
        }
        let replaced: Bool
        do throws(CSOPError) {
            replaced = try await onWriter { () throws(CSOPError) in
                try self.local.replaceEncrypted(row, bytes: [], storedSize: Int64(bytes.count), newColdRef: newRef, keyId: keyId, callID: callID)
            }
        } catch {
            await deleteCold([newRef], callID: callID)
            throw error
        }
        await deleteCold([replaced ? oldRef : newRef], callID: callID)
        return replaced
    }
}

extension StoragePlugin {
    // MARK: watch / unwatch

    /// `{prefix?}` → `{watching, subscription, prefix}`: from now on, every committed save,
    /// delete and expiry of the caller's keys starting with `prefix` is announced as a
    /// `storage.changed` event for `subscription` (``WatchRegistry``).
    func watch(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: ["prefix"])
        let prefix = try fields.string("prefix", nonEmpty: false, maxLength: StorageLimits.maxKeyBytes) ?? ""
        if prefix.utf8.contains(0) { throw .invalidPayload("payload.prefix must not contain NUL characters") }
        let id = try watches.watch(space, prefix: prefix)
        call.succeed(["watching": true, "subscription": .string(id), "prefix": .string(prefix)])
    }

    /// `{subscription}` → `{unwatched, subscription}`: the watch ends (a change being announced
    /// on another thread at that moment may still reach it).
    func unwatch(_ call: PluginCall, _ space: StorageNamespace) throws(CSOPError) {
        let fields = try Fields(call.payload, path: "payload", allowed: ["subscription"])
        let id = try fields.requiredString("subscription", maxLength: 64)
        // Another tenant's watch is not found, as an unknown one.
        guard watches.unwatch(id, in: space) else {
            throw CSOPError(.subscriptionFailed, "payload.subscription names no active watch; use the id storage.watch returned")
        }
        call.succeed(["unwatched": true, "subscription": .string(id)])
    }
}
