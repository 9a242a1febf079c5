/// Decides when the cluster listener logs the frames it drops: the first at once, then at most
/// one line per ``interval``, which counts the ones dropped in between. Anyone allowed to
/// NOTIFY on the channel could otherwise fill the log, one line per payload.
///
/// The caller passes the time, so the decision does not read a clock. Owned by the listen loop.
struct DroppedFrameLog {
    let interval: Duration
    private var lastLogged: ContinuousClock.Instant?
    private var unreported = 0

    init(interval: Duration = .seconds(60)) { self.interval = interval }

    /// Records `count` frames or lines dropped at `now`, the last for `problem`.
    /// - Returns: the line to log now, or nil while the last one is younger than ``interval``.
    mutating func dropped(_ count: Int, problem: String, at now: ContinuousClock.Instant) -> String? {
        unreported += count
        if let lastLogged, now - lastLogged < interval { return nil }
        let seconds = interval.components.seconds
        let total = unreported
        lastLogged = now
        unreported = 0
        let what = total == 1 ? "a malformed cluster frame" : "\(total) malformed cluster frames"
        return "sync dropped \(what) (the last: \(problem)); check what else sends NOTIFY on the cluster channel (another program, or a csop of another version)"
            + (total > count ? " (counted since the last report; at most one report per \(seconds) s)" : "")
    }
}
