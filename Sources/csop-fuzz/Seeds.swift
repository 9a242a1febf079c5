import Glibc

/// Writes generated seed inputs into the corpus.
enum Seeds {
    static func write(_ bytes: [UInt8], to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0, bytes.withUnsafeBytes({ Glibc.write(fd, $0.baseAddress, $0.count) }) == bytes.count, close(fd) == 0 else {
            printError("csop-fuzz: cannot write \(path)\n")
            exit(1)
        }
        print(path)
    }
}
