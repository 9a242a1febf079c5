import CSOPCore
import CSOPHost

/// `PluginConfigFile.parse` and `render` (plugins.d entries, TOML through TOMLKit) on arbitrary
/// text.
///
/// - an error is a `PluginConfigError` naming the file, with a message, and a line (when given)
///   inside the text;
/// - an entry rendered and parsed again has the same library, enabled flag and config
///   (compared order-insensitively: TOML tables are sorted maps), and rendering that entry
///   again gives the same text. `render` has no `name` parameter, so the optional `name`
///   key is the one thing that does not come back.
enum PluginConfigFuzzTarget {
    static let target = FuzzTarget(
        name: "pluginsd", summary: "PluginConfigFile.parse / render: parse → render → parse same entry, errors name file and line",
        check: check)

    static let path = "/etc/csop/plugins.d/50-fuzz.conf"

    static func check(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let entry: PluginConfigFile
        do throws(PluginConfigError) {
            entry = try PluginConfigFile.parse(text, path: path)
        } catch {
            property(!error.message.isEmpty, "a PluginConfigError without a message")
            property(error.file == path, "the error names \(shown(error.file)), not the file")
            if let line = error.line {
                // Bytes, not Characters: "\r\n" is one Character.
                let lines = text.utf8.split(separator: 0x0A, omittingEmptySubsequences: false).count
                property(line >= 1 && line <= lines, "the error names line \(line) of a \(lines)-line text: \(error)")
            }
            return
        }
        property(!entry.library.isEmpty, "an entry with an empty library")
        property(entry.path == path, "the entry forgot its path")
        property(JSONFuzzTarget.parse(JSONValue.object(entry.config).serialized()).isSuccess, "the config is not valid JSON")
        let rendered = PluginConfigFile.render(library: entry.library, enabled: entry.enabled, config: entry.config)
        let again: PluginConfigFile
        do throws(PluginConfigError) {
            again = try PluginConfigFile.parse(rendered, path: path)
        } catch {
            return property(false, "render wrote text that does not parse (\(error)):\n\(rendered)")
        }
        property(again.library == entry.library, "library changed: \(shown(entry.library)) → \(shown(again.library))")
        property(again.enabled == entry.enabled, "enabled changed")
        property(again.expectedName == nil, "render wrote a name")
        property(
            sorted(.object(again.config)) == sorted(.object(entry.config)),
            "config changed: \(JSONValue.object(entry.config)) → \(JSONValue.object(again.config))\n\(rendered)")
        let rerendered = PluginConfigFile.render(library: again.library, enabled: again.enabled, config: again.config)
        property(rerendered == rendered, "render is not stable:\n\(rendered)\n---\n\(rerendered)")
    }

    /// The value with every object's members sorted by key, for order-insensitive comparison.
    static func sorted(_ value: JSONValue) -> JSONValue {
        switch value {
        case .array(let items): .array(items.map(sorted))
        case .object(let object):
            .object(JSONObject(object.members.map { (key: $0.key, value: sorted($0.value)) }.sorted { $0.key < $1.key }))
        default: value
        }
    }
}
