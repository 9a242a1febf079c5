import CSOPCore
import Crypto

/// A native task with exact results, parsed and range-checked before it runs.
enum BuiltinTask: Sendable {
    case fibonacci(Int)
    case factorial(Int)
    case isPrime(UInt64)
    case sha256([UInt8])
    case sum([JSONValue])

    /// Built-in task names, as `compute.tasks` lists them.
    static let names = ["factorial", "fibonacci", "hash_sha256", "isPrime", "sum"]

    /// Largest `n` for fibonacci: F(100000) has 20899 digits and takes ~0.1 s.
    static let maxFibonacci: Int64 = 100_000
    /// Largest `n` for factorial: 10000! has 35660 digits and takes ~0.1 s.
    static let maxFactorial: Int64 = 10_000
    /// Largest message for hash_sha256, in UTF-8 bytes.
    static let maxMessageBytes = 16 << 20
    static let maxNumbers = 1_000_000

    /// Parses `data` for the named task; nil when `name` is not a built-in.
    /// - Throws: `INVALID_PAYLOAD` naming the field and its limits.
    static func parse(name: String, data: JSONValue?, path: String) throws(CSOPError) -> BuiltinTask? {
        switch name {
        case "fibonacci":
            let fields = try Fields(data, path: path, allowed: ["n"], allowNull: false)
            return .fibonacci(Int(try fields.requiredInt("n", in: 0...maxFibonacci)))
        case "factorial":
            let fields = try Fields(data, path: path, allowed: ["n"], allowNull: false)
            return .factorial(Int(try fields.requiredInt("n", in: 0...maxFactorial)))
        case "isPrime":
            let fields = try Fields(data, path: path, allowed: ["n"], allowNull: false)
            return .isPrime(try unsigned64(fields, "n"))
        case "hash_sha256":
            let fields = try Fields(data, path: path, allowed: ["message"], allowNull: false)
            let message = try fields.string("message", nonEmpty: false, maxLength: maxMessageBytes)
            guard let message else { throw .invalidPayload("\(path).message is required (a string)") }
            return .sha256(Array(message.utf8))
        case "sum":
            let fields = try Fields(data, path: path, allowed: ["numbers"], allowNull: false)
            guard let numbers = try fields.array("numbers", maxCount: maxNumbers) else {
                throw .invalidPayload("\(path).numbers is required (an array of numbers)")
            }
            for (i, number) in numbers.enumerated() where number.doubleValue == nil {
                throw .invalidPayload("\(path).numbers[\(i)] must be a number, got \(number.typeName)")
            }
            return .sum(numbers)
        default:
            return nil
        }
    }

    /// `n` as a non-negative integer, or a decimal string for values above Int64.max.
    private static func unsigned64(_ fields: Fields, _ key: String) throws(CSOPError) -> UInt64 {
        let limits = "an integer from 0 to 18446744073709551615 (pass values above 2^63-1 as a decimal string)"
        switch fields[key] {
        case .string(let text)?:
            guard let value = UInt64(text) else {
                throw .invalidPayload("\(fields.path).\(key) must be \(limits), got a non-numeric or out-of-range string")
            }
            return value
        case nil, .null?:
            throw .invalidPayload("\(fields.path).\(key) is required (\(limits))")
        case let value?:
            guard let int = value.int64Value else {
                throw .invalidPayload("\(fields.path).\(key) must be \(limits), got \(value.typeName == "number" ? value.jsonString : value.typeName)")
            }
            guard int >= 0 else { throw .invalidPayload("\(fields.path).\(key) must be \(limits), got \(int)") }
            return UInt64(int)
        }
    }

    /// Whether the task finishes in a few microseconds, so it may run on the caller's thread.
    var isQuick: Bool {
        switch self {
        case .fibonacci(let n): n <= 1_500
        case .factorial(let n): n <= 300
        case .isPrime: true
        case .sha256(let bytes): bytes.count <= 16 << 10
        case .sum(let numbers): numbers.count <= 4_096
        }
    }

    /// About how many bytes of JSON the task's data took (see ``ComputeJob/Work/inputBytes``).
    var inputBytes: Int {
        switch self {
        case .fibonacci, .factorial, .isPrime: 32
        case .sha256(let bytes): bytes.count + 16
        case .sum(let numbers): JSONValue.array(numbers).approximateJSONBytes + 12
        }
    }

    /// The task's result.
    /// - Throws: `EXECUTION_FAILED` when the result has no exact JSON form (a sum that overflows).
    func run() throws(CSOPError) -> JSONValue {
        switch self {
        case .fibonacci(let n): .string(Natural.fibonacci(n).decimalString)
        case .factorial(let n): .string(Natural.factorial(n).decimalString)
        case .isPrime(let n): .bool(PrimeTest.isPrime(n))
        case .sha256(let bytes): .string(Self.hex(SHA256.hash(data: bytes)))
        case .sum(let numbers): try Self.sum(numbers)
        }
    }

    /// ``run()`` as a task outcome.
    func output() -> Result<TaskOutput, CSOPError> {
        do throws(CSOPError) {
            return .success(TaskOutput(try run()))
        } catch {
            return .failure(error)
        }
    }

    private static func hex(_ digest: SHA256.Digest) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in digest {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Integers add exactly, in 128 bits, so only the sum itself must fit in 64 bits to stay an
    /// integer; from the first non-integer on, or when the sum does not fit, it is a double.
    /// - Throws: `EXECUTION_FAILED` when the sum overflows a double (JSON has no Infinity).
    private static func sum(_ numbers: [JSONValue]) throws(CSOPError) -> JSONValue {
        var exact: Int128 = 0
        var index = 0
        while index < numbers.count, case .int(let int) = numbers[index] {
            exact += Int128(int)
            index += 1
        }
        if index == numbers.count, let int = Int64(exactly: exact) { return .int(int) }
        var total = Double(exact)
        for number in numbers[index...] { total += number.doubleValue ?? 0 }
        guard total.isFinite else {
            throw .executionFailed(
                "the sum overflows: it goes beyond \(Double.greatestFiniteMagnitude), the largest number a JSON result can hold as a double; sum smaller numbers or fewer at a time")
        }
        return .double(total)
    }
}
