/// The operations a plugin serves: adopt it with a `String` enum whose cases are the
/// operations.
///
/// ```swift
/// enum Operation: String, PluginOperation { case save, get, delete }
/// ```
/// The descriptor's operation names are the raw values in case order, and the host's
/// `operation_index` picks the case, so names and dispatch cannot drift apart.
public protocol PluginOperation: RawRepresentable, CaseIterable, Hashable, Sendable where RawValue == String {}
