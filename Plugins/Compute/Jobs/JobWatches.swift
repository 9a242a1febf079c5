import CSOPCore
import Synchronization

/// `compute.watch` subscriptions and the `compute.job.done` events they receive.
///
/// A watch sees the jobs of one tenant (the owner's, for the local owner) and gets
/// `{type: "event", subscription, event: "compute.job.done", data: {id, state}}` when one of
/// them ends — the shape of sync's and storage's events, so the host and the gateway route it
/// by `subscription` to the caller that watched. Ids are `jobs_N`.
final class JobWatches: Sendable {
    private struct State {
        /// Watch ids by tenant ("" for the owner).
        var byTenant: [String: [String]] = [:]
        var tenantOfID: [String: String] = [:]
        var nextID: UInt64 = 1
    }

    private let state = Mutex(State())
    private let emit: @Sendable ([UInt8]) -> Void
    static let maxWatches = 10_000

    init(emit: @escaping @Sendable ([UInt8]) -> Void) {
        self.emit = emit
    }

    /// A new watch of `tenant`'s jobs. - Throws: `SUBSCRIPTION_FAILED` past ``maxWatches``.
    func watch(tenant: String?) throws(CSOPError) -> String {
        let result: Result<String, CSOPError> = state.withLock { state in
            guard state.tenantOfID.count < Self.maxWatches else {
                return .failure(CSOPError("SUBSCRIPTION_FAILED", "this compute plugin already has \(Self.maxWatches) job watches; unwatch first"))
            }
            let id = "jobs_\(state.nextID)"
            state.nextID += 1
            state.byTenant[tenant ?? "", default: []].append(id)
            state.tenantOfID[id] = tenant ?? ""
            return .success(id)
        }
        return try result.get()
    }

    /// Ends watch `id` if it is `tenant`'s; false when it is unknown or another tenant's.
    func unwatch(_ id: String, tenant: String?) -> Bool {
        state.withLock { state in
            guard state.tenantOfID[id] == tenant ?? "" else { return false }
            state.tenantOfID[id] = nil
            state.byTenant[tenant ?? ""]?.removeAll { $0 == id }
            if state.byTenant[tenant ?? ""]?.isEmpty == true { state.byTenant[tenant ?? ""] = nil }
            return true
        }
    }

    /// Tells `tenant`'s watches that job `id` ended in `state`.
    func ended(id: String, state ended: String, tenant: String) {
        guard let watches = state.withLock({ $0.byTenant[tenant] }) else { return }
        let data: JSONValue = ["id": .string(id), "state": .string(ended)]
        for watch in watches {
            emit(JSONValue.object(["type": "event", "subscription": .string(watch), "event": "compute.job.done", "data": data]).serialized())
        }
    }
}
