import Glibc

/// OpenSSH-style StrictModes check: a file others can write could run their code in ours.
enum FilePermissions {
    /// Why `path` is unsafe to load, or nil when it is owned by us or root and writable by no one else.
    static func problem(with path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return "cannot stat it: \(String(cString: strerror(errno)))" }
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
}
