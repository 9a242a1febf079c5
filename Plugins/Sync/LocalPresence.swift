import CSOPCore
import Synchronization

/// Presence within one process (local mode): users stay until `sync.leave` or shutdown.
final class LocalPresence: Sendable {
    private let channels = Mutex<[String: [PresenceUser]]>([:])

    /// Adds or updates a user; `joined` is false when the user was already present.
    func track(channel: String, userID: String, metadata: JSONObject) -> (joined: Bool, user: PresenceUser, users: [PresenceUser]) {
        channels.withLock { channels in
            var users = channels[channel, default: []]
            let joined: Bool
            let user: PresenceUser
            if let index = users.firstIndex(where: { $0.userID == userID }) {
                users[index].metadata = metadata
                user = users[index]
                joined = false
            } else {
                user = PresenceUser(userID: userID, onlineAt: WallClock.milliseconds(), metadata: metadata)
                users.append(user)
                joined = true
            }
            channels[channel] = users
            return (joined, user, users)
        }
    }

    /// Removes a user; false when it was not present.
    func leave(channel: String, userID: String) -> Bool {
        channels.withLock { channels in
            guard var users = channels[channel], let index = users.firstIndex(where: { $0.userID == userID }) else {
                return false
            }
            users.remove(at: index)
            channels[channel] = users.isEmpty ? nil : users
            return true
        }
    }
}
