import CSOPCore
import Glibc
public import Logging

/// `--log-format json`: one JSON object per log line on stderr —
/// `{"time", "level", "label", "message", ...metadata}` with `time` in UTC (ISO 8601,
/// milliseconds) and the metadata (`plugin` for a plugin's own lines) as strings, for log
/// collectors that read JSON.
///
/// Each line is one `write(2)`, so lines of concurrent loggers never interleave.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var writer = JSONWriter(capacity: 160)
        writer.append("{\"time\":")
        writer.writeString(WallClock.iso8601())
        writer.append(",\"level\":")
        writer.writeString(event.level.rawValue)
        writer.append(",\"label\":")
        writer.writeString(label)
        writer.append(",\"message\":")
        writer.writeString(event.message.description)
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) where !["time", "level", "label", "message"].contains(key) {
            writer.append(",")
            writer.writeString(key)
            writer.append(":")
            writer.writeString(value.description)
        }
        writer.append("}\n")
        let line = writer.bytes
        _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}
