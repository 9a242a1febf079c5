#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The `Date` header's value (RFC 9110's IMF-fixdate), formatted once a second and shared by
/// every answer written in that second.
enum HTTPDate {
    private static let cache = Mutex<(second: Int, text: String)>((-1, ""))

    static func now() -> String {
        var clock = timespec()
        clock_gettime(CLOCK_REALTIME, &clock)
        let second = clock.tv_sec
        if let text = cache.withLock({ $0.second == second ? $0.text : nil }) { return text }
        var seconds = time_t(second)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        // strftime's %a and %b are English in the C locale, which a Swift program keeps
        // unless it calls setlocale.
        var buffer = [CChar](repeating: 0, count: 64)
        let count = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        let text = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        cache.withLock { $0 = (second, text) }
        return text
    }
}
