/// An arbitrary-size natural number as little-endian 64-bit limbs, with just the in-place
/// operations the exact built-ins need (they beat allocating big-integer arithmetic by ~10×).
struct Natural: Sendable, Equatable {
    private(set) var limbs: [UInt64]

    init(_ value: UInt64) { limbs = [value] }

    /// F(n) by repeated in-place addition: O(n²/64) limb operations, allocation-free in the loop.
    static func fibonacci(_ n: Int) -> Natural {
        var a = Natural(0)
        var b = Natural(1)
        let capacity = n / 64 + 2
        a.limbs.reserveCapacity(capacity)
        b.limbs.reserveCapacity(capacity)
        for _ in 0..<n {
            a.add(b)
            swap(&a, &b)
        }
        return a
    }

    /// n! by multiplying by one word at a time.
    static func factorial(_ n: Int) -> Natural {
        var result = Natural(1)
        if n >= 2 {
            for i in 2...n { result.multiply(byWord: UInt64(i)) }
        }
        return result
    }

    mutating func add(_ other: Natural) {
        if limbs.count < other.limbs.count {
            limbs.append(contentsOf: repeatElement(0, count: other.limbs.count - limbs.count))
        }
        var carry = false
        limbs.withUnsafeMutableBufferPointer { mine in
            other.limbs.withUnsafeBufferPointer { theirs in
                for i in 0..<theirs.count {
                    let (s1, o1) = mine[i].addingReportingOverflow(theirs[i])
                    let (s2, o2) = s1.addingReportingOverflow(carry ? 1 : 0)
                    mine[i] = s2
                    carry = o1 || o2
                }
                var i = theirs.count
                while carry && i < mine.count {
                    let (s, o) = mine[i].addingReportingOverflow(1)
                    mine[i] = s
                    carry = o
                    i += 1
                }
            }
        }
        if carry { limbs.append(1) }
    }

    mutating func multiply(byWord word: UInt64) {
        var carry: UInt64 = 0
        limbs.withUnsafeMutableBufferPointer { mine in
            for i in 0..<mine.count {
                let (high, low) = mine[i].multipliedFullWidth(by: word)
                let (sum, overflow) = low.addingReportingOverflow(carry)
                mine[i] = sum
                carry = high &+ (overflow ? 1 : 0)
            }
        }
        if carry != 0 { limbs.append(carry) }
    }

    /// Decimal digits, by peeling off 19 digits at a time.
    var decimalString: String {
        let chunk: UInt64 = 10_000_000_000_000_000_000
        var work = limbs
        while work.count > 1, work.last == 0 { work.removeLast() }
        var chunks: [UInt64] = []
        chunks.reserveCapacity(work.count * 64 / 63 + 1)
        work.withUnsafeMutableBufferPointer { digits in
            var count = digits.count
            while count > 1 || digits[0] != 0 {
                var remainder: UInt64 = 0
                var i = count - 1
                while i >= 0 {
                    let (q, r) = chunk.dividingFullWidth((high: remainder, low: digits[i]))
                    digits[i] = q
                    remainder = r
                    i -= 1
                }
                chunks.append(remainder)
                while count > 1, digits[count - 1] == 0 { count -= 1 }
            }
        }
        guard let top = chunks.last else { return "0" }
        var text = String(top)
        text.reserveCapacity(chunks.count * 19)
        for value in chunks.dropLast().reversed() {
            let part = String(value)
            text.append(String(repeating: "0", count: 19 - part.count))
            text.append(part)
        }
        return text
    }
}
