import CJavaScriptCore
import Glibc

/// Functions libjavascriptcoregtk exports without declaring them in its installed headers,
/// looked up once at run time, so a JavaScriptCore without one still loads (each is optional
/// and its user says what it does without it).
struct JavaScriptCorePrivate: @unchecked Sendable {  // Immutable C function addresses.
    typealias LockFunction = @convention(c) (JSContextRef?) -> Void
    typealias DrainFunction = @convention(c) (JSContextGroupRef?) -> Void
    typealias ConfigureSignalFunction = @convention(c) (Int32) -> Bool

    /// `JSLock` and `JSUnlock` (JSLockRefPrivate.h): take and release the recursive API lock.
    let lock: LockFunction?
    let unlock: LockFunction?
    /// `JSC::VM::drainMicrotasks()`, JavaScriptCore's own "run the promise reactions now" (what
    /// its test shell's `drainMicrotasks()` calls from inside running JavaScript). A member
    /// function without arguments takes `this` as a C function takes its first argument, and a
    /// JSContextGroupRef is the VM itself (APICast.h). Call it holding the API lock.
    let drainMicrotasks: DrainFunction?
    /// `JSConfigureSignalForGC` (JSBasePrivate.h): the thread suspend/resume signal, settable
    /// only before JavaScriptCore initializes.
    let configureSignalForGC: ConfigureSignalFunction?

    static let shared = JavaScriptCorePrivate()
    static let soname = "libjavascriptcoregtk-4.1.so.0"

    private init() {
        // The plugin may be loaded with RTLD_LOCAL, so the library is opened by the soname the
        // plugin links (javascriptcoregtk-4.1) rather than searched in the global scope; it is
        // loaded already and stays loaded.
        guard let library = dlopen(Self.soname, RTLD_LAZY | RTLD_NOLOAD) else {
            lock = nil
            unlock = nil
            drainMicrotasks = nil
            configureSignalForGC = nil
            return
        }
        func symbol<F>(_ name: String, as type: F.Type) -> F? {
            dlsym(library, name).map { unsafeBitCast($0, to: type) }
        }
        let lock = symbol("JSLock", as: LockFunction.self)
        let unlock = symbol("JSUnlock", as: LockFunction.self)
        let drain = symbol("_ZN3JSC2VM15drainMicrotasksEv", as: DrainFunction.self)
        // All three or none: draining needs the lock.
        let complete = lock != nil && unlock != nil && drain != nil
        self.lock = complete ? lock : nil
        self.unlock = complete ? unlock : nil
        drainMicrotasks = complete ? drain : nil
        configureSignalForGC = symbol("JSConfigureSignalForGC", as: ConfigureSignalFunction.self)
        dlclose(library)
    }
}
