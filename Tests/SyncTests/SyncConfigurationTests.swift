import CSOPCore
import Testing

@testable import SyncPlugin

@Suite struct SyncConfigurationTests {
    func config(_ object: JSONValue, env: [String: String] = [:]) throws(CSOPError) -> SyncConfiguration {
        try SyncConfiguration(config: object, environment: { env[$0] })
    }

    @Test func defaultsAreLocalMode() throws {
        let c = try config([:])
        #expect(!c.isCluster)
        #expect(c.heartbeatInterval == 5000)
        #expect(c.presenceExpiry == 10_000)
        #expect(c.maxPayloadBytes == 1_048_576)
        #expect(c.clusterChannel == "csop_sync")
    }

    @Test func urlFromConfigOrEnvironment() throws {
        let fromConfig = try config(["postgresUrl": "postgres://u:p%40ss@db.example:6543/app"])
        let url = try #require(fromConfig.postgres)
        #expect(url.host == "db.example")
        #expect(url.port == 6543)
        #expect(url.username == "u")
        #expect(url.password == "p@ss")
        #expect(url.database == "app")
        #expect(!url.description.contains("p@ss"))
        let fromEnv = try config([:], env: ["CSOP_SYNC_POSTGRES_URL": "postgresql://me@localhost/x"])
        #expect(fromEnv.postgres?.username == "me")
        #expect(fromEnv.postgres?.port == 5432)
        let both = try config(["postgresUrl": "postgres://cfg@h/x"], env: ["CSOP_SYNC_POSTGRES_URL": "postgres://env@h/x"])
        #expect(both.postgres?.username == "cfg")
        #expect(try config(["heartbeatInterval": 1000]).presenceExpiry == 2000)
    }

    @Test(arguments: [
        (JSONValue.object(["nope": 1]), "unknown field config.nope"),
        (["postgresUrl": "mysql://x"], "config.postgresUrl must start with postgres://"),
        (["postgresUrl": "postgres://u:secret@h:99999/d"], "invalid port"),
        (["postgresUrl": "postgres://u:secret@h/d?sslmode=always"], "config.postgresUrl: sslmode must be one of"),
        (["postgresUrl": "postgres://u:secret@h/d?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt"], "sslrootcert /nonexistent/ca.crt"),
        (["postgresUrl": "postgres://u:secret@/d"], "no host"),
        (["heartbeatInterval": 0], "config.heartbeatInterval must be between"),
        (["heartbeatInterval": 1000, "presenceExpiry": 1500], "must be more than 1.5"),
        (["maxPayloadBytes": 0], "config.maxPayloadBytes"),
        (["maxPayloadBytes": "big"], "must be an integer"),
        (["clusterChannel": "Bad-Name"], "lower-case identifier"),
        (["clusterChannel": "1abc"], "lower-case identifier"),
    ] as [(JSONValue, String)])
    func badConfigNamesTheKey(object: JSONValue, message: String) {
        #expect {
            try config(object)
        } throws: { error in
            let error = error as? CSOPError
            return error?.code == .invalidPayload && error?.message.contains(message) == true
                && error?.message.contains("secret") == false
        }
    }
}
