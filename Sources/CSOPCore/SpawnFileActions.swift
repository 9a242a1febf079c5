public import Glibc

/// The `posix_spawn` file actions glibc has but the Swift Glibc module does not export,
/// looked up once at run time: nil where this glibc lacks one.
public enum SpawnFileActions {
    public typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    public typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    /// `posix_spawn_file_actions_addclosefrom_np(actions, from)` (glibc ≥ 2.34): close every
    /// descriptor from `from` up in the child.
    public static let addCloseFrom: AddCloseFrom? = symbol("posix_spawn_file_actions_addclosefrom_np")

    /// `posix_spawn_file_actions_addchdir_np(actions, path)` (glibc ≥ 2.29): the child's working
    /// directory.
    public static let addChdir: AddChdir? = symbol("posix_spawn_file_actions_addchdir_np")

    private static func symbol<F>(_ name: String) -> F? {
        dlsym(UnsafeMutableRawPointer(bitPattern: 0), name).map { unsafeBitCast($0, to: F.self) }
    }
}
