import CSOPWasmRewrite

/// `WasmInstrumenter.instrument` on arbitrary bytes. A module sent with its call reaches it
/// after WasmKit's parse, which checks function bodies only when they first run, so its code
/// may hold anything:
///
/// - it throws or answers, never traps;
/// - what it answers is a WebAssembly 1.0 binary whose sections' sizes add up to its length,
///   with the `csop.check` import, and at least the exports it reports.
enum WasmRewriteFuzzTarget {
    static let target = FuzzTarget(
        name: "wasm", summary: "WasmInstrumenter: no trap on any bytes; what it writes is well-formed", check: check,
        seeds: { [(name: "empty-module", bytes: header), (name: "one-loop", bytes: oneLoop)] })

    static let header: [UInt8] = [0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00]
    /// `(func (export "f") (loop (br 0)))`.
    static let oneLoop: [UInt8] =
        header + [
            0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x07, 0x05, 0x01, 0x01, 0x66, 0x00, 0x00, 0x0A, 0x09, 0x01,
            0x07, 0x00, 0x03, 0x40, 0x0C, 0x00, 0x0B, 0x0B,
        ]

    static func check(_ bytes: [UInt8]) {
        guard let output = try? WasmInstrumenter.instrument(bytes, maxMemoryPages: 16, maxTableElements: 64) else { return }
        let written = output.bytes
        property(written.starts(with: header), "the output does not start with the header")
        var at = 8
        var ids: [UInt8] = []
        while at < written.count {
            ids.append(written[at])
            at += 1
            var size = 0
            var shift = 0
            while at < written.count {
                let byte = written[at]
                at += 1
                size |= Int(byte & 0x7F) << shift
                shift += 7
                if byte & 0x80 == 0 { break }
                property(shift < 35, "a section size longer than 5 bytes")
            }
            at += size
        }
        property(at == written.count, "the sections' sizes add up to \(at), the output has \(written.count) bytes")
        property(ids.contains(2), "no import section")
        property(!ids.contains(0), "a custom section was kept")
        property(Set(output.exportNames) == Set(output.exports.keys), "the export names and the exported functions' types differ")
    }
}
