import CSOPCore
import CSOPPostgres
import CSOPTestSupport
import Foundation
import NIOSSL
import Testing

/// Parsing of the PostgreSQL URL's TLS options. Valid certificate files come from the test
/// PKI that scripts/install-deps.sh generates; without it these tests fail, never skip.
@Suite struct PostgresURLTests {
    let directory: TemporaryDirectory
    /// A home directory with no `.postgresql/root.crt`.
    let emptyHome: String

    init() throws {
        directory = try TemporaryDirectory("csop-pg-url")
        emptyHome = directory.file("home")
        try FileManager.default.createDirectory(atPath: emptyHome, withIntermediateDirectories: true)
        #expect(TestEnvironment.missingPostgresTLSFiles.isEmpty, "the test PKI is missing: run scripts/install-deps.sh")
    }

    func parse(_ query: String, home: String? = nil) throws(CSOPError) -> PostgresURL {
        try PostgresURL("postgres://u:secret@db.example:5433/app?\(query)", field: "config.postgresUrl", homeDirectory: home ?? emptyHome)
    }

    func expectInvalid(_ query: String, home: String? = nil, mentions parts: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let url = try parse(query, home: home)
            Issue.record("\(query) parsed as sslmode=\(url.sslMode)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == .invalidPayload, sourceLocation: sourceLocation)
            #expect(error.message.hasPrefix("config.postgresUrl"), "\(error.message)", sourceLocation: sourceLocation)
            #expect(!error.message.contains("secret"), "the message leaks the password", sourceLocation: sourceLocation)
            for part in parts {
                #expect(error.message.contains(part), "\"\(error.message)\" does not mention \(part)", sourceLocation: sourceLocation)
            }
        }
    }

    @Test func defaultIsPreferWithoutCertificateChecks() throws {
        let url = try PostgresURL("postgres://u:secret@db.example/app", field: "x", homeDirectory: emptyHome)
        #expect(url.sslMode == .prefer)
        #expect(url.tls.isAllowed && !url.tls.isEnforced)
        #expect(url.tlsConfiguration?.certificateVerification == CertificateVerification.none)
        #expect(url.sslRootCert == nil)
        #expect(!url.description.contains("secret"))
        #expect(url.connectionConfiguration().tls.isAllowed)
    }

    @Test func everySSLModeMapsOntoPostgresNIO() throws {
        let disable = try parse("sslmode=disable")
        #expect(!disable.tls.isAllowed)
        #expect(disable.tlsConfiguration == nil)
        #expect(!disable.connectionConfiguration().tls.isAllowed)

        for mode in ["allow", "prefer"] {
            let url = try parse("sslmode=\(mode)")
            #expect(url.sslMode.rawValue == mode)
            #expect(url.tls.isAllowed && !url.tls.isEnforced)
            #expect(url.tlsConfiguration?.certificateVerification == CertificateVerification.none)
        }

        let require = try parse("sslmode=require")
        #expect(require.tls.isEnforced)
        #expect(require.tlsConfiguration?.certificateVerification == CertificateVerification.none)
        #expect(require.sslRootCert == nil)

        let ca = TestEnvironment.postgresCA
        // As in libpq, require with a root certificate verifies the chain (as verify-ca).
        let requireWithRoot = try parse("sslmode=require&sslrootcert=\(ca)")
        #expect(requireWithRoot.tls.isEnforced)
        #expect(requireWithRoot.tlsConfiguration?.certificateVerification == .noHostnameVerification)
        #expect(requireWithRoot.sslRootCert == ca)

        let verifyCA = try parse("sslmode=verify-ca&sslrootcert=\(ca)")
        #expect(verifyCA.sslMode == .verifyCA)
        #expect(verifyCA.tls.isEnforced)
        #expect(verifyCA.tlsConfiguration?.certificateVerification == .noHostnameVerification)
        if case .certificates(let roots)? = verifyCA.tlsConfiguration?.trustRoots {
            #expect(roots.count == 1)
        } else {
            Issue.record("verify-ca does not trust sslrootcert's certificates")
        }

        let verifyFull = try parse("sslmode=verify-full&sslrootcert=\(ca)")
        #expect(verifyFull.sslMode == .verifyFull)
        #expect(verifyFull.tls.isEnforced)
        #expect(verifyFull.tlsConfiguration?.certificateVerification == .fullVerification)
        #expect(verifyFull.tlsSummary == "sslmode=verify-full, sslrootcert \(ca)")
        #expect(verifyFull.host == "db.example" && verifyFull.port == 5433 && verifyFull.database == "app")
    }

    @Test func clientCertificateAndKeyAreLoaded() throws {
        let url = try parse(
            "sslmode=require&sslcert=\(TestEnvironment.postgresClientCert)&sslkey=\(TestEnvironment.postgresClientKey)")
        #expect(url.tlsConfiguration?.certificateChain.count == 1)
        #expect(url.tlsConfiguration?.privateKey != nil)
        #expect(url.sslCert == TestEnvironment.postgresClientCert)
        #expect(url.sslKey == TestEnvironment.postgresClientKey)
        // prefer presents it too when the server offers TLS.
        #expect(try parse("sslcert=\(TestEnvironment.postgresClientCert)&sslkey=\(TestEnvironment.postgresClientKey)")
            .tlsConfiguration?.certificateChain.count == 1)
    }

    @Test func optionValuesArePercentDecoded() throws {
        let encoded = TestEnvironment.postgresCA.replacingOccurrences(of: "/", with: "%2F")
        let url = try parse("sslmode=verify-ca&sslrootcert=\(encoded)")
        #expect(url.sslRootCert == TestEnvironment.postgresCA)
    }

    /// libpq's default sslrootcert, `~/.postgresql/root.crt`: used by the verifying modes when it exists.
    @Test func theDefaultRootCertificateIsUsedWhenItExists() throws {
        let home = directory.file("home-with-root")
        try FileManager.default.createDirectory(atPath: "\(home)/.postgresql", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: TestEnvironment.postgresCA, toPath: "\(home)/.postgresql/root.crt")
        let verifyFull = try parse("sslmode=verify-full", home: home)
        #expect(verifyFull.sslRootCert == "\(home)/.postgresql/root.crt")
        #expect(verifyFull.tlsConfiguration?.certificateVerification == .fullVerification)
        let require = try parse("sslmode=require", home: home)
        #expect(require.tlsConfiguration?.certificateVerification == .noHostnameVerification)
        // No certificate check in prefer, so the file is not even read.
        #expect(try parse("sslmode=prefer", home: home).sslRootCert == nil)

        expectInvalid("sslmode=verify-full", mentions: ["sslmode=verify-full needs sslrootcert", "\(emptyHome)/.postgresql/root.crt does not exist"])
        expectInvalid("sslmode=verify-ca", mentions: ["sslmode=verify-ca needs sslrootcert"])
    }

    @Test func badOptionsAreRefusedNamingTheOption() throws {
        expectInvalid("sslmode=verify", mentions: ["sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full", "\"verify\""])
        expectInvalid("sslmode=", mentions: ["option sslmode needs a value"])
        expectInvalid("sslmode", mentions: ["option sslmode needs a value"])
        // An unknown option is named, its value never repeated (it may be a password).
        expectInvalid(
            "sslmode=require&password=secret",
            mentions: ["unknown option \"password\"", "the supported options are sslmode, sslrootcert, sslcert, sslkey"])
        expectInvalid("sslcompression=1", mentions: ["unknown option \"sslcompression\""])
        expectInvalid(
            "sslmode=require&sslcert=\(TestEnvironment.postgresClientCert)",
            mentions: ["sslcert and sslkey must be given together"])
        expectInvalid("sslkey=\(TestEnvironment.postgresClientKey)", mentions: ["sslcert and sslkey must be given together"])
        expectInvalid("sslmode=prefer&sslrootcert=\(TestEnvironment.postgresCA)", mentions: ["sslrootcert has no effect with sslmode=prefer"])
        expectInvalid("sslmode=disable&sslrootcert=\(TestEnvironment.postgresCA)", mentions: ["sslrootcert has no effect with sslmode=disable"])
    }

    @Test func missingOrUnusableFilesAreConfigErrorsNamingOptionAndPath() throws {
        let missing = directory.file("missing.crt")
        expectInvalid("sslmode=verify-full&sslrootcert=\(missing)", mentions: ["sslrootcert \(missing) cannot be read", "No such file"])
        expectInvalid("sslmode=require&sslrootcert=\(missing)", mentions: ["sslrootcert \(missing) cannot be read"])
        expectInvalid(
            "sslmode=require&sslcert=\(missing)&sslkey=\(TestEnvironment.postgresClientKey)",
            mentions: ["sslcert \(missing) cannot be read"])
        expectInvalid(
            "sslmode=require&sslcert=\(TestEnvironment.postgresClientCert)&sslkey=\(missing)",
            mentions: ["sslkey \(missing) cannot be read"])
        expectInvalid("sslmode=verify-ca&sslrootcert=\(directory.path)", mentions: ["sslrootcert \(directory.path) cannot be read"])

        let notPEM = directory.file("not.pem")
        try "not a certificate\n".write(toFile: notPEM, atomically: true, encoding: .utf8)
        expectInvalid("sslmode=verify-ca&sslrootcert=\(notPEM)", mentions: ["sslrootcert \(notPEM) holds no PEM certificate"])
        // A certificate is no private key; the message names the file but never shows its bytes.
        expectInvalid(
            "sslmode=require&sslcert=\(TestEnvironment.postgresClientCert)&sslkey=\(TestEnvironment.postgresCA)",
            mentions: ["sslkey \(TestEnvironment.postgresCA) is not an unencrypted PEM private key"])
        // A key that does not belong to the certificate.
        expectInvalid(
            "sslmode=require&sslcert=\(TestEnvironment.postgresCA)&sslkey=\(TestEnvironment.postgresClientKey)",
            mentions: ["the TLS settings cannot be used", "sslcert and sslkey"])
    }

    @Test func describeNamesTheTLSProblemAndMode() throws {
        let url = try parse("sslmode=verify-full&sslrootcert=\(TestEnvironment.postgresCA)")
        let message = url.describe(connectionError: NIOSSLError.handshakeFailed(.sslError([])))
        #expect(message.hasPrefix("TLS/certificate problem (sslmode=verify-full, sslrootcert \(TestEnvironment.postgresCA))"))
        #expect(url.describe(connectionError: NIOSSLExtraError.failedToValidateHostname).contains("not valid for the host name db.example"))
        #expect(url.describe(connectionError: CancellationError()) == "\(CancellationError())")
    }

    /// The fuzzer's find: a `%` that starts no escape dropped the two bytes after it
    /// (`pa%ss` → `pa%`), and `%+1`/`%-0` were read as escapes. Such a user, password or
    /// database is refused now, naming the part and never showing it.
    @Test(arguments: [
        ("postgres://app:Qxa%ss@db/prod", "the password"), ("postgres://app:Qx%+Aw@db/prod", "the password"),
        ("postgres://app:Qx%-0w@db/prod", "the password"), ("postgres://app:Qx%@db/prod", "the password"),
        ("postgres://app:Qx%4@db/prod", "the password"), ("postgres://app:Qx%FF@db/prod", "the password"),
        ("postgres://Qx%zzp:pw@db/prod", "the user name"), ("postgres://Qx%zzp@db/prod", "the user name"),
        ("postgres://app:pw@db/Qx%g0d", "the database name"), ("postgres://app:pw@db/prod?sslmode=Qx%1", "the value of option sslmode"),
        ("postgres://app:pw@db/prod?Qx%mode=require", "an option name"),
    ])
    func invalidPercentEscapesAreRefusedNamingThePart(_ url: String, _ part: String) {
        do {
            let parsed = try PostgresURL(url, field: "config.postgresUrl", homeDirectory: emptyHome)
            Issue.record("\(url) parsed, password \(parsed.password ?? "-")")
        } catch {
            #expect(error.code == .invalidPayload)
            #expect(error.message.hasPrefix("config.postgresUrl: \(part) "), "\(error.message)")
            #expect(error.message.contains("%25") || error.message.contains("UTF-8"), "\(error.message)")
            #expect(!error.message.contains("Qx"), "\(error.message)")
        }
    }

    @Test func validPercentEscapesDecode() throws {
        let url = try PostgresURL("postgres://%61pp:p%40%3As%25s%C3%A9@db/pr%2Fod", field: "x", homeDirectory: emptyHome)
        #expect(url.username == "app")
        #expect(url.password == "p@:s%sé")
        #expect(url.database == "pr/od")
    }

    /// The fuzzer's find: the query was cut at the first `?` before the user information was
    /// found, so a password with a `?` (as libpq accepts it) became the query, and the sslmode
    /// error printed the rest of it. The user information ends at the last `@` before the path.
    /// Found by fuzzing (Tests/Fuzz/regressions/pgurl/combining-mark-after-colon): a combining
    /// mark right after a separator joins it into one Character, which hid the `:` and moved
    /// the password into the user name. The URL is scanned by Unicode scalar.
    @Test func aCombiningMarkAfterASeparatorDoesNotHideIt() throws {
        let url = try PostgresURL("postgres://app:\u{301}secret@db\u{301}x:5432/prod\u{301}?sslmode=disable", field: "x", homeDirectory: emptyHome)
        #expect(url.username == "app")
        #expect(url.password == "\u{301}secret")
        #expect(url.host == "db\u{301}x" && url.port == 5432 && url.database == "prod\u{301}" && url.sslMode == .disable)
        // The `&` still separates: what follows it is an option of its own (unknown here).
        #expect(throws: CSOPError.self) { try PostgresURL("postgres://app:pw@db/prod?sslmode=disable&\u{301}", field: "x", homeDirectory: emptyHome) }
    }

    @Test func aQuestionMarkInTheUserInformationIsPartOfIt() throws {
        let url = try PostgresURL("postgres://app:Xk?9pLm2Qz@db.internal:5432/prod", field: "x", homeDirectory: emptyHome)
        #expect(url.username == "app" && url.password == "Xk?9pLm2Qz")
        #expect(url.host == "db.internal" && url.port == 5432 && url.database == "prod" && url.sslMode == .prefer)
        let user = try PostgresURL("postgres://ap?p:hunter22@db/prod", field: "x", homeDirectory: emptyHome)
        #expect(user.username == "ap?p" && user.password == "hunter22" && user.host == "db")
        let noPath = try PostgresURL("postgres://app:p?w@db:6543?sslmode=disable", field: "x", homeDirectory: emptyHome)
        #expect(noPath.password == "p?w" && noPath.host == "db" && noPath.port == 6543 && noPath.database == nil && noPath.sslMode == .disable)
        let rawAt = try PostgresURL("postgres://app:p@ss@db/prod?sslmode=require", field: "x", homeDirectory: emptyHome)
        #expect(rawAt.password == "p@ss" && rawAt.host == "db" && rawAt.sslMode == .require)
        // A path in the query is the query's.
        let rootInQuery = try PostgresURL(
            "postgres://app:pw@db?sslmode=verify-ca&sslrootcert=\(TestEnvironment.postgresCA)", field: "x", homeDirectory: emptyHome)
        #expect(rootInQuery.host == "db" && rootInQuery.database == nil && rootInQuery.sslRootCert == TestEnvironment.postgresCA)
    }

    /// Many malformed URLs around a distinctive password, wherever this parser or libpq would
    /// read it: no error message contains any part of it.
    @Test func noErrorMessageEverContainsThePassword() {
        let passwords = [
            "Zq7Wx9Kp", "Zq7?Wx9Kp", "Zq7?sslmode=Wx9Kp", "Zq7@Wx9Kp", "Zq7%zzWx9Kp", "Zq7&Wx9Kp=", "Zq7:Wx9Kp", "Zq7#Wx9Kp",
            "Zq7/Wx9Kp", "Zq7%Wx9Kp", "Zq7?sslmode=requireWx9Kp", "Zq7?password=Wx9Kp", "Zq7%FFWx9Kp", "Zq7[Wx9Kp]", "Zq7 Wx9Kp",
        ]
        let prefixes = ["postgres://app:", "postgresql://app:", "postgres://a%zzp:", "mysql://app:", "postgres://:", "postgres://app:pw@h:"]
        let suffixes = [
            "@db/prod", "@db/prod?sslmode=bogus", "@db/prod?sslmode=bog%us", "@db:99999/prod", "@db:port/prod", "@/prod", "@db/prod?foo=1",
            "@db/pr%zzod", "@db/prod?sslmode=verify-full", "@db/prod?sslcert=/nope", "@db/prod?sslmode=", "@db/prod?sslmode",
            "@db?sslmode=bogus", "@db:0", "@[::1:5432/prod", "@db/prod?sslmode=disable&sslrootcert=/x", "@db/prod?&&=&", "",
            "@db/prod?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem", "?sslmode=bogus@db/prod", "@db/prod?%zz=1",
        ]
        var errors = 0
        for password in passwords {
            for prefix in prefixes {
                for suffix in suffixes {
                    let url = prefix + password + suffix
                    do {
                        _ = try PostgresURL(url, field: "config.postgresUrl", homeDirectory: emptyHome)
                    } catch {
                        errors += 1
                        #expect(error.code == .invalidPayload)
                        for piece in ["Zq7", "Wx9Kp"] {
                            #expect(!error.message.contains(piece), "\(url): \(error.message)")
                        }
                    }
                }
            }
        }
        #expect(errors > 1000)
    }
}
