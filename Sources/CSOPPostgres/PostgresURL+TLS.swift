import CSOPCore
import NIOSSL
import PostgresNIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

extension PostgresURL {
    /// libpq's `sslmode`, mapped onto postgres-nio's TLS modes.
    public enum SSLMode: String, Sendable, CaseIterable {
        /// No TLS.
        case disable
        /// TLS when the server offers it, no certificate check. (libpq tries a plain connection
        /// first; postgres-nio offers TLS first, like `prefer`.)
        case allow
        /// TLS when the server offers it, no certificate check. The default.
        case prefer
        /// TLS or fail, no certificate check; but as in libpq, when a root certificate is
        /// configured (`sslrootcert`, or an existing `~/.postgresql/root.crt`) the chain is
        /// verified as with `verify-ca`.
        case require
        /// TLS or fail, with the server's chain verified against the root certificate; the
        /// host name is not checked.
        case verifyCA = "verify-ca"
        /// TLS or fail, with the chain verified and the certificate valid for the URL's host
        /// (a DNS name, or an IP address in the certificate's IP addresses).
        case verifyFull = "verify-full"

        /// Whether the connection fails rather than go unencrypted.
        public var requiresTLS: Bool { self == .require || self == .verifyCA || self == .verifyFull }
    }

    /// The query options a URL may carry.
    public static let supportedOptions = ["sslmode", "sslrootcert", "sslcert", "sslkey"]

    /// `$HOME`, else the current user's home directory from the password database.
    public static func homeDirectory() -> String? {
        if let home = getenv("HOME"), home.pointee != 0 { return String(cString: home) }
        guard let entry = getpwuid(getuid()), let directory = entry.pointee.pw_dir else { return nil }
        return String(cString: directory)
    }

    /// `sslmode=verify-full, sslrootcert PATH`: the TLS settings, for messages.
    public var tlsSummary: String {
        var parts = ["sslmode=\(sslMode.rawValue)"]
        if let sslRootCert { parts.append("sslrootcert \(sslRootCert)") }
        if let sslCert { parts.append("sslcert \(sslCert)") }
        return parts.joined(separator: ", ")
    }

    /// Why connecting failed, in words. When TLS is the cause the message says so and names
    /// the TLS settings (``tlsSummary``); never the password or key material.
    public func describe(connectionError error: any Error) -> String {
        guard let problem = Self.tlsProblem(error, host: host) else { return Self.describe(error) }
        return "TLS/certificate problem (\(tlsSummary)): \(problem)"
    }

    static func parseOptions(_ query: Substring, field: String) throws(CSOPError) -> [String: String] {
        var options: [String: String] = [:]
        // By Unicode scalar, as the URL itself (a combining mark must not hide a separator).
        for option in query.unicodeScalars.split(separator: "&") {
            let pair = option.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map { Substring($0) }
            let name = try decode(pair[0], part: "an option name", field: field)
            // Only a name that looks like one is repeated, never a value: an unknown option may
            // be a libpq `password=`, and a mistyped URL may have put its password here.
            guard supportedOptions.contains(name) else {
                let unknown = Self.isWord(name) ? "unknown option \"\(name)\"" : "an unknown option"
                throw .invalidPayload("\(field): \(unknown); the supported options are \(supportedOptions.joined(separator: ", "))")
            }
            guard pair.count == 2, !pair[1].isEmpty else {
                throw .invalidPayload("\(field): option \(name) needs a value (\(name)=…)")
            }
            options[name] = try decode(pair[1], part: "the value of option \(name)", field: field)
        }
        return options
    }

    /// Whether an option name or sslmode value may be repeated in a message: a short word of
    /// letters, digits, `-` and `_`, as names and modes are — not text a password could be.
    static func isWord(_ text: String) -> Bool {
        (1...24).contains(text.utf8.count) && text.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }
    }

    /// Reads the TLS options and the files they name, and builds ``tls`` from them.
    mutating func configureTLS(_ options: [String: String], field: String, homeDirectory: String?) throws(CSOPError) {
        if let mode = options["sslmode"] {
            guard let parsed = SSLMode(rawValue: mode) else {
                throw .invalidPayload(
                    "\(field): sslmode must be one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))"
                        + (Self.isWord(mode) ? "; got \"\(mode)\"" : ""))
            }
            sslMode = parsed
        }
        let explicitRoot = options["sslrootcert"]
        sslCert = options["sslcert"]
        sslKey = options["sslkey"]
        if (sslCert == nil) != (sslKey == nil) {
            throw .invalidPayload("\(field): sslcert and sslkey must be given together (the client certificate and its private key)")
        }
        switch sslMode {
        case .disable:
            if let name = ["sslrootcert", "sslcert", "sslkey"].first(where: { options[$0] != nil }) {
                throw .invalidPayload("\(field): \(name) has no effect with sslmode=disable; remove it or use another sslmode")
            }
            return
        case .allow, .prefer:
            if explicitRoot != nil {
                throw .invalidPayload(
                    "\(field): sslrootcert has no effect with sslmode=\(sslMode.rawValue) (no certificate check); use sslmode=verify-full or verify-ca to verify the server")
            }
        case .require, .verifyCA, .verifyFull:
            let defaultRoot = homeDirectory.map { "\($0)/.postgresql/root.crt" }
            if let explicitRoot {
                sslRootCert = explicitRoot
            } else if let defaultRoot, access(defaultRoot, F_OK) == 0 {
                sslRootCert = defaultRoot
            } else if sslMode != .require {
                throw .invalidPayload(
                    "\(field): sslmode=\(sslMode.rawValue) needs sslrootcert=PATH (a PEM file of the CA certificates that signed the server's certificate)"
                        + (defaultRoot.map { "; \($0) does not exist" } ?? ""))
            }
        }

        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        if let sslRootCert {
            let roots = try Self.loadCertificates(sslRootCert, option: "sslrootcert", field: field)
            configuration.trustRoots = .certificates(roots)
            configuration.certificateVerification = sslMode == .verifyFull ? .fullVerification : .noHostnameVerification
        }
        if let sslCert, let sslKey {
            configuration.certificateChain = try Self.loadCertificates(sslCert, option: "sslcert", field: field).map { .certificate($0) }
            configuration.privateKey = .privateKey(try Self.loadPrivateKey(sslKey, field: field))
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            let files = sslCert.map { " (do sslcert and sslkey belong together? \($0), \(sslKey ?? ""))" } ?? ""
            throw .invalidPayload("\(field): the TLS settings cannot be used\(files): \(Self.tlsProblem(error, host: nil) ?? "\(error)")")
        }
        tlsConfiguration = configuration
        tls = sslMode.requiresTLS ? .require(context) : .prefer(context)
    }

    /// The certificates of a PEM file. - Throws: `INVALID_PAYLOAD` naming the option and path.
    private static func loadCertificates(_ path: String, option: String, field: String) throws(CSOPError) -> [NIOSSLCertificate] {
        let bytes = try readFile(path, option: option, field: field)
        let certificates = try? NIOSSLCertificate.fromPEMBytes(bytes)
        guard let certificates, !certificates.isEmpty else {
            throw .invalidPayload("\(field): \(option) \(path) holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        }
        return certificates
    }

    /// The key of a PEM file. - Throws: `INVALID_PAYLOAD` naming the path, never its content.
    private static func loadPrivateKey(_ path: String, field: String) throws(CSOPError) -> NIOSSLPrivateKey {
        let bytes = try readFile(path, option: "sslkey", field: field)
        guard let key = try? NIOSSLPrivateKey(bytes: bytes, format: .pem) else {
            throw .invalidPayload(
                "\(field): sslkey \(path) is not an unencrypted PEM private key (a key with a passphrase is not supported)")
        }
        return key
    }

    /// A whole file, read now so a missing file is a config error rather than a connect error.
    private static func readFile(_ path: String, option: String, field: String) throws(CSOPError) -> [UInt8] {
        let failure = { (reason: String) -> CSOPError in .invalidPayload("\(field): \(option) \(path) cannot be read: \(reason)") }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure(String(cString: strerror(errno))) }
        defer { close(descriptor) }
        let limit = 16 * 1024 * 1024
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure(String(cString: strerror(errno)))
            }
            bytes += chunk[..<count]
            if bytes.count > limit { throw failure("it is larger than 16 MiB") }
        }
        return bytes
    }

    /// What went wrong with TLS, in words, or nil when `error` is not about TLS.
    /// - Parameter host: the host the certificate was checked against, for a host-name mismatch.
    static func tlsProblem(_ error: any Error, host: String?) -> String? {
        var error = error
        if let failure = error as? PSQLError {
            if failure.code == .sslUnsupported {
                return "the server does not accept TLS connections (its ssl setting is off), and this sslmode requires TLS"
            }
            guard let underlying = failure.underlying else { return nil }
            error = underlying
        }
        switch error {
        case let error as NIOSSLExtraError where error == .failedToValidateHostname:
            let name = host.map { " \($0)" } ?? ""
            return "the server's certificate is not valid for the host name\(name) (verify-full checks it; verify-ca does not)"
        case let error as NIOSSLExtraError:
            return "\(error)"
        case let error as NIOSSLError:
            switch error {
            case .handshakeFailed(let failure): return "the TLS handshake failed: \(reasons(failure))"
            case .uncleanShutdown: return "the server closed the connection during TLS"
            case .noCertificateToValidate: return "the server sent no certificate"
            case .failedToLoadCertificate: return "a certificate could not be loaded"
            case .failedToLoadPrivateKey: return "the private key could not be loaded"
            default: return "\(error)"
            }
        case let error as BoringSSLError:
            return reasons(error)
        default:
            return nil
        }
    }

    /// BoringSSL's reason codes in words, e.g. `CERTIFICATE_VERIFY_FAILED`.
    private static func reasons(_ error: BoringSSLError) -> String {
        let stack: NIOBoringSSLErrorStack
        switch error {
        case .sslError(let errors), .unknownError(let errors): stack = errors
        case .syscallError: return "the connection failed during TLS (system call error)"
        default: return "\(error)"
        }
        var seen: [String] = []
        for entry in stack {
            // "Error: 268435581 error:1000007d:SSL routines:OPENSSL_internal:REASON at file:line"
            let text = entry.description
            let main = text.firstRange(of: " at ").map { text[..<$0.lowerBound] } ?? text[...]
            let reason = String(main.split(separator: ":").last ?? main).trimmingSpaces()
            if !reason.isEmpty, !seen.contains(reason) { seen.append(reason) }
        }
        guard !seen.isEmpty else { return "no reason given" }
        return seen.map(explain).joined(separator: "; ")
    }

    private static func explain(_ reason: String) -> String {
        switch reason {
        case "CERTIFICATE_VERIFY_FAILED":
            "the server's certificate could not be verified against sslrootcert: it is signed by another CA, expired or not yet valid (CERTIFICATE_VERIFY_FAILED)"
        case "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_CERTIFICATE_REQUIRED",
            "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_ACCESS_DENIED":
            "the server refused the client certificate (sslcert) or requires one (\(reason))"
        case "WRONG_VERSION_NUMBER":
            "the server did not answer in TLS (\(reason))"
        default:
            reason
        }
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
