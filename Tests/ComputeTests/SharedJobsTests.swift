import CSOPCore
import CSOPHost
import CSOPTestSupport
import Foundation
import Testing

func uniqueName(_ prefix: String) -> String { "\(prefix)_\(UInt32.random(in: 0...UInt32.max))" }

/// `compute.submit` / `job` / `jobs`: durable jobs in the real local PostgreSQL, run by real
/// hosts (in process, and `csop run` processes, one of them killed -9 mid-run).
@Suite struct SharedJobsTests {
    static let patient = RequestOptions(timeout: 600_000, retry: 0)
    static let alice = Caller(subject: "alice", tenant: "tenant-a", actions: .all)

    /// A compute entry whose jobs live in a table of this test's own.
    static func entry(table: String, _ jobs: JSONObject = [:], workers: Int = 2) -> PluginEntry {
        var settings: JSONObject = ["postgresUrl": .string(TestEnvironment.postgresURL), "table": .string(table), "pollInterval": 100]
        for (key, value) in jobs { settings[key] = value }
        return PluginEntry("30-compute.conf", library: "libcsop-compute.so", config: ["workers": .int(Int64(workers)), "jobs": .object(settings)])
    }

    func call(_ host: CSOPHost, _ action: String, _ payload: JSONValue, _ caller: Caller? = nil) async -> Response {
        await host.dispatch(Request(action: "compute." + action, payload: payload, options: Self.patient, caller: caller))
    }

    /// Polls `compute.job` until the job has ended.
    func ended(_ host: CSOPHost, _ id: JSONValue, _ caller: Caller? = nil) async -> JSONValue? {
        for _ in 0..<3000 {
            let job = await call(host, "job", ["id": id], caller).data
            if job?["state"] == "succeeded" || job?["state"] == "failed" { return job }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    @Test func aJobRunsRetriesAndEndsWithItsResultOrError() async throws {
        let directory = try TemporaryDirectory("csop-jobs")
        let table = uniqueName("jobs")
        let host = try await TestEnvironment.makeHost([Self.entry(table: table, ["retryDelay": 10])], in: directory)
        #expect(host.failures.isEmpty, "\(host.failures)")
        let events = host.events()
        var seen = events.makeAsyncIterator()
        let watch = try #require(await call(host, "watch", [:]).data?["subscription"])
        // Another tenant's watch hears nothing of the owner's jobs.
        let theirs = try #require(await call(host, "watch", [:], Self.alice).data?["subscription"])

        let fib = await call(host, "submit", ["task": "fibonacci", "data": ["n": 20], "options": ["priority": 5]])
        #expect(fib.data?["created"] == true)
        let id = try #require(fib.data?["id"])
        let done = try #require(await ended(host, id))
        #expect(done["state"] == "succeeded")
        #expect(done["result"] == "6765")
        #expect(done["attempts"] == 1)
        #expect(done["priority"] == 5)
        let event = await seen.next()?.value
        #expect(event?["event"] == "compute.job.done")
        #expect(event?["subscription"] == watch)
        #expect(event?["data"] == ["id": id, "state": "succeeded"])

        // A script that throws is retried up to maxAttempts, then ends failed with its error.
        let throwing = await call(host, "submit", ["task": "custom", "data": ["fn": "throw new Error('boom')", "args": 1], "options": ["maxAttempts": 3]])
        let throwingID = try #require(throwing.data?["id"])
        let failed = try #require(await ended(host, throwingID))
        #expect(failed["state"] == "failed")
        #expect(failed["attempts"] == 3)
        #expect(failed["error"]?["code"] == "EXECUTION_FAILED")
        #expect(failed["error"]?["message"]?.stringValue?.contains("boom") == true)

        // An error no retry can fix ends the job at the first attempt.
        let unknown = await call(host, "submit", ["task": "no_such_task", "data": 1, "options": ["maxAttempts": 5]])
        let unknownID = try #require(unknown.data?["id"])
        let never = try #require(await ended(host, unknownID))
        #expect(never["state"] == "failed")
        #expect(never["attempts"] == 1)
        #expect(never["error"]?["code"] == "INVALID_TASK")
        // Each ended job reached the owner's watch once, and never alice's.
        var heard: [JSONValue] = []
        while heard.count < 2, let next = await seen.next() { heard.append(next.value) }
        #expect(Set(heard.compactMap { $0["data"]?["id"] }) == [throwingID, unknownID])
        #expect(heard.allSatisfy { $0["subscription"] == watch })
        #expect(await call(host, "unwatch", ["subscription": theirs]).error?.code == "SUBSCRIPTION_FAILED")
        #expect(await call(host, "unwatch", ["subscription": theirs], Self.alice).data?["unwatched"] == true)
        #expect(await call(host, "unwatch", ["subscription": watch]).data?["unwatched"] == true)
        await host.shutdown()
        try await TestEnvironment.dropTable(table)
    }

    @Test func idempotencyKeysTenantsRunAtAndListing() async throws {
        let directory = try TemporaryDirectory("csop-jobs")
        let table = uniqueName("jobs")
        let host = try await TestEnvironment.makeHost([Self.entry(table: table)], in: directory)
        let first = await call(host, "submit", ["task": "sum", "data": ["numbers": [1, 2, 3]], "options": ["idempotencyKey": "order-7"]])
        let again = await call(host, "submit", ["task": "sum", "data": ["numbers": [4]], "options": ["idempotencyKey": "order-7"]])
        let firstID = try #require(first.data?["id"])
        #expect(first.data?["created"] == true)
        #expect(again.data == ["id": firstID, "created": false])
        // The same key is another tenant's own.
        let theirs = await call(host, "submit", ["task": "sum", "data": ["numbers": [4]], "options": ["idempotencyKey": "order-7"]], Self.alice)
        let theirID = try #require(theirs.data?["id"])
        #expect(theirs.data?["created"] == true)
        #expect(await ended(host, firstID)?["result"] == 6)
        // A tenant sees only its own jobs; the owner does not see the tenant's.
        #expect(await call(host, "job", ["id": firstID], Self.alice).error?.code == "JOB_NOT_FOUND")
        #expect(await ended(host, theirID, Self.alice)?["result"] == 4)
        #expect(await call(host, "job", ["id": theirID]).error?.code == "JOB_NOT_FOUND")

        // runAt in the future: queued until then.
        let later = await call(host, "submit", ["task": "sum", "data": ["numbers": [1]], "options": ["runAt": .int(Int64(Date().timeIntervalSince1970 * 1000) + 60_000)]])
        let laterID = try #require(later.data?["id"])
        try await Task.sleep(for: .milliseconds(400))
        #expect(await call(host, "job", ["id": laterID]).data?["state"] == "queued")

        // Listing pages by cursor and filters by state.
        for i in 0..<5 { _ = await call(host, "submit", ["task": "sum", "data": ["numbers": [.int(Int64(i))]]]) }
        let page = await call(host, "jobs", ["limit": 3])
        #expect(page.data?["jobs"]?.arrayValue?.count == 3)
        let cursor = try #require(page.data?["cursor"])
        let rest = await call(host, "jobs", ["limit": 100, "cursor": cursor])
        #expect(rest.data?["jobs"]?.arrayValue?.count == 4)
        #expect(rest.data?["cursor"] == nil)
        #expect(await call(host, "jobs", ["state": "queued"]).data?["jobs"]?.arrayValue?.contains { $0["id"] == laterID } == true)
        await host.shutdown()
        try await TestEnvironment.dropTable(table)
    }

    @Test func badInputIsRefusedWithTheFieldToFix() async throws {
        let directory = try TemporaryDirectory("csop-jobs")
        let table = uniqueName("jobs")
        let host = try await TestEnvironment.makeHost([Self.entry(table: table)], in: directory)
        let cases: [(String, JSONValue, String)] = [
            ("submit", [:], "payload.task"),
            ("submit", ["task": "sum", "options": ["priority": 5000]], "payload.options.priority"),
            ("submit", ["task": "sum", "options": ["maxAttempts": 0]], "payload.options.maxAttempts"),
            ("submit", ["task": "sum", "options": ["retries": 2]], "retries"),
            ("submit", ["task": "sum", "options": ["idempotencyKey": .string(String(repeating: "k", count: 300))]], "payload.options.idempotencyKey"),
            ("job", ["id": "abc"], "payload.id"),
            ("job", ["id": "-1"], "payload.id"),
            ("jobs", ["state": "done"], "payload.state"),
            ("jobs", ["limit": 0], "payload.limit"),
            ("jobs", ["cursor": "x"], "payload.cursor"),
        ]
        for (operation, payload, field) in cases {
            let answer = await call(host, operation, payload)
            #expect(answer.error?.code == "INVALID_PAYLOAD", "\(operation) \(payload.jsonString)")
            #expect(answer.error?.message.contains(field) == true, "\(answer.error?.message ?? "") should name \(field)")
        }
        await host.shutdown()
        try await TestEnvironment.dropTable(table)

        // Without [config.jobs] the operations say what to configure.
        let plain = try await TestEnvironment.makeHost(
            [PluginEntry("30-compute.conf", library: "libcsop-compute.so", config: ["workers": 1])], in: try TemporaryDirectory("csop-jobs"))
        let off = await call(plain, "submit", ["task": "sum"])
        #expect(off.error?.code == "NOT_INITIALIZED")
        #expect(off.error?.message.contains("[config.jobs]") == true)
        await plain.shutdown()

        // A config that names no database, or a bad table, fails the plugin's load.
        for (jobs, says) in [(JSONObject(), "postgresUrl"), (["postgresUrl": .string(TestEnvironment.postgresURL), "table": "Bad-Name"], "config.jobs.table")] {
            let broken = try await TestEnvironment.makeHost(
                [PluginEntry("30-compute.conf", library: "libcsop-compute.so", config: ["jobs": .object(jobs)])], in: try TemporaryDirectory("csop-jobs"))
            #expect(broken.failures.first?.message.contains(says) == true, "\(broken.failures)")
            await broken.shutdown()
        }
    }

    /// The bar: three `csop run` processes on one PostgreSQL — a submitter and two runners —
    /// run 2,000 jobs while one runner is killed -9 mid-run, holding jobs. Every job ends
    /// `succeeded` once, with its own result; the jobs the killed runner held are run again by
    /// the other after their lease expires.
    @Test func twoHostsRunEveryJobWhileOneIsKilled() async throws {
        let directory = try TemporaryDirectory("csop-jobs")
        let table = uniqueName("jobs")
        let runners = try directory.writePlugins(
            [Self.entry(table: table, ["lease": 1500, "concurrency": 32])], directory: "runners")
        let submitters = try directory.writePlugins([Self.entry(table: table, ["run": false])], directory: "submitters")
        let submitter = try RunProcess(pluginsDirectory: submitters)
        let count = 2000
        // About 4 ms of work each.
        let fn = "const end = Date.now() + 4; while (Date.now() < end) {} return data * 2;"
        for i in 1..<count {
            try submitter.send([
                "id": .string("s\(i)"), "action": "compute.submit", "options": ["timeout": 120_000],
                "payload": ["task": "custom", "data": ["fn": .string(fn), "args": .int(Int64(i))], "options": ["maxAttempts": 5]],
            ])
        }
        var ids: [JSONValue] = []
        for i in 1..<count {
            let answer = try #require(await submitter.response("s\(i)", timeout: 120), "submit \(i) unanswered")
            let id = answer["data"]?["id"]
            #expect(id != nil, "submit \(i): \(answer.jsonString)")
            ids.append(try #require(id))
        }
        let clock = ContinuousClock()
        var deadline = clock.now + .seconds(120)
        // Runner a starts alone. Job 0 is the one the kill is sure to hit: submitted once a
        // runs, with the highest priority, so a claims it next; it runs until 45 s after it
        // was submitted (a wall-clock time in its data, so its second attempt ends then too).
        let a = try RunProcess(pluginsDirectory: runners)
        let gateEnds = Date().timeIntervalSince1970 * 1000 + 45_000
        let gate = try #require(
            await submitter.call(
                "s0", "compute.submit",
                [
                    "task": "custom",
                    "data": ["fn": "while (Date.now() < data) {} return 0;", "args": .double(gateEnds)],
                    "options": ["priority": 100, "maxAttempts": 5, "timeout": 60_000],
                ], timeout: 120)?["data"]?["id"])
        ids.append(gate)
        func gateJob() async throws -> JSONValue? {
            try #require(await submitter.call(uniqueName("g"), "compute.job", ["id": gate], timeout: 60))["data"]
        }
        // Once job 0 says it runs (on a: b has not started), b starts, both run jobs, and a is
        // killed -9 while it still holds job 0, 2 s into it. (By the clock, not by a count of
        // jobs run: asking a loaded runner for its count took seconds in a full run.)
        var held = try await gateJob()
        while held?["state"] != "running", clock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
            held = try await gateJob()
        }
        let startedAt = try #require(held?["startedAt"]?.doubleValue, "job 0 never ran: \(held?.jsonString ?? "nil")")
        let b = try RunProcess(pluginsDirectory: runners)
        func now() -> Double { Date().timeIntervalSince1970 * 1000 }
        while now() < startedAt + 2000, clock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let killedAt = now()
        a.kill(SIGKILL)
        #expect(await a.waitForExit() != nil)
        #expect(killedAt < gateEnds, "the kill came \(killedAt - gateEnds) ms after job 0 could end (it began \(startedAt - gateEnds + 45_000) ms after its submit)")

        func succeeded() async throws -> [JSONValue] {
            var jobs: [JSONValue] = []
            var cursor: JSONValue?
            repeat {
                var payload: JSONObject = ["state": "succeeded", "limit": 1000]
                if let cursor { payload["cursor"] = cursor }
                let page = try #require(await submitter.call(uniqueName("l"), "compute.jobs", .object(payload), timeout: 60))
                jobs += page["data"]?["jobs"]?.arrayValue ?? []
                cursor = page["data"]?["cursor"]
            } while cursor != nil
            return jobs
        }
        deadline = clock.now + .seconds(300)
        var done = try await succeeded()
        while done.count < count, clock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            done = try await succeeded()
        }
        #expect(done.count == count, "\(done.count) of \(count) jobs succeeded")
        #expect(Set(done.map { $0["id"] }).count == count)
        #expect(Set(done.compactMap { $0["id"] }) == Set(ids))
        #expect(Set(done.compactMap { $0["result"]?.int64Value }) == Set((0..<count).map { Int64($0 * 2) }))
        // Job 0 (and whatever else the killed runner held) ran again: its second attempt.
        let rerun = done.first { $0["id"] == gate }
        #expect(rerun?["attempts"] == 2, "\(rerun?.jsonString ?? "nil")")
        #expect(await b.finish() == 0)
        #expect(await submitter.finish() == 0)
        try await TestEnvironment.dropTable(table)
    }
}
