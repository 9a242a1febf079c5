import CSOPCore
import CSOPPluginKit
import Glibc

/// `compute.submit`, `compute.job`, `compute.jobs`, `compute.watch` and `compute.unwatch`:
/// durable jobs in PostgreSQL that any host configured with the same `[config.jobs]` runs
/// (``JobRunner``), each job seen and watched only by the tenant that submitted it (the local
/// owner's are the owner's).
///
/// Delivery is at least once: a job runs again when its host dies or loses the database for
/// longer than its lease, so a task with outside effects should be idempotent; its row ends
/// `succeeded` once. A submit repeated with the same `idempotencyKey` answers the first job.
final class SharedJobs: Sendable {
    let store: JobStore
    let runner: JobRunner
    let watches: JobWatches
    private let calls = CallTaskRegistry()

    static let maxDataBytes = 16 << 20
    static let states: Set<String> = ["queued", "running", "succeeded", "failed"]

    init(configuration: JobsConfiguration, service: ComputeService, host: PluginHost?) {
        var random = SystemRandomNumberGenerator()
        let owner = "\(Self.hostname())-\(getpid())-\(String(random.next() as UInt32, radix: 16))"
        store = JobStore(configuration: configuration, owner: owner)
        watches = JobWatches { host?.emit(rawJSON: $0) }
        runner = JobRunner(store: store, service: service, watches: watches, log: { host?.log(.warning, $0) })
        runner.start()
    }

    /// Whether `operation` is one of the jobs' operations.
    static func handles(_ operation: ComputeService.Operation) -> Bool {
        operation == .submit || operation == .job || operation == .jobs || operation == .watch || operation == .unwatch
    }

    static let notConfigured = CSOPError(
        .notInitialized,
        "compute jobs are not configured on this host: give the compute plugin a [config.jobs] table with postgresUrl (or set CSOP_COMPUTE_JOBS_URL)")

    func handle(_ operation: ComputeService.Operation, _ call: PluginCall) {
        let tenant = call.caller?.tenant
        let payload = call.payload
        do throws(CSOPError) {
            switch operation {
            case .watch:
                _ = try Fields(payload, path: "payload", allowed: [])
                return call.succeed(["subscription": .string(try watches.watch(tenant: tenant))])
            case .unwatch:
                let id = try Fields(payload, path: "payload", allowed: ["subscription"]).requiredString("subscription", maxLength: 64)
                guard watches.unwatch(id, tenant: tenant) else {
                    throw CSOPError("SUBSCRIPTION_FAILED", "no job watch \(id) of yours")
                }
                return call.succeed(["unwatched": true, "subscription": .string(id)])
            default: break
            }
        } catch {
            return call.fail(error)
        }
        calls.complete(call) { [store] () async throws(CSOPError) -> PluginReply in
            switch operation {
            case .submit: return .value(try await Self.submit(payload, tenant: tenant, store: store))
            case .job:
                let fields = try Fields(payload, path: "payload", allowed: ["id"])
                let id = try Self.jobID(fields.requiredString("id", maxLength: 20), field: "payload.id")
                guard let job = try await store.job(id: id, tenant: tenant) else {
                    throw CSOPError(.jobNotFound, "no job \(id) of yours")
                }
                return .value(job)
            default:
                let fields = try Fields(payload, path: "payload", allowed: ["state", "limit", "cursor"])
                let state = try fields.string("state")
                if let state, !Self.states.contains(state) {
                    throw .invalidPayload("payload.state must be one of queued, running, succeeded, failed; got \"\(state)\"")
                }
                let limit = Int(try fields.int("limit", in: 1...1000) ?? 100)
                let cursor = try fields.string("cursor", maxLength: 20).map { id throws(CSOPError) in try Self.jobID(id, field: "payload.cursor") }
                let jobs = try await store.list(tenant: tenant, state: state, after: cursor, limit: limit)
                var answer: JSONObject = ["jobs": .array(jobs)]
                if jobs.count == limit, case .string(let last)? = jobs.last?["id"] { answer["cursor"] = .string(last) }
                return .value(.object(answer))
            }
        }
    }

    func cancel(callID: UInt64) { _ = calls.cancel(callID) }

    func shutdown() {
        calls.cancelAll()
        runner.shutdown()
        store.shutdown()
    }

    /// `{task, data?, options?: {priority, maxAttempts, runAt, idempotencyKey, timeout}}` →
    /// `{id, state: "queued", created}`.
    private static func submit(_ payload: JSONValue, tenant: String?, store: JobStore) async throws(CSOPError) -> JSONValue {
        let fields = try Fields(payload, path: "payload", allowed: ["task", "data", "options"])
        let task = try fields.requiredString("task", maxLength: ComputeService.maxNameLength)
        let data = (fields["data"] ?? .null).serialized()
        guard data.count <= maxDataBytes else {
            throw .invalidPayload("payload.data is \(data.count) bytes of JSON; a job carries at most \(maxDataBytes)")
        }
        let options = try fields.nested("options", allowed: ["priority", "maxAttempts", "runAt", "idempotencyKey", "timeout"])
        let priority = Int(try options.int("priority", in: -1000...1000) ?? 0)
        let maxAttempts = Int(try options.int("maxAttempts", in: 1...100) ?? 3)
        let runAt = try options.int("runAt", in: 0...253_402_300_799_999)
        let key = try options.string("idempotencyKey", maxLength: 256)
        let timeout = try options.number("timeout", in: 1...ComputeConfiguration.maxTimeout)
        let (id, created) = try await store.submit(
            JobStore.Submission(
                tenant: tenant, task: task, data: String(decoding: data, as: UTF8.self), timeout: timeout, priority: priority,
                maxAttempts: maxAttempts, runAt: runAt, idempotencyKey: key))
        return ["id": .string(String(id)), "created": .bool(created)]
    }

    private static func jobID(_ text: String, field: String) throws(CSOPError) -> Int64 {
        guard let id = Int64(text), id > 0 else { throw .invalidPayload("\(field) must be a job id as compute.submit answered it (digits), got \"\(text)\"") }
        return id
    }

    /// This machine's name, for `lease_owner` (with the process id: `HOST-PID-RANDOM`).
    private static func hostname() -> String {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "host" }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
