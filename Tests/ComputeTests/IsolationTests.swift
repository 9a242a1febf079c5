import CSOPCore
import Testing

@testable import ComputePlugin

/// Nothing one task does may be visible to the next one on the same worker, whether it is a
/// custom task or a registered function called again. Each channel is a function that, given
/// `{write: true, secret}`, tries to leave the secret behind, and in any case returns what it
/// can see; a later call with `{write: false}` must see what the first call without writing saw.
@Suite struct IsolationTests {
    struct Channel: Sendable {
        let name: String
        let source: String
    }

    static let secret = "token=abc123"

    static let channels: [Channel] = [
        Channel(
            name: "legacy RegExp statics",
            source: """
                if (data.write) /token=([a-z0-9]+)/.exec('Authorization: ' + data.secret + '; x');
                return [RegExp.lastMatch, RegExp['$&'], RegExp.$1, RegExp.input, RegExp.$_, RegExp['$_'], RegExp.lastParen,
                    RegExp['$+'], RegExp.leftContext, RegExp['$`'], RegExp.rightContext, RegExp["$'"], RegExp.$2, RegExp.$3,
                    RegExp.$4, RegExp.$5, RegExp.$6, RegExp.$7, RegExp.$8, RegExp.$9].join('|')
                """),
        Channel(
            name: "RegExp.input set directly",
            source: "if (data.write) { try { RegExp.input = data.secret } catch (e) {} } return RegExp.input + '|' + RegExp.$_"),
        Channel(
            name: "String methods that match",
            source: """
                if (data.write) { data.secret.replace(/abc(1)/, 'x'); data.secret.split(/=/); data.secret.match(/t(o)k/) }
                return RegExp.lastMatch + '|' + RegExp.input + '|' + RegExp.$1
                """),
        Channel(
            name: "RegExp.multiline",
            source: "if (data.write) { try { RegExp.multiline = true; RegExp['$*'] = true } catch (e) {} } return [RegExp.multiline, RegExp['$*']]"),
        Channel(name: "arguments.callee", source: "var f = arguments.callee; f.n = (f.n || 0) + 1; if (data.write) f.secret = data.secret; return [f.n, f.secret]"),
        Channel(
            name: "the function's prototype",
            source: "var p = arguments.callee.prototype; if (data.write) p.secret = data.secret; return String(p.secret)"),
        Channel(
            name: "a named inner function",
            source: "function inner() {} if (data.write) inner.secret = data.secret; return String(inner.secret)"),
        Channel(
            name: "Error.stackTraceLimit",
            source: "if (data.write) { try { Error.stackTraceLimit = 1 } catch (e) {} } return Error.stackTraceLimit"),
        Channel(
            name: "Error.prepareStackTrace",
            source: """
                if (data.write) { try { Error.prepareStackTrace = () => data.secret } catch (e) {} }
                return typeof Error.prepareStackTrace + '|' + String(new Error('e').stack).includes('abc123')
                """),
        Channel(
            name: "Error.captureStackTrace",
            source: "if (data.write) { try { Error.captureStackTrace = () => data.secret } catch (e) {} } return String(Error.captureStackTrace)"),
        Channel(
            name: "the global object's prototype",
            source: """
                if (data.write) { try { Object.setPrototypeOf(globalThis, {secret: data.secret}) } catch (e) {} }
                return typeof secret === 'undefined' ? 'clean' : secret
                """),
        Channel(
            name: "a global defined through a proxy",
            source: """
                if (data.write) { try { Object.defineProperty(new Proxy(globalThis, {}), 'secret', {value: data.secret}) } catch (e) {} }
                return typeof secret === 'undefined' ? 'clean' : secret
                """),
        Channel(
            name: "globals defined through a proxy, several at once",
            source: """
                if (data.write) { try { Object.defineProperties(new Proxy(globalThis, {}), {secret: {value: data.secret}}) } catch (e) {} }
                return typeof secret === 'undefined' ? 'clean' : secret
                """),
        Channel(
            name: "a global defined through a proxy with Reflect",
            source: """
                if (data.write) { try { Reflect.defineProperty(new Proxy(globalThis, {}), Symbol.for('secret'), {value: data.secret}) } catch (e) {} }
                return String(globalThis[Symbol.for('secret')])
                """),
        Channel(
            name: "the global object's extensibility",
            source: """
                if (data.write) Object.preventExtensions(globalThis);
                let extensible = Object.isExtensible(globalThis);
                return extensible
                """),
        Channel(
            name: "the caller",
            source: """
                let caller; try { caller = arguments.callee.caller } catch (e) { caller = 'hidden' }
                if (data.write && caller) { try { caller.secret = data.secret } catch (e) {} }
                return caller === null || caller === 'hidden' ? 'hidden' : String(caller.secret)
                """),
    ]

    func observe(_ h: ComputeHarness, _ task: String, _ channel: Channel, write: Bool) async throws -> JSONValue {
        let data: JSONValue = ["write": .bool(write), "secret": .string(Self.secret)]
        let value = try await h.result(task, task == "custom" ? ["fn": .string(channel.source), "args": data] : data)
        return value
    }

    /// One worker, so every call runs in the same context; one harness for all channels, as a
    /// sandbox per channel would make this suite start dozens of JavaScript engines at once.
    @Test func customTasksLeaveNothingBehind() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        for channel in Self.channels {
            let before = try await observe(h, "custom", channel, write: false)
            _ = try await observe(h, "custom", channel, write: true)
            let after = try await observe(h, "custom", channel, write: false)
            #expect(after == before, "\(channel.name)")
            #expect(!after.jsonString.contains("abc123"), "\(channel.name): \(after.jsonString)")
        }
    }

    @Test func registeredFunctionsLeaveNothingBehind() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        for (i, channel) in Self.channels.enumerated() {
            let name = "probe\(i)"
            _ = try await h.call("register", ["name": .string(name), "fn": .string(channel.source)]).get()
            let before = try await observe(h, name, channel, write: false)
            _ = try await observe(h, name, channel, write: true)
            let after = try await observe(h, name, channel, write: false)
            let again = try await observe(h, name, channel, write: false)
            #expect(after == before, "\(channel.name)")
            #expect(again == before, "\(channel.name)")
            #expect(!after.jsonString.contains("abc123"), "\(channel.name): \(after.jsonString)")
        }
    }

    /// A registered function called by different callers: the second must not read the first's data.
    @Test func registeredFunctionsKeepNoStateBetweenCallers() async throws {
        let h = ComputeHarness(ComputeConfiguration(workers: 1))
        let fn = "var f = arguments.callee; var seen = f.last; f.last = data; f.n = (f.n || 0) + 1; return [f.n, seen === undefined ? null : seen]"
        _ = try await h.call("register", ["name": "counter", "fn": .string(fn)]).get()
        for caller in ["alice", "bob", "carol"] {
            #expect(try await h.result("counter", .string(caller)) == [1, nil])
        }
    }
}
