/// Deterministic Miller–Rabin for every 64-bit integer.
enum PrimeTest {
    /// These twelve bases decide primality for all n < 3.3·10²⁴, so for all of UInt64.
    private static let bases: [UInt64] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]

    static func isPrime(_ n: UInt64) -> Bool {
        if n < 2 { return false }
        for p in bases {
            if n == p { return true }
            if n % p == 0 { return false }
        }
        var d = n - 1
        var s = 0
        while d & 1 == 0 {
            d >>= 1
            s += 1
        }
        witnesses: for a in bases {
            var x = power(a, d, n)
            if x == 1 || x == n - 1 { continue }
            for _ in 1..<max(s, 1) {
                x = multiply(x, x, n)
                if x == n - 1 { continue witnesses }
            }
            return false
        }
        return true
    }

    /// (a·b) mod m through the full 128-bit product.
    static func multiply(_ a: UInt64, _ b: UInt64, _ m: UInt64) -> UInt64 {
        let product = a.multipliedFullWidth(by: b)
        return m.dividingFullWidth(product).remainder
    }

    static func power(_ base: UInt64, _ exponent: UInt64, _ m: UInt64) -> UInt64 {
        var result: UInt64 = 1
        var b = base % m
        var e = exponent
        while e > 0 {
            if e & 1 == 1 { result = multiply(result, b, m) }
            b = multiply(b, b, m)
            e >>= 1
        }
        return result
    }
}
