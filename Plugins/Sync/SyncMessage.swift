import CSOPCore

/// One broadcast as it travels: names are already validated, `data` is serialized JSON.
package struct SyncMessage: Sendable {
    package var channel: String
    package var event: String
    package var data: [UInt8]
    /// Publisher's wall clock, milliseconds since the epoch.
    package var timestamp: Int64
    /// Instance id of the publishing plugin.
    package var origin: String
    /// Its place in the channel's history (1, 2, …), when the channel keeps history.
    package var offset: Int64?
    /// The history stream the offset counts in; a new epoch means the old history is gone.
    package var epoch: String?

    package init(
        channel: String, event: String, data: [UInt8], timestamp: Int64, origin: String, offset: Int64? = nil, epoch: String? = nil
    ) {
        self.channel = channel
        self.event = event
        self.data = data
        self.timestamp = timestamp
        self.origin = origin
        self.offset = offset
        self.epoch = epoch
    }

    /// The cluster wire form of the message body:
    /// `<seq> <channel> <event> <timestamp> <data JSON>`. Names never contain spaces and
    /// compact JSON never contains a raw newline, so lines can be packed into one frame.
    package func line(sequence: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(data.count + channel.utf8.count + event.utf8.count + 48)
        bytes.append(contentsOf: String(sequence).utf8)
        bytes.append(0x20)
        bytes.append(contentsOf: channel.utf8)
        bytes.append(0x20)
        bytes.append(contentsOf: event.utf8)
        bytes.append(0x20)
        bytes.append(contentsOf: String(timestamp).utf8)
        bytes.append(0x20)
        bytes.append(contentsOf: data)
        return bytes
    }

    /// Parses a line written by ``line(sequence:)``; nil when it is malformed, and when its data
    /// is valid JSON but not compact: white space outside strings (a raw newline above all)
    /// would split the one-line event that `csop run` prints, and the frame encoder, which
    /// packs lines separated by newlines, could not send it on.
    package static func parse(line: ArraySlice<UInt8>, origin: String) -> (sequence: UInt64, message: SyncMessage)? {
        var fields: [ArraySlice<UInt8>] = []
        var start = line.startIndex
        var index = line.startIndex
        while index < line.endIndex, fields.count < 4 {
            if line[index] == 0x20 {
                fields.append(line[start..<index])
                start = index + 1
            }
            index += 1
        }
        guard fields.count == 4 else { return nil }
        let data = Array(line[start...])
        guard let sequence = UInt64(String(decoding: fields[0], as: UTF8.self)),
            let timestamp = Int64(String(decoding: fields[3], as: UTF8.self))
        else { return nil }
        let channel = String(decoding: fields[1], as: UTF8.self)
        let event = String(decoding: fields[2], as: UTF8.self)
        guard SyncScope.isValidKeptChannel(channel), SyncNames.isValidName(event) else { return nil }
        guard isCompactJSON(data) else { return nil }
        return (sequence, SyncMessage(channel: channel, event: event, data: data, timestamp: timestamp, origin: origin))
    }

    /// Whether `data` is valid JSON without white space outside strings: what an event may
    /// carry on one line.
    package static func isCompactJSON(_ data: [UInt8]) -> Bool {
        data.withUnsafeBufferPointer { buffer -> Bool in
            do throws(JSONParseError) {
                try JSONParser.validate(buffer)
                return JSONParser.isCompact(buffer)
            } catch {
                return false
            }
        }
    }
}
