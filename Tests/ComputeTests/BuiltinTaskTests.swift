import CSOPCore
import Testing

@testable import ComputePlugin

@Suite struct BuiltinTaskTests {
    let h = ComputeHarness()

    static let fibonacci1000 =
        "43466557686937456435688527675040625802564660517371780402481729089536555417949051890403879840079255169295922593080322634775209689623239873322471161642996440906533187938298969649928516003704476137795166849228875"
    static let factorial100 =
        "93326215443944152681699238856266700490715968264381621468592963895217599993229915608941463976156518286253697920827223758251185210916864000000000000000000000000"

    @Test func fibonacciKnownValues() async throws {
        let expected: [(Int64, String)] = [
            (0, "0"), (1, "1"), (2, "1"), (10, "55"), (92, "7540113804746346429"),
            (93, "12200160415121876738"), (94, "19740274219868223167"), (1000, Self.fibonacci1000),
        ]
        for (n, value) in expected {
            #expect(try await h.result("fibonacci", ["n": .int(n)]) == .string(value), "fibonacci(\(n))")
        }
        #expect(Self.fibonacci1000.count == 209)
    }

    @Test func largeFibonacciRunsOnThePool() async throws {
        let value = try #require(try await h.result("fibonacci", ["n": 100_000]).stringValue)
        #expect(value.count == 20899)
        #expect(value.hasPrefix("25974069347221724166"))
        #expect(value.hasSuffix("49895374653428746875"))
    }

    @Test func factorialKnownValues() async throws {
        #expect(try await h.result("factorial", ["n": 0]) == "1")
        #expect(try await h.result("factorial", ["n": 1]) == "1")
        #expect(try await h.result("factorial", ["n": 20]) == "2432902008176640000")
        #expect(try await h.result("factorial", ["n": 21]) == "51090942171709440000")
        #expect(try await h.result("factorial", ["n": 100]) == .string(Self.factorial100))
        let big = try #require(try await h.result("factorial", ["n": 10_000]).stringValue)
        #expect(big.count == 35660)
        #expect(big.hasSuffix(String(repeating: "0", count: 2499)))
    }

    @Test func isPrimeAgreesWithTrialDivisionBelow20000() {
        for n in UInt64(0)..<20_000 {
            let trial = n >= 2 && !(2..<n).lazy.prefix { $0 * $0 <= n }.contains { n % $0 == 0 }
            #expect(PrimeTest.isPrime(n) == trial, "isPrime(\(n))")
        }
    }

    @Test func isPrimeAtTheEdgesOf64Bits() async throws {
        let primes: [JSONValue] = [
            2, 3, 1_000_000_007, 2_305_843_009_213_693_951,  // 2^61 - 1
            9_223_372_036_854_775_783,  // largest prime below 2^63
            "18446744073709551557",  // largest prime below 2^64
            "18446744073709551533",
        ]
        let composites: [JSONValue] = [
            0, 1, 4, 561, 3_215_031_751,  // strong pseudoprime to bases 2, 3, 5, 7
            3_825_123_056_546_413_051,  // strong pseudoprime to bases 2…23
            9_223_372_036_854_775_807,  // 2^63 - 1 = 7² · 73 · …
            "18446744073709551615",  // 2^64 - 1
            "18446744073709551559",
            "18446744030759878681",  // 4294967291², a square of the largest 32-bit prime
        ]
        for n in primes { #expect(try await h.result("isPrime", ["n": n]) == true, "\(n) is prime") }
        for n in composites { #expect(try await h.result("isPrime", ["n": n]) == false, "\(n) is composite") }
    }

    @Test func sha256TestVectors() async throws {
        let vectors: [(String, String)] = [
            ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            (
                "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
            ),
            (String(repeating: "a", count: 1_000_000), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
            ("héllo ✓", "5657cdef8a85a584e0e961e6f8247cf5d3f8ed21496ed6fdbcfd43a761e94245"),
        ]
        for (message, digest) in vectors {
            #expect(try await h.result("hash_sha256", ["message": .string(message)]) == .string(digest))
        }
    }

    @Test func sumIsExactForIntegersAndFallsBackToDouble() async throws {
        #expect(try await h.result("sum", ["numbers": []]) == 0)
        #expect(try await h.result("sum", ["numbers": [1, 2, 3, -4]]) == 2)
        #expect(try await h.result("sum", ["numbers": [0.5, 0.25, 1]]) == 1.75)
        #expect(try await h.result("sum", ["numbers": [9_223_372_036_854_775_807, 1]]) == .double(9_223_372_036_854_775_808.0))
        let many = JSONValue.array((1...10_000).map { .int($0) })
        #expect(try await h.result("sum", ["numbers": many]) == 50_005_000)
        // Integers stay exact while only the running total leaves 64 bits.
        #expect(try await h.result("sum", ["numbers": [9_223_372_036_854_775_807, 1, -1]]) == 9_223_372_036_854_775_807)
        let wide: JSONValue = [9_223_372_036_854_775_807, 9_223_372_036_854_775_807, -9_223_372_036_854_775_807, -9_223_372_036_854_775_806]
        #expect(try await h.result("sum", ["numbers": wide]) == 1)
        #expect(try await h.result("sum", ["numbers": [1e308, -1e308, 1e308]]) == 1e308)
    }

    @Test(arguments: [
        [1e308, 1e308] as JSONValue, [-1.7976931348623157e308, -1e300, -1e300], [1.7976931348623157e308, 1.7976931348623157e308, -1e308],
        .array(Array(repeating: 1e308, count: 5000)),
    ])
    func sumThatOverflowsIsExecutionFailed(_ numbers: JSONValue) async throws {
        // Small inputs answer inline, large ones on the pool: both must refuse.
        let error = try #require(await h.error("execute", ["task": "sum", "data": ["numbers": numbers]]))
        #expect(error.code == .executionFailed)
        #expect(error.message.contains("overflows"), "\(error.message)")
        #expect(!error.retryable)
        let batch = try await h.call("batch", ["tasks": [["task": "sum", "data": ["numbers": numbers]]]]).get()
        #expect(batch["results"]?.arrayValue?.first?["error"]?["code"] == "EXECUTION_FAILED")
    }

    struct BadInput: Sendable, CustomTestStringConvertible {
        let task: String
        let data: JSONValue
        let fragment: String
        init(_ task: String, _ data: JSONValue, _ fragment: String) {
            self.task = task
            self.data = data
            self.fragment = fragment
        }
        var testDescription: String { "\(task) \(data.jsonString)" }
    }

    static let badInputs: [BadInput] = [
        BadInput("fibonacci", ["n": -1], "between 0 and 100000"),
        BadInput("fibonacci", ["n": 100_001], "between 0 and 100000"),
        BadInput("fibonacci", ["n": 1.5], "must be an integer"),
        BadInput("fibonacci", ["n": "10"], "must be an integer"),
        BadInput("fibonacci", [:], "payload.data.n is required"),
        BadInput("fibonacci", ["n": 1, "m": 2], "unknown field payload.data.m"),
        BadInput("fibonacci", .null, "payload.data is required"),
        BadInput("factorial", ["n": 10_001], "between 0 and 10000"),
        BadInput("factorial", ["n": -3], "between 0 and 10000"),
        BadInput("isPrime", ["n": -7], "from 0 to 18446744073709551615"),
        BadInput("isPrime", ["n": 2.5], "from 0 to 18446744073709551615"),
        BadInput("isPrime", ["n": "18446744073709551616"], "out-of-range"),
        BadInput("isPrime", ["n": "12abc"], "non-numeric"),
        BadInput("isPrime", ["n": true], "from 0 to 18446744073709551615"),
        BadInput("hash_sha256", ["message": 5], "must be a string"),
        BadInput("hash_sha256", [:], "payload.data.message is required"),
        BadInput("sum", ["numbers": [1, "2"]], "payload.data.numbers[1] must be a number"),
        BadInput("sum", ["numbers": 3], "must be an array"),
        BadInput("custom", ["args": 1], "payload.data.fn is required"),
    ]

    @Test(arguments: badInputs)
    func badInputIsInvalidPayload(input: BadInput) async throws {
        let error = try #require(await h.error("execute", ["task": .string(input.task), "data": input.data]))
        #expect(error.code == .invalidPayload)
        #expect(error.message.contains(input.fragment), "\(error.message)")
        #expect(!error.retryable)
    }

    @Test func unknownTaskIsInvalidTask() async throws {
        let error = try #require(await h.error("execute", ["task": "fibonaci", "data": ["n": 1]]))
        #expect(error.code == .invalidTask)
        #expect(!error.retryable)
        #expect(error.message.contains("fibonaci"))
        #expect(error.message.contains("compute.tasks"))
    }

    @Test func malformedExecutePayloads() async throws {
        #expect(await h.error("execute", [:])?.message.contains("payload.task is required") == true)
        #expect(await h.error("execute", ["task": 3])?.message.contains("payload.task must be a string") == true)
        #expect(await h.error("execute", ["task": "sum", "data": ["numbers": []], "extra": 1])?.code == .invalidPayload)
        let badTimeout = await h.error("execute", ["task": "sum", "data": ["numbers": []], "options": ["timeout": 0]])
        #expect(badTimeout?.message.contains("payload.options.timeout") == true)
    }
}
