import CSOPCore
import Foundation
import WasmKit

/// One call of a wasm export. Its fields are read on the calling thread; everything that
/// costs in proportion to the module or the input — decoding base64, parsing the module,
/// checking its exports — waits for the worker (``resolve()``), so a large module never holds
/// up the thread that dispatched it (an event loop of `csop serve`, say).
///
/// The data convention (the README's "WebAssembly tasks"):
/// - `args` are the export's parameters, in order: integers for i32 (signed or unsigned 32-bit),
///   integers or decimal strings for i64 (past 2^53 a string keeps them exact), numbers for
///   f32/f64 (or `"NaN"`, `"Infinity"`, `"-Infinity"`).
/// - `input` (UTF-8 text) or `inputBase64` (bytes) passes bytes in: the module must export
///   `memory` and `alloc(len: i32) -> i32`; the bytes are copied to what `alloc` returns, and the
///   export is called with `(pointer, length)` before the `args`.
/// - `output` (`"string"`, `"base64"` or `"json"`) takes bytes out: the export must return
///   `(pointer: i32, length: i32)`, or one i64 holding `pointer << 32 | length`, into `memory`.
/// - Without `output`, the results are the answer: one result as itself, none as null, several
///   as an array; i32 and i64 read as signed, an i64 past 2^53 as a decimal string, a float
///   that is not finite as `"NaN"`, `"Infinity"` or `"-Infinity"`.
struct WasmCall: Sendable {
    enum Output: String, Sendable, CaseIterable {
        case string, base64, json
    }

    /// The module: sent with the call (base64, parsed on the worker), or registered (parsed once).
    enum Source: Sendable {
        case base64(String)
        case registered(WasmModule)
    }

    enum Input: Sendable {
        case text(String)
        case base64(String)
    }

    /// What ``resolve()`` gives the runner: the parsed module and the input's bytes.
    struct Resolved {
        var module: WasmModule
        var input: [UInt8]?
    }

    let source: Source
    let export: String
    /// The `args` as given: they are checked against the export's type when the module is
    /// instantiated (``arguments(for:)``), since WasmKit tells an export's type only then.
    let args: [JSONValue]
    let input: Input?
    let output: Output?
    /// A fuel budget the caller set, tighter than the one the timeout gives.
    let fuel: UInt64?
    /// Where the call's data is in the request, for messages.
    let path: String

    /// The type `alloc` must have for input to be copied in.
    static let allocType = FunctionType(parameters: [.i32], results: [.i32])
    /// The answer when it does not, or `memory` is not exported.
    static let badAlloc = CSOPError.invalidPayload("the module's alloc must be alloc(length: i32) -> i32, and its memory exported as \"memory\"")

    static let callKeys: Set<String> = ["export", "args", "input", "inputBase64", "output", "fuel"]

    /// `data` of `{task: "wasm"}`: the call's keys and `module`, the binary in base64.
    init(adHoc data: JSONValue?, path: String) throws(CSOPError) {
        let fields = try Fields(data, path: path, allowed: Self.callKeys.union(["module"]), allowNull: false)
        let base64 = try fields.requiredString("module")
        try WasmModule.checkSize(base64: base64, path: "\(path).module")
        try self.init(source: .base64(base64), fields: fields, path: path)
    }

    /// `data` of a call to a registered module.
    init(module: WasmModule, data: JSONValue?, path: String) throws(CSOPError) {
        try self.init(source: .registered(module), fields: try Fields(data, path: path, allowed: Self.callKeys, allowNull: false), path: path)
    }

    private init(source: Source, fields: Fields, path: String) throws(CSOPError) {
        self.source = source
        self.path = path
        export = try fields.requiredString("export", maxLength: 256)
        if let text = try fields.string("input", nonEmpty: false) {
            guard !fields.has("inputBase64") else { throw .invalidPayload("\(path): give input or inputBase64, not both") }
            input = .text(text)
        } else if let text = try fields.string("inputBase64", nonEmpty: false) {
            input = .base64(text)
        } else {
            input = nil
        }
        if let name = try fields.string("output") {
            guard let kind = Output(rawValue: name) else {
                throw .invalidPayload(
                    "\(path).output must be one of \(Output.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")); leave it out to answer the export's results")
            }
            output = kind
        } else {
            output = nil
        }
        fuel = try fields.int("fuel", in: 1...Int64.max).map(UInt64.init)
        args = try fields.array("args", maxCount: 1000) ?? []
    }

    /// Decodes and parses what the call carries, and checks that the module has what the call
    /// needs: the export, and memory and `alloc` for input and output. Runs on the worker.
    /// - Throws: `INVALID_PAYLOAD` naming the field and what to fix.
    func resolve() throws(CSOPError) -> Resolved {
        let module: WasmModule
        switch source {
        case .registered(let registered): module = registered
        case .base64(let base64): module = try WasmModule(base64: base64, path: "\(path).module")
        }
        try check(functions: module.exportedFunctions, exportsMemory: module.exportsMemory)
        return Resolved(module: module, input: try decodedInput())
    }

    /// Checks that a module exporting `functions` (in export order) and, when `exportsMemory`,
    /// its memory as "memory" has what the call needs.
    /// - Throws: `INVALID_PAYLOAD` naming the field and what to fix.
    func check(functions: [String], exportsMemory: Bool) throws(CSOPError) {
        guard functions.contains(export) else {
            let shown = functions.prefix(10).map { "\"\($0)\"" }.joined(separator: ", ")
            let more = functions.count > 10 ? " and \(functions.count - 10) more" : ""
            throw .invalidPayload("\(path).export: the module exports no function \"\(export)\"; it exports \(functions.isEmpty ? "none" : shown + more)")
        }
        if input != nil || output != nil, !exportsMemory {
            throw .invalidPayload("\(path): the module must export its memory as \"memory\" to take input or give output")
        }
        if input != nil, !functions.contains("alloc") {
            throw .invalidPayload("\(path).input: the module must export alloc(length: i32) -> i32 for its input to be copied in")
        }
    }

    /// The input's bytes, decoded; nil without input.
    /// - Throws: `INVALID_PAYLOAD` for `inputBase64` that is not base64.
    func decodedInput() throws(CSOPError) -> [UInt8]? {
        switch input {
        case nil:
            return nil
        case .text(let text):
            return Array(text.utf8)
        case .base64(let text):
            guard let bytes = Base64Bytes.decode(text) else { throw .invalidPayload("\(path).inputBase64 must be base64") }
            return bytes
        }
    }

    /// The export's parameters after the input's pointer and length, converted from `args`;
    /// checks the results `output` needs too.
    /// - Throws: `INVALID_PAYLOAD` that says what the export takes and returns.
    func arguments(for type: FunctionType) throws(CSOPError) -> [Value] {
        var parameters = type.parameters[...]
        if input != nil {
            guard parameters.starts(with: [.i32, .i32]) else {
                throw .invalidPayload(
                    "\(path).input: export \"\(export)\" must take (pointer: i32, length: i32) first to receive input; it takes \(Self.describe(type.parameters))")
            }
            parameters = parameters.dropFirst(2)
        }
        if output != nil {
            guard type.results == [.i32, .i32] || type.results == [.i64] else {
                throw .invalidPayload(
                    "\(path).output: export \"\(export)\" must return (pointer: i32, length: i32) or one i64 (pointer << 32 | length); it returns \(Self.describe(type.results))")
            }
        } else if let bad = type.results.first(where: { !Self.isNumber($0) }) {
            throw .invalidPayload("\(path).export: export \"\(export)\" returns a \(bad), which a task cannot answer; return numbers, or bytes (see output)")
        }
        guard args.count == parameters.count else {
            throw .invalidPayload(
                "\(path).args: export \"\(export)\" takes \(parameters.count) argument\(parameters.count == 1 ? "" : "s") \(Self.describe(Array(parameters)))\(input != nil ? " after the input" : ""); \(args.count) given")
        }
        var values: [Value] = []
        values.reserveCapacity(args.count)
        for (i, (value, type)) in zip(args, parameters).enumerated() {
            values.append(try Self.value(value, as: type, path: "\(path).args[\(i)]"))
        }
        return values
    }

    /// The bytes of `input` or `inputBase64` as sent.
    var inputTextBytes: Int {
        switch input {
        case nil: 0
        case .text(let text), .base64(let text): text.utf8.count
        }
    }

    /// About how many bytes of request the call carries, for the queue's budget: base64 as its text.
    var inputBytes: Int {
        let module: Int =
            switch source {
            case .base64(let text): text.utf8.count
            case .registered(let module): module.byteCount
            }
        return module + inputTextBytes + args.reduce(0) { $0 + $1.approximateJSONBytes }
    }

    private static func isNumber(_ type: ValueType) -> Bool {
        switch type {
        case .i32, .i64, .f32, .f64: true
        default: false
        }
    }

    static func describe(_ types: [ValueType]) -> String { "(" + types.map { "\($0)" }.joined(separator: ", ") + ")" }

    /// `json` as a `type` argument.
    /// - Throws: `INVALID_PAYLOAD` naming `path`, the type and what fits it.
    static func value(_ json: JSONValue, as type: ValueType, path: String) throws(CSOPError) -> Value {
        switch type {
        case .i32:
            guard let int = integer(json), int >= Int64(Int32.min), int <= Int64(UInt32.max) else {
                throw .invalidPayload("\(path) must be an integer from -2147483648 to 4294967295 (an i32)")
            }
            return .i32(UInt32(truncatingIfNeeded: int))
        case .i64:
            if let int = integer(json) { return .i64(UInt64(bitPattern: int)) }
            let text: String? =
                switch json {
                case .string(let text): text
                case .number(let number): number.text
                default: nil
                }
            if let text, let unsigned = UInt64(text) { return .i64(unsigned) }
            throw .invalidPayload("\(path) must be an integer from -2^63 to 2^64-1 (an i64; as a decimal string past 2^53)")
        case .f32, .f64:
            let double: Double? =
                switch json {
                case .int(let int): Double(int)
                case .double(let double): double
                case .number(let number): number.doubleValue
                case .string("NaN"): .nan
                case .string("Infinity"): .infinity
                case .string("-Infinity"): -.infinity
                default: nil
                }
            guard let double else { throw .invalidPayload("\(path) must be a number (an \(type))") }
            return type == .f32 ? .f32(Float(double).bitPattern) : .f64(double.bitPattern)
        default:
            throw .invalidPayload("\(path): the export takes a \(type), which a task cannot pass; take numbers, or bytes through input")
        }
    }

    /// An exact integer: an int, an integral double, or a decimal string that fits in 64 bits.
    private static func integer(_ json: JSONValue) -> Int64? {
        switch json {
        case .int(let int): int
        case .double(let double): double.rounded() == double && abs(double) < 0x1p63 ? Int64(double) : nil
        case .string(let text): Int64(text)
        default: nil
        }
    }

    /// A result as the answer has it: see the type's documentation.
    static func json(_ value: Value) -> JSONValue {
        switch value {
        case .i32(let bits): return .int(Int64(Int32(bitPattern: bits)))
        case .i64(let bits):
            let int = Int64(bitPattern: bits)
            return int.magnitude <= 1 << 53 ? .int(int) : .string(String(int))
        case .f32(let bits): return float(Double(Float(bitPattern: bits)))
        case .f64(let bits): return float(Double(bitPattern: bits))
        default: return .null  // refused before the call (`isNumber`)
        }
    }

    private static func float(_ double: Double) -> JSONValue {
        if double.isFinite { return .double(double) }
        return .string(double.isNaN ? "NaN" : double < 0 ? "-Infinity" : "Infinity")
    }
}

extension WasmModule {
    var exportsMemory: Bool {
        module.exports.contains { export in
            if case .memory = export.descriptor { export.name == "memory" } else { false }
        }
    }
}
