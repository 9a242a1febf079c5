import CJavaScriptCore
import Glibc

/// Reads how much memory one JavaScriptCore VM (one context group) holds, in constant time,
/// so the watchdog can poll it while a script runs and the memory cap counts the script's own
/// VM rather than the whole process.
///
/// What it reads is `JSC::Heap::capacity()`, the figure JavaScriptCore's own
/// `JSGetMemoryUsageStatistics` reports as `heapCapacity`: the bytes of the garbage-collected
/// blocks the VM has allocated (objects, array storage, short strings; live or garbage not yet
/// collected), plus its `ArrayBuffer`s, plus the extra memory (the storage of long strings and
/// of typed arrays made from a length) that its last collection found alive. That last part is
/// counted at each collection, which JavaScriptCore starts whenever allocation since the
/// previous one reaches about the heap's size, so a script that allocates mostly such storage
/// can go up to about twice the cap before the figure shows it.
///
/// `JSGetMemoryUsageStatistics` itself cannot be polled: it also counts every object in the
/// heap by type (220 ms for two million objects) and allocates its answer in the VM.
/// `Heap::capacity()` is exported by libjavascriptcoregtk, but it takes the VM's `Heap`, a
/// member of `JSC::VM` (which a context group is, APICast.h) at an offset no installed header
/// gives. ``heapOffsets`` lists it for the versions it was read for, from the machine code of
/// `JSReportExtraMemoryCost` (`objdump -d`: the constant added to the VM pointer before
/// `Heap::deprecatedReportExtraMemorySlowCase` is called). In those versions `capacity()` only
/// loads fields of the `Heap` (no pointer is followed), and before it is used the offset is
/// checked once per process on a scratch VM: its figure must equal `heapCapacity` and follow
/// an extra-memory report exactly. On any other version, or when the check fails, ``shared``
/// is nil and the memory cap counts process RSS instead (see ``ExecutionWatch``).
struct JavaScriptCoreHeap: @unchecked Sendable {  // Immutable: a C function address and an offset.
    /// A non-virtual C++ member function without arguments takes `this` as a C function takes
    /// its first argument (the Itanium ABI).
    typealias CapacityFunction = @convention(c) (UnsafeRawPointer?) -> UInt
    typealias StatisticsFunction = @convention(c) (JSContextRef?) -> JSObjectRef?
    typealias ReportFunction = @convention(c) (JSContextRef?, Int) -> Void
    typealias VersionFunction = @convention(c) () -> UInt32

    /// `offsetof(JSC::VM, heap)` by JavaScriptCore "major.minor" version.
    static let heapOffsets: [String: Int] = ["2.50": 0xC0]

    /// Whether this JavaScriptCore's VM memory can be measured, and if not why.
    enum Probe: Sendable {
        case available(JavaScriptCoreHeap)
        case unavailable(String)
    }

    /// The outcome of the one-time check; taken the first time a worker needs it.
    static let probe = makeProbe()

    /// The meter, or nil when the memory cap must count process RSS.
    static var shared: JavaScriptCoreHeap? {
        if case .available(let heap) = probe { heap } else { nil }
    }

    private let capacity: CapacityFunction
    private let offset: Int

    /// The bytes `group`'s VM holds, as described above. Call it on the thread that runs the
    /// VM, holding its lock (from the watchdog's callback, or between tasks), as
    /// `JSGetMemoryUsageStatistics` does; `group` must be alive.
    func bytes(_ group: JSContextGroupRef) -> UInt64 {
        UInt64(capacity(UnsafeRawPointer(group) + offset))
    }

    private static func makeProbe() -> Probe {
        // The scratch VM below starts JavaScriptCore, which fixes its signal when it starts.
        _ = JavaScriptCoreSignals.setUp
        guard let library = dlopen(JavaScriptCorePrivate.soname, RTLD_LAZY | RTLD_NOLOAD) else {
            return .unavailable("\(JavaScriptCorePrivate.soname) is not loaded")
        }
        defer { dlclose(library) }
        func symbol<F>(_ name: String, as type: F.Type) -> F? {
            dlsym(library, name).map { unsafeBitCast($0, to: type) }
        }
        guard let major = symbol("jsc_get_major_version", as: VersionFunction.self),
            let minor = symbol("jsc_get_minor_version", as: VersionFunction.self),
            let micro = symbol("jsc_get_micro_version", as: VersionFunction.self)
        else { return .unavailable("this JavaScriptCore does not tell its version") }
        let version = "\(major()).\(minor())"
        guard let offset = heapOffsets[version] else {
            return .unavailable("the VM's Heap offset is not known for JavaScriptCore \(version).\(micro()) (known: \(heapOffsets.keys.sorted().joined(separator: ", ")))")
        }
        guard let capacity = symbol("_ZN3JSC4Heap8capacityEv", as: CapacityFunction.self),
            let statistics = symbol("JSGetMemoryUsageStatistics", as: StatisticsFunction.self),
            let report = symbol("JSReportExtraMemoryCost", as: ReportFunction.self)
        else { return .unavailable("JavaScriptCore \(version) does not export JSC::Heap::capacity, JSGetMemoryUsageStatistics or JSReportExtraMemoryCost") }
        let heap = JavaScriptCoreHeap(capacity: capacity, offset: offset)
        guard let group = JSContextGroupCreate() else { return .unavailable("a scratch VM could not be made") }
        defer { JSContextGroupRelease(group) }
        guard let context = JSGlobalContextCreateInGroup(group, nil) else { return .unavailable("a scratch VM could not be made") }
        defer { JSGlobalContextRelease(context) }
        /// `heapCapacity` as JavaScriptCore reports it, and ours, which may differ by the blocks
        /// its report allocates.
        func compare() -> (ours: UInt64, theirs: UInt64)? {
            let ours = heap.bytes(group)
            guard let object = statistics(context),
                let value = JSString("heapCapacity").withRef({ JSObjectGetProperty(context, object, $0, nil) }),
                JSValueIsNumber(context, value)
            else { return nil }
            let theirs = JSValueToNumber(context, value, nil)
            guard theirs >= 0, theirs < 0x1p60 else { return nil }
            return (ours, UInt64(theirs))
        }
        func near(_ a: UInt64, _ b: UInt64) -> Bool { (a > b ? a - b : b - a) <= 64 << 10 }
        let reported: UInt64 = 1 << 20  // over JavaScriptCore's 256-byte floor, under a collection's trigger
        guard let before = compare(), near(before.ours, before.theirs) else {
            return .unavailable("JSC::Heap::capacity at VM offset \(offset) disagrees with JSGetMemoryUsageStatistics on JavaScriptCore \(version).\(micro())")
        }
        report(context, Int(reported))
        guard let after = compare(), near(after.ours, after.theirs), near(after.ours, before.ours + reported) else {
            return .unavailable("JSC::Heap::capacity at VM offset \(offset) does not follow reported memory on JavaScriptCore \(version).\(micro())")
        }
        return .available(heap)
    }
}
