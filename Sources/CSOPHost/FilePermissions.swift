import Glibc

/// OpenSSH-style StrictModes checks: a file others can write, or a file in a directory others
/// can write (where they could swap it), could run their code in ours.
enum FilePermissions {
    /// Why `path` is unsafe to load, or nil when it and every directory above it are owned by
    /// us or root and writable by no one else (a sticky directory such as /tmp is fine: others
    /// cannot replace what we own there).
    static func problem(with path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return "cannot stat it: \(String(cString: strerror(errno)))" }
        return problem(with: info) ?? directoryProblem(above: path)
    }

    /// Why a file with these attributes is unsafe, or nil.
    static func problem(with info: stat) -> String? {
        let owner = info.st_uid
        if owner != getuid() && owner != 0 {
            return "it is owned by uid \(owner), not by uid \(getuid()) or root"
        }
        if info.st_mode & (S_IWGRP | S_IWOTH) != 0 {
            let who = info.st_mode & S_IWOTH != 0 ? "everyone" : "its group"
            return "it is writable by \(who) (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod go-w on it"
        }
        return nil
    }

    /// Why a directory holding `path` (after resolving symlinks) lets others swap it, or nil.
    static func directoryProblem(above path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        var directory = String(cString: resolved)
        free(resolved)
        while let slash = directory.lastIndex(of: "/") {
            directory = slash == directory.startIndex ? "/" : String(directory[..<slash])
            var info = stat()
            guard stat(directory, &info) == 0 else { return nil }
            if info.st_uid != getuid() && info.st_uid != 0 {
                return "its directory \(directory) is owned by uid \(info.st_uid), not by uid \(getuid()) or root"
            }
            if info.st_mode & (S_IWGRP | S_IWOTH) != 0 && info.st_mode & S_ISVTX == 0 {
                let who = info.st_mode & S_IWOTH != 0 ? "everyone" : "its group"
                return "its directory \(directory) is writable by \(who) (mode \(String(info.st_mode & 0o777, radix: 8))), so the file could be replaced; run chmod go-w \(directory)"
            }
            if directory == "/" { break }
        }
        return nil
    }
}
