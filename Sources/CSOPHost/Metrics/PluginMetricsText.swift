/// Keeps, of what a plugin's `write_metrics` wrote, the lines that are its own: `# HELP` and
/// `# TYPE` lines and samples whose metric name starts with `csop_<plugin>_` and is a valid
/// Prometheus name, with no control bytes. Everything else (another plugin's or the host's
/// names, other comments, blank or malformed lines) is dropped, so one plugin cannot break a
/// scrape or overwrite another's series.
enum PluginMetricsText {
    /// The most a plugin may write in one scrape; the rest is cut off (at a line end).
    static let maxBytes = 4 << 20

    /// Appends the kept lines of `text` to `buffer`, each ending in a newline.
    static func append(_ text: [UInt8], plugin: String, to buffer: inout [UInt8]) {
        let prefix = Array("csop_\(plugin)_".utf8)
        var lineStart = 0
        while lineStart < text.count {
            let lineEnd = text[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? text.count
            let line = text[lineStart..<lineEnd]
            if lineEnd < text.count, keeps(line, prefix: prefix) {
                buffer.append(contentsOf: line)
                buffer.append(UInt8(ascii: "\n"))
            }
            lineStart = lineEnd + 1
        }
    }

    /// Whether `line` (without its newline) is a comment or sample of a series named with `prefix`.
    static func keeps(_ line: ArraySlice<UInt8>, prefix: [UInt8]) -> Bool {
        guard !line.contains(where: { $0 < 0x20 && $0 != UInt8(ascii: "\t") || $0 == 0x7F }) else { return false }
        var name = line[...]
        if line.first == UInt8(ascii: "#") {
            let help = Array("# HELP ".utf8)
            let type = Array("# TYPE ".utf8)
            if line.starts(with: help) {
                name = line.dropFirst(help.count)
            } else if line.starts(with: type) {
                name = line.dropFirst(type.count)
            } else {
                return false
            }
        }
        let end = name.firstIndex(where: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "{") }) ?? name.endIndex
        let metric = name[..<end]
        guard end < name.endIndex, metric.count > prefix.count, metric.starts(with: prefix) else { return false }
        return metric.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ":")
        }
    }
}
