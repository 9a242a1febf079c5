import Glibc

/// Runs files through a target's checks, as libFuzzer runs its inputs: the seed corpus and the
/// saved crashers are replayed this way by `swift test`.
enum Replay {
    /// Replays every regular file of `paths` (directories are read one level deep), in name order.
    /// - Parameter allowMissing: a path that does not exist counts as an empty directory.
    /// - Returns: how many inputs passed. A failing input stops the process.
    static func run(_ target: FuzzTarget, paths: [String], allowMissing: Bool = false, verbose: Bool) -> Int {
        var files: [String] = []
        for path in paths {
            if isDirectory(path) {
                files += entries(of: path).map { "\(path)/\($0)" }.filter(isRegularFile)
            } else if isRegularFile(path) {
                files.append(path)
            } else if !allowMissing {
                printError("csop-fuzz: \(path): no such file or directory\n")
                exit(2)
            }
        }
        for file in files {
            guard let bytes = read(file) else {
                printError("csop-fuzz: cannot read \(file)\n")
                exit(2)
            }
            if verbose { printError("\(target.name): \(file)\n") }
            FuzzContext.input = file
            target.run(bytes)
        }
        return files.count
    }

    static func entries(of directory: String) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if !name.hasPrefix(".") { names.append(name) }
        }
        return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    static func isDirectory(_ path: String) -> Bool { mode(path).map { $0 & S_IFMT == S_IFDIR } ?? false }
    static func isRegularFile(_ path: String) -> Bool { mode(path).map { $0 & S_IFMT == S_IFREG } ?? false }

    static func mode(_ path: String) -> mode_t? {
        var info = stat()
        return stat(path, &info) == 0 ? info.st_mode : nil
    }

    static func read(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 { return nil }
            if count == 0 { return bytes }
            bytes += buffer[0..<count]
        }
    }
}
