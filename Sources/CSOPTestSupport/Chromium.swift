import Foundation
import Synchronization

/// Headless Chromium (Debian's `chromium`) showing one page, for the browser client's tests.
/// A test that needs it fails, never skips, when it is missing: scripts/test.sh installs it.
public final class Chromium: Sendable {
    private let process: SpawnedProcess
    private let profile: TemporaryDirectory
    private let output: LockedBox<[UInt8]>

    /// The browser executable: `$CSOP_CHROMIUM`, else the first of chromium and
    /// chromium-browser on the usual paths.
    public static var executable: String? {
        if let path = ProcessInfo.processInfo.environment["CSOP_CHROMIUM"] { return path }
        return ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/local/bin/chromium"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Opens `url` in a new headless browser with a fresh profile.
    public init(url: String) throws {
        guard let executable = Self.executable else {
            throw ServeProcessError(message: "Chromium is not installed: apt-get install chromium (scripts/test.sh does), or set CSOP_CHROMIUM")
        }
        profile = try TemporaryDirectory("csop-chromium")
        let process = try SpawnedProcess(
            executable,
            [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--user-data-dir=\(profile.path)",
                "--enable-logging=stderr", "--v=0", url,
            ], stdin: .null, stdout: .pipe, stderr: .toStdout)
        self.process = process
        let output = LockedBox<[UInt8]>([])
        self.output = output
        let fd = process.output!
        Thread {
            var buffer = [UInt8](repeating: 0, count: 8192)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n <= 0 { break }
                output.withLock { if $0.count < 4 << 20 { $0 += buffer[0..<n] } }
            }
            close(fd)
        }.start()
    }

    /// The page's console messages as Chromium logged them (lines with "CONSOLE").
    public var consoleLines: [String] {
        output.withLock { String(decoding: $0, as: UTF8.self) }.split(separator: "\n").filter { $0.contains("CONSOLE") }.map(String.init)
    }

    /// Everything the browser printed.
    public var log: String { output.withLock { String(decoding: $0, as: UTF8.self) } }

    /// Saves a PNG of `url` as a `width`×`height` window shows it after `virtualMilliseconds`
    /// of page time (timers run ahead; the page's fetches are waited for). Returns what the
    /// browser printed.
    public static func screenshot(url: String, to path: String, width: Int = 1280, height: Int = 1100, virtualMilliseconds: Int = 9000)
        async throws -> String
    {
        guard let executable else {
            throw ServeProcessError(message: "Chromium is not installed: apt-get install chromium (scripts/test.sh does), or set CSOP_CHROMIUM")
        }
        let profile = try TemporaryDirectory("csop-chromium")
        let result = try await ChildProcess.run(
            executable,
            [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--user-data-dir=\(profile.path)", "--hide-scrollbars",
                "--screenshot=\(path)", "--window-size=\(width),\(height)", "--virtual-time-budget=\(virtualMilliseconds)", url,
            ], timeout: 120)
        return result.stdout + result.stderr
    }

    /// Ends the browser and its child processes.
    public func stop() async {
        let process = self.process
        _ = try? await OwnThread.run { process.stopBlocking(signal: SIGTERM, grace: 5) }
    }
}
