import Glibc

/// The processors online when the process asked (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1:
/// what compute's default worker count and every spin budget are sized by.
public let onlineCores: Int = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
