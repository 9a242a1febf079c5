/// Rewrites a WebAssembly module so that JavaScriptCore's compiler (the compute plugin's
/// `WasmJIT`) can run it under a task's limits, which JavaScriptCore's own watchdog does not
/// enforce inside wasm code.
///
/// What the rewritten module does beside the original:
/// - It imports one function, `csop.check: [] -> []`, as function 0 (every other function
///   index moves up by one: calls, `ref.func`, exports, the start function and element
///   segments are renumbered). `check` returns when the task may go on and throws when it must
///   stop (timeout, cancellation); the exception unwinds every wasm frame, since modules that
///   could catch it (the exception-handling proposal) are refused.
/// - Every function counts its calls down in a new global and calls `check` each
///   ``callInterval`` calls, on entry.
/// - Every loop counts its iterations down in a new local of its function and calls `check`
///   each ``loopInterval`` iterations. A loop without parameters is wrapped so that the call
///   sits outside it: `block $B (loop $R (block $T (loop $L …) br $B) check br $R)`, with
///   branches that leave the loop renumbered past the three new labels; a call inside a hot
///   loop, even one that rarely runs, costs JavaScriptCore's compiler 2× on a tight loop, this
///   shape about 15 %. A loop with parameters keeps the call inside.
/// - Memories and tables get a maximum no larger than the caps, so `memory.grow` past the
///   memory cap returns -1, as the spec has it.
///
/// Between two checks at most about (``callInterval`` + call depth) × ``loopInterval`` loop
/// iterations run, and straight-line code is bounded by the module's size.
///
/// Custom sections (names, debug information) are dropped. Shared memories, atomics,
/// exception handling, 64-bit memories and tables, and the GC and typed-function-reference
/// proposals are refused: WasmKit's validation lets some of them through, and each either
/// could escape the checks or has no use without imports.
public enum WasmInstrumenter {
    /// Loop iterations between two checks.
    public static let loopInterval: Int32 = 8192
    /// Function entries between two checks.
    public static let callInterval: Int32 = 1024
    /// The import `check` is: `csop.check`.
    public static let checkModule = "csop"
    public static let checkName = "check"

    public enum Failure: Error, Equatable, Sendable {
        /// The module uses what this engine refuses; the text says what.
        case unsupported(String)
        /// The bytes end early or hold an encoding this reader does not know (WasmKit
        /// validated them, so this means a feature it accepts and this rewriter does not).
        case malformed(String)
    }

    /// A value type of a function's parameters or results.
    public enum ValueType: UInt8, Sendable {
        case i32 = 0x7F, i64 = 0x7E, f32 = 0x7D, f64 = 0x7C, v128 = 0x7B, funcRef = 0x70, externRef = 0x6F
    }

    /// A function's type.
    public struct FunctionType: Equatable, Sendable {
        public var parameters: [ValueType]
        public var results: [ValueType]

        public init(parameters: [ValueType], results: [ValueType]) {
            self.parameters = parameters
            self.results = results
        }
    }

    public struct Output: Sendable {
        /// The rewritten module.
        public var bytes: [UInt8]
        /// The largest initial size of the module's memories, in 64 KiB pages, when one is over
        /// `maxMemoryPages` (the module cannot be instantiated under the cap); nil otherwise.
        public var initialPagesOverCap: UInt64?
        /// The type of each exported function, by export name.
        public var exports: [String: FunctionType]
        /// The exported functions' names, in export order.
        public var exportNames: [String]
        /// Whether a memory is exported as "memory".
        public var exportsMemory: Bool
    }

    /// The rewritten module.
    /// - Parameters:
    ///   - maxMemoryPages: the most 64 KiB pages a memory may grow to.
    ///   - maxTableElements: the most elements a table may grow to.
    /// - Throws: ``Failure``; never traps, whatever the bytes (fuzzed: `csop-fuzz wasm`).
    public static func instrument(_ module: [UInt8], maxMemoryPages: UInt32, maxTableElements: UInt32) throws(Failure) -> Output {
        var rewriter = try Rewriter(module, maxMemoryPages: maxMemoryPages, maxTableElements: maxTableElements)
        return try rewriter.run()
    }
}

/// Reads a module's bytes: LEB128 integers and the encodings of types and instructions.
private struct WasmReader {
    typealias Failure = WasmInstrumenter.Failure
    let bytes: [UInt8]
    var at: Int
    var end: Int

    init(_ bytes: [UInt8], at: Int, end: Int) {
        self.bytes = bytes
        self.at = at
        self.end = end
    }

    var atEnd: Bool { at >= end }

    mutating func byte() throws(Failure) -> UInt8 {
        guard at < end else { throw .malformed("the module ends early at byte \(at)") }
        defer { at += 1 }
        return bytes[at]
    }

    func peek() throws(Failure) -> UInt8 {
        guard at < end else { throw .malformed("the module ends early at byte \(at)") }
        return bytes[at]
    }

    mutating func u32() throws(Failure) -> UInt32 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { break }
            shift += 7
            guard shift < 35 else { throw .malformed("an integer at byte \(at) is longer than 5 bytes") }
        }
        guard result <= UInt64(UInt32.max) else { throw .malformed("an integer at byte \(at) is over 32 bits") }
        return UInt32(result)
    }

    /// Skips a signed or unsigned LEB128 of up to 64 bits.
    mutating func skipLEB() throws(Failure) {
        for _ in 0..<10 {
            if try byte() & 0x80 == 0 { return }
        }
        throw .malformed("an integer at byte \(at) is longer than 10 bytes")
    }

    mutating func skip(_ count: Int) throws(Failure) {
        guard count >= 0, at + count <= end else { throw .malformed("the module ends early at byte \(at)") }
        at += count
    }

    /// A value type (one byte; typed references are refused). - Returns: its byte.
    @discardableResult
    mutating func skipValueType() throws(Failure) -> UInt8 {
        let b = try byte()
        if b == 0x63 || b == 0x64 { throw .unsupported("typed function references") }
        return b
    }

    mutating func valueType() throws(Failure) -> WasmInstrumenter.ValueType {
        let byte = try skipValueType()
        guard let type = WasmInstrumenter.ValueType(rawValue: byte) else { throw .unsupported("value type 0x\(String(byte, radix: 16))") }
        return type
    }

    /// A block type. - Returns: the type index, when it is one (a negative first byte is a
    /// value type or empty).
    mutating func blockType() throws(Failure) -> UInt32? {
        let first = try peek()
        if first == 0x40 || first & 0xC0 == 0x40 {
            try skipValueType()
            return nil
        }
        return try u32()
    }

    /// A memory immediate: alignment (with a memory index when bit 6 is set) and offset.
    mutating func skipMemoryArgument() throws(Failure) {
        let align = try u32()
        if align & 0x40 != 0 { _ = try u32() }
        try skipLEB()
    }
}

private struct Rewriter {
    typealias Failure = WasmInstrumenter.Failure

    let input: [UInt8]
    let maxMemoryPages: UInt32
    let maxTableElements: UInt32
    /// Section payloads by id.
    var sections: [UInt8: Range<Int>] = [:]
    /// The type section's entries.
    var types: [WasmInstrumenter.FunctionType] = []
    /// Each defined function's type index.
    var functionTypes: [UInt32] = []
    var globalCount: UInt32 = 0
    var initialPagesOverCap: UInt64?

    init(_ input: [UInt8], maxMemoryPages: UInt32, maxTableElements: UInt32) throws(Failure) {
        self.input = input
        self.maxMemoryPages = maxMemoryPages
        self.maxTableElements = maxTableElements
        guard input.count >= 8, input[0..<4].elementsEqual([0x00, 0x61, 0x73, 0x6D]), input[4..<8].elementsEqual([1, 0, 0, 0]) else {
            throw .malformed("not a WebAssembly 1.0 binary")
        }
        var reader = WasmReader(input, at: 8, end: input.count)
        while !reader.atEnd {
            let id = try reader.byte()
            let size = Int(try reader.u32())
            let start = reader.at
            try reader.skip(size)
            if id == 0 { continue }  // custom: dropped
            guard sections[id] == nil else { throw .malformed("section \(id) appears twice") }
            sections[id] = start..<(start + size)
        }
        if sections[13] != nil { throw .unsupported("exception handling (a tag section)") }
    }

    func reader(_ id: UInt8) -> WasmReader? {
        sections[id].map { WasmReader(input, at: $0.lowerBound, end: $0.upperBound) }
    }

    /// The index of the added `check` type, the added global, and the function index shift.
    var checkType: UInt32 { UInt32(types.count) }
    var counterGlobal: UInt32 { globalCount }

    mutating func run() throws(Failure) -> WasmInstrumenter.Output {
        try readTypes()
        try readFunctions()
        if var globals = reader(6) { globalCount = try globals.u32() }
        guard globalCount < UInt32.max, types.count < Int(UInt32.max) else { throw .malformed("too many globals or types") }
        if var imports = reader(2), try imports.u32() != 0 { throw .unsupported("imports") }

        var out: [UInt8] = [0x00, 0x61, 0x73, 0x6D, 0x01, 0x00, 0x00, 0x00]
        // Sections in the order the binary format requires.
        for id: UInt8 in [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 10, 11] {
            let payload: [UInt8]?
            switch id {
            case 1: payload = try typeSection()
            case 2: payload = importSection()
            case 4: payload = try sections[4] == nil ? nil : tableSection()
            case 5: payload = try sections[5] == nil ? nil : memorySection()
            case 6: payload = try globalSection()
            case 7: payload = try sections[7] == nil ? nil : exportSection()
            case 8: payload = try sections[8] == nil ? nil : startSection()
            case 9: payload = try sections[9] == nil ? nil : elementSection()
            case 10: payload = try sections[10] == nil ? nil : codeSection()
            default: payload = sections[id].map { Array(input[$0]) }
            }
            guard let payload else { continue }
            out.append(id)
            appendU32(&out, UInt32(payload.count))
            out += payload
        }
        var output = WasmInstrumenter.Output(bytes: out, initialPagesOverCap: initialPagesOverCap, exports: [:], exportNames: [], exportsMemory: false)
        try readExports(into: &output)
        return output
    }

    func readExports(into output: inout WasmInstrumenter.Output) throws(Failure) {
        guard var r = reader(7) else { return }
        for _ in 0..<(try r.u32()) {
            let length = Int(try r.u32())
            let start = r.at
            try r.skip(length)
            let name = String(decoding: input[start..<r.at], as: UTF8.self)
            let kind = try r.byte()
            let index = Int(try r.u32())
            if kind == 0x00 {
                guard index < functionTypes.count else { throw .malformed("export \(name) names function \(index), which does not exist") }
                output.exports[name] = types[Int(functionTypes[index])]
                output.exportNames.append(name)
            } else if kind == 0x02, name == "memory" {
                output.exportsMemory = true
            }
        }
    }

    // MARK: Sections

    mutating func readTypes() throws(Failure) {
        guard var r = reader(1) else { return }
        let count = try r.u32()
        for _ in 0..<count {
            guard try r.byte() == 0x60 else { throw .unsupported("types other than function types (the GC proposal)") }
            var parameters: [WasmInstrumenter.ValueType] = []
            for _ in 0..<(try r.u32()) { parameters.append(try r.valueType()) }
            var results: [WasmInstrumenter.ValueType] = []
            for _ in 0..<(try r.u32()) { results.append(try r.valueType()) }
            types.append(WasmInstrumenter.FunctionType(parameters: parameters, results: results))
        }
    }

    mutating func readFunctions() throws(Failure) {
        guard var r = reader(3) else { return }
        let count = try r.u32()
        for _ in 0..<count {
            let type = try r.u32()
            guard Int(type) < types.count else { throw .malformed("function type \(type) does not exist") }
            functionTypes.append(type)
        }
    }

    func typeSection() throws(Failure) -> [UInt8] {
        var out: [UInt8] = []
        appendU32(&out, UInt32(types.count + 1))
        if var r = reader(1) {
            _ = try r.u32()
            out += input[r.at..<r.end]
        }
        out += [0x60, 0x00, 0x00]
        return out
    }

    func importSection() -> [UInt8] {
        var out: [UInt8] = [0x01]
        for name in [WasmInstrumenter.checkModule, WasmInstrumenter.checkName] {
            appendU32(&out, UInt32(name.utf8.count))
            out += name.utf8
        }
        out.append(0x00)
        appendU32(&out, checkType)
        return out
    }

    func tableSection() throws(Failure) -> [UInt8] {
        var r = reader(4)!
        var out: [UInt8] = []
        let count = try r.u32()
        appendU32(&out, count)
        for _ in 0..<count {
            let start = r.at
            guard try r.peek() != 0x40 else { throw .unsupported("tables with an initializer (typed function references)") }
            try r.skipValueType()
            out += input[start..<r.at]
            out += try limits(&r, cap: maxTableElements, what: "table") { _ in }
        }
        return out
    }

    mutating func memorySection() throws(Failure) -> [UInt8] {
        var r = reader(5)!
        var out: [UInt8] = []
        let count = try r.u32()
        appendU32(&out, count)
        var over: UInt64?
        for _ in 0..<count {
            out += try limits(&r, cap: maxMemoryPages, what: "memory") { initial in over = max(over ?? 0, initial) }
        }
        initialPagesOverCap = over
        return out
    }

    /// Limits with a maximum no larger than `cap`; `overCap` hears of a minimum past it.
    func limits(_ r: inout WasmReader, cap: UInt32, what: String, overCap: (UInt64) -> Void) throws(Failure) -> [UInt8] {
        let flags = try r.byte()
        switch flags {
        case 0x00, 0x01: break
        case 0x02, 0x03: throw .unsupported("shared memory (threads)")
        default: throw .unsupported("a 64-bit \(what), or limits flags \(flags)")
        }
        let minimum = try r.u32()
        let maximum = flags == 0x01 ? try r.u32() : UInt32.max
        if minimum > cap { overCap(UInt64(minimum)) }
        var out: [UInt8] = [0x01]
        appendU32(&out, minimum)
        appendU32(&out, max(min(maximum, cap), minimum))
        return out
    }

    func globalSection() throws(Failure) -> [UInt8] {
        var out: [UInt8] = []
        appendU32(&out, globalCount + 1)
        if var r = reader(6) {
            let count = try r.u32()
            for _ in 0..<count {
                let start = r.at
                try r.skipValueType()
                _ = try r.byte()  // mutability
                out += input[start..<r.at]
                var code = CodeRewriter(input: input, reader: r, types: types)
                try code.constantExpression(into: &out)
                r = code.reader
            }
        }
        out += [0x7F, 0x01, 0x41]
        appendS32(&out, WasmInstrumenter.callInterval)
        out.append(0x0B)
        return out
    }

    func exportSection() throws(Failure) -> [UInt8] {
        var r = reader(7)!
        var out: [UInt8] = []
        let count = try r.u32()
        appendU32(&out, count)
        for _ in 0..<count {
            let start = r.at
            let length = Int(try r.u32())
            try r.skip(length)
            let kind = try r.byte()
            out += input[start..<r.at]
            let index = try r.u32()
            appendU32(&out, kind == 0x00 ? try shifted(index) : index)
        }
        return out
    }

    func startSection() throws(Failure) -> [UInt8] {
        var r = reader(8)!
        var out: [UInt8] = []
        appendU32(&out, try shifted(try r.u32()))
        return out
    }

    func elementSection() throws(Failure) -> [UInt8] {
        var r = reader(9)!
        var out: [UInt8] = []
        let count = try r.u32()
        appendU32(&out, count)
        for _ in 0..<count {
            let flags = try r.u32()
            appendU32(&out, flags)
            guard flags <= 7 else { throw .malformed("element segment flags \(flags)") }
            if flags == 2 || flags == 6 { appendU32(&out, try r.u32()) }  // table index
            if flags & 0x01 == 0 {  // active: an offset expression
                var code = CodeRewriter(input: input, reader: r, types: types)
                try code.constantExpression(into: &out)
                r = code.reader
            }
            if flags & 0x03 != 0 {  // element kind or reference type
                let start = r.at
                try r.skipValueType()
                out += input[start..<r.at]
            }
            let items = try r.u32()
            appendU32(&out, items)
            for _ in 0..<items {
                if flags & 0x04 == 0 {
                    appendU32(&out, try shifted(try r.u32()))  // a function index
                } else {
                    var code = CodeRewriter(input: input, reader: r, types: types)
                    try code.constantExpression(into: &out)
                    r = code.reader
                }
            }
        }
        return out
    }

    func codeSection() throws(Failure) -> [UInt8] {
        var r = reader(10)!
        var out: [UInt8] = []
        let count = try r.u32()
        guard Int(count) == functionTypes.count else { throw .malformed("the code section has \(count) bodies for \(functionTypes.count) functions") }
        appendU32(&out, count)
        for function in 0..<Int(count) {
            let size = Int(try r.u32())
            let end = r.at + size
            guard end <= r.end else { throw .malformed("a function body runs past its section") }
            var body: [UInt8] = []
            var locals = WasmReader(input, at: r.at, end: end)
            let groups = try locals.u32()
            var declared = types[Int(functionTypes[function])].parameters.count
            guard groups < UInt32.max else { throw .malformed("too many local groups") }
            appendU32(&body, groups + 1)
            let groupsStart = locals.at
            for _ in 0..<groups {
                declared += Int(try locals.u32())
                try locals.skipValueType()
            }
            body += input[groupsStart..<locals.at]
            body += [0x01, 0x7F]  // the loop counter: one i32
            var code = CodeRewriter(input: input, reader: locals, types: types)
            guard let counter = UInt32(exactly: declared) else { throw .malformed("a function declares more than 2^32 locals") }
            code.counterLocal = counter
            code.counterGlobal = counterGlobal
            try code.functionBody(into: &body)
            guard code.reader.at == end else { throw .malformed("a function body ends before its size says") }
            appendU32(&out, UInt32(body.count))
            out += body
            r.at = end
        }
        return out
    }
}

/// Copies instructions, renumbering functions and branches and adding the checks.
private struct CodeRewriter {
    typealias Failure = WasmInstrumenter.Failure

    let input: [UInt8]
    var reader: WasmReader
    let types: [WasmInstrumenter.FunctionType]
    var counterLocal: UInt32 = 0
    var counterGlobal: UInt32 = 0
    /// Labels added outside each open block, innermost last: 3 for a wrapped loop, else 0.
    private var added: [Int] = []

    init(input: [UInt8], reader: WasmReader, types: [WasmInstrumenter.FunctionType]) {
        self.input = input
        self.reader = reader
        self.types = types
    }

    /// A constant expression (a global's initializer, a segment's offset or element): through its `end`.
    mutating func constantExpression(into out: inout [UInt8]) throws(Failure) {
        added = [0]
        try instructions(into: &out, instrument: false)
    }

    /// A function's instructions after its locals, with the entry check first.
    mutating func functionBody(into out: inout [UInt8]) throws(Failure) {
        // global.get $calls; i32.const 1; i32.sub; global.set $calls; global.get $calls; i32.eqz
        // if: i32.const callInterval; global.set $calls; call $check; end
        // i32.const loopInterval; local.set $counter
        out.append(0x23)
        appendU32(&out, counterGlobal)
        out += [0x41, 0x01, 0x6B, 0x24]
        appendU32(&out, counterGlobal)
        out.append(0x23)
        appendU32(&out, counterGlobal)
        out += [0x45, 0x04, 0x40, 0x41]
        appendS32(&out, WasmInstrumenter.callInterval)
        out.append(0x24)
        appendU32(&out, counterGlobal)
        out += [0x10, 0x00, 0x0B]
        resetCounter(&out)
        added = [0]
        try instructions(into: &out, instrument: true)
    }

    private func resetCounter(_ out: inout [UInt8]) {
        out.append(0x41)
        appendS32(&out, WasmInstrumenter.loopInterval)
        out.append(0x21)
        appendU32(&out, counterLocal)
    }

    /// local.get $counter; i32.const 1; i32.sub; local.tee $counter; i32.eqz
    private func countDown(_ out: inout [UInt8]) {
        out.append(0x20)
        appendU32(&out, counterLocal)
        out += [0x41, 0x01, 0x6B, 0x22]
        appendU32(&out, counterLocal)
        out.append(0x45)
    }

    /// A branch's label depth with the labels added between the branch and its target.
    private func depth(_ label: UInt32) throws(Failure) -> UInt32 {
        let target = added.count - 1 - Int(label)
        guard target >= 0 else { throw .malformed("a branch to label \(label) outside its function") }
        var extra = 0
        for frame in (target + 1)..<added.count { extra += added[frame] }
        return label + UInt32(extra)
    }

    private mutating func instructions(into out: inout [UInt8], instrument: Bool) throws(Failure) {
        while !added.isEmpty {
            let start = reader.at
            let op = try reader.byte()
            switch op {
            case 0x02, 0x04:  // block, if
                _ = try reader.blockType()
                out += input[start..<reader.at]
                added.append(0)
            case 0x03:  // loop
                let typeStart = reader.at
                let type = try reader.blockType()
                let blockType = input[typeStart..<reader.at]
                let parameters = try type.map { index throws(Failure) -> Int in
                    guard Int(index) < types.count else { throw .malformed("block type \(index) does not exist") }
                    return types[Int(index)].parameters.count
                } ?? 0
                guard instrument else {
                    out += input[start..<reader.at]
                    added.append(0)
                    break
                }
                if parameters == 0 {
                    // block $B bt; loop $R bt; block $T; loop $L bt; count down; br_if $T
                    out.append(0x02)
                    out += blockType
                    out.append(0x03)
                    out += blockType
                    out += [0x02, 0x40, 0x03]
                    out += blockType
                    countDown(&out)
                    out += [0x0D, 0x01]
                    added.append(3)
                } else {
                    // loop bt; count down; if: reset; call $check; end
                    out.append(0x03)
                    out += blockType
                    countDown(&out)
                    out += [0x04, 0x40]
                    resetCounter(&out)
                    out += [0x10, 0x00, 0x0B]
                    added.append(0)
                }
            case 0x0B:  // end
                out.append(0x0B)
                if added.removeLast() == 3 {
                    // br $B; end $T; reset; call $check; br $R; end $R; end $B
                    out += [0x0C, 0x02, 0x0B]
                    resetCounter(&out)
                    out += [0x10, 0x00, 0x0C, 0x00, 0x0B, 0x0B]
                }
            case 0x0C, 0x0D:  // br, br_if
                out.append(op)
                appendU32(&out, try depth(try reader.u32()))
            case 0x0E:  // br_table
                out.append(op)
                let count = try reader.u32()
                appendU32(&out, count)
                for _ in 0...count { appendU32(&out, try depth(try reader.u32())) }
            case 0x10, 0x12, 0xD2:  // call, return_call, ref.func
                out.append(op)
                appendU32(&out, try shifted(try reader.u32()))
            case 0x06, 0x07, 0x08, 0x09, 0x0A, 0x18, 0x19, 0x1F:
                throw .unsupported("exception handling")
            case 0x14, 0x15, 0xD3, 0xD4, 0xD5, 0xD6:
                throw .unsupported("typed function references")
            case 0xFB:
                throw .unsupported("the GC proposal")
            case 0xFE:
                throw .unsupported("atomics (threads)")
            default:
                try skipImmediates(op)
                out += input[start..<reader.at]
            }
        }
    }

    /// Skips the immediates of an instruction that needs no rewriting.
    private mutating func skipImmediates(_ op: UInt8) throws(Failure) {
        switch op {
        case 0x00, 0x01, 0x05, 0x0F, 0x1A, 0x1B, 0xD1, 0x45...0xC4:
            break
        case 0x11, 0x13:  // call_indirect, return_call_indirect: type, table
            _ = try reader.u32()
            _ = try reader.u32()
        case 0x1C:  // select with types
            let count = try reader.u32()
            for _ in 0..<count { try reader.skipValueType() }
        case 0x20...0x26, 0x3F, 0x40:  // locals, globals, table.get/set, memory.size/grow
            _ = try reader.u32()
        case 0x28...0x3E:
            try reader.skipMemoryArgument()
        case 0x41, 0x42:
            try reader.skipLEB()
        case 0x43:
            try reader.skip(4)
        case 0x44:
            try reader.skip(8)
        case 0xD0:  // ref.null: a heap type
            try reader.skipLEB()
        case 0xFC:
            let sub = try reader.u32()
            switch sub {
            case 0...7: break
            case 8, 12, 14: _ = try reader.u32(); _ = try reader.u32()  // memory.init, table.init, table.copy
            case 9, 11, 13, 15, 16, 17: _ = try reader.u32()  // data.drop, memory.fill, elem.drop, table.grow/size/fill
            case 10: _ = try reader.u32(); _ = try reader.u32()  // memory.copy
            default: throw .malformed("instruction 0xFC \(sub)")
            }
        case 0xFD:
            let sub = try reader.u32()
            switch sub {
            case 0...11, 92, 93: try reader.skipMemoryArgument()
            case 12, 13: try reader.skip(16)  // v128.const, i8x16.shuffle
            case 21...34: try reader.skip(1)  // lane
            case 84...91:
                try reader.skipMemoryArgument()
                try reader.skip(1)
            default: break
            }
        default:
            throw .malformed("instruction 0x\(String(op, radix: 16)) at byte \(reader.at - 1)")
        }
    }
}

/// A function index after the added import.
private func shifted(_ index: UInt32) throws(WasmInstrumenter.Failure) -> UInt32 {
    guard index < UInt32.max else { throw .malformed("function index \(index) is out of range") }
    return index + 1
}

private func appendU32(_ out: inout [UInt8], _ value: UInt32) {
    var value = value
    repeat {
        var byte = UInt8(value & 0x7F)
        value >>= 7
        if value != 0 { byte |= 0x80 }
        out.append(byte)
    } while value != 0
}

private func appendS32(_ out: inout [UInt8], _ value: Int32) {
    var value = Int64(value)
    while true {
        let byte = UInt8(value & 0x7F)
        value >>= 7
        if (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0) {
            out.append(byte)
            return
        }
        out.append(byte | 0x80)
    }
}
