import CSOPCore

/// A finished task: its result as serialized JSON plus any captured console output.
struct TaskOutput: Sendable {
    var resultJSON: [UInt8]
    var logs: [String] = []
    var logsTruncated = false

    /// About how many bytes ``writeMembers(to:)`` writes: the result and the console lines.
    var byteCount: Int { logs.reduce(resultJSON.count) { $0 + $1.utf8.count + 3 } }

    /// Writes `"result":…` and, when there was console output, `"logs":[…]` (and
    /// `"logsTruncated":true`), as members of an object being written.
    func writeMembers(to writer: inout JSONWriter) {
        writer.append("\"result\":")
        writer.appendRaw(resultJSON)
        if !logs.isEmpty || logsTruncated {
            writer.append(",\"logs\":[")
            for (i, line) in logs.enumerated() {
                if i > 0 { writer.append(",") }
                writer.writeString(line)
            }
            writer.append("]")
        }
        if logsTruncated { writer.append(",\"logsTruncated\":true") }
    }

    /// `{"result":…,"logs":[…]}`: what `compute.execute` answers.
    var responseJSON: [UInt8] {
        var writer = JSONWriter(capacity: resultJSON.count + 16)
        writer.append("{")
        writeMembers(to: &writer)
        writer.append("}")
        return writer.bytes
    }
}

extension TaskOutput {
    init(_ value: JSONValue) { self.init(resultJSON: value.serialized()) }
}
