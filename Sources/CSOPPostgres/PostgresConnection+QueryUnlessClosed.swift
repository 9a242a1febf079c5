public import Logging
public import PostgresNIO
import Synchronization

extension PostgresConnection {
    /// Runs `query` like ``PostgresConnection/query(_:logger:file:line:)``, but throws
    /// ``PostgresConnectionClosed`` when the connection is closed, or closes, before the query
    /// is answered.
    ///
    /// postgres-nio never answers a query written to a connection whose channel has just
    /// closed (the server went away, or a cancel closed it), so a plain `query` there waits
    /// forever. The abandoned query stays suspended; nothing else is kept.
    @discardableResult
    public func queryUnlessClosed(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRowSequence {
        try await unlessClosed { try await self.query(query, logger: logger) }
    }

    /// Runs a prepared statement (prepared on this connection the first time, then reused:
    /// no parsing or planning per call) and collects its rows, with
    /// ``queryUnlessClosed(_:logger:)``'s guarantee against a connection that closes.
    public func executeUnlessClosed<Statement: PostgresPreparedStatement>(_ statement: Statement, logger: Logger) async throws
        -> [Statement.Row] where Statement.Row: Sendable
    {
        try await unlessClosed {
            var rows: [Statement.Row] = []
            for try await row in try await self.execute(statement, logger: logger) { rows.append(row) }
            return rows
        }
    }

    private func unlessClosed<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let outcome = Outcome(continuation)
            Task {
                do {
                    outcome.resume(.success(try await body()))
                } catch {
                    outcome.resume(.failure(error))
                }
            }
            closeFuture.whenComplete { _ in outcome.resume(.failure(PostgresConnectionClosed())) }
        }
    }
}

/// The connection closed before a query was answered.
public struct PostgresConnectionClosed: Error, CustomStringConvertible {
    public var description: String { "the connection to PostgreSQL is closed" }
}

/// Resumes a query's continuation once: with its answer or with the connection's closing.
private final class Outcome<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, any Error>?>

    init(_ continuation: CheckedContinuation<T, any Error>) {
        self.continuation = Mutex(continuation)
    }

    func resume(_ result: Result<T, any Error>) {
        let pending = continuation.withLock { continuation in
            defer { continuation = nil }
            return continuation
        }
        pending?.resume(with: result)
    }
}
