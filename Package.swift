// swift-tools-version: 6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "csop",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "csop", targets: ["csop"]),
        .executable(name: "csop-bench", targets: ["csop-bench"]),
        .executable(name: "csop-serve", targets: ["csop-serve"]),
        .library(name: "CSOP", targets: ["CSOPHost"]),
        .library(name: "CSOPPluginKit", targets: ["CSOPPluginKit"]),
        .library(name: "csop-diag", type: .dynamic, targets: ["DiagExport"]),
        .library(name: "csop-storage", type: .dynamic, targets: ["StorageExport"]),
        .library(name: "csop-compute", type: .dynamic, targets: ["ComputeExport"]),
        .library(name: "csop-sync", type: .dynamic, targets: ["SyncExport"]),
    ],
    traits: [
        // `swift build --traits OTLP`: csop and csop serve can send their spans to an OpenTelemetry
        // collector (--otlp-endpoint). Off by default: swift-otel, async-http-client and
        // swift-protobuf add minutes to a build that most users do not need.
        .trait(name: "OTLP", description: "OTLP/HTTP span export for csop and csop serve (swift-otel)."),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        // Metrics: the swift-metrics API, exported in Prometheus's text format (host and plugins).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Tracing: a span per request and per attempt, for whatever tracer the embedder or csop serve sets.
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // WebAssembly tasks (the compute plugin): an interpreter with fuel, no file system or WASI.
        .package(url: "https://github.com/swiftwasm/WasmKit", from: "0.4.2", traits: ["MultiThread"]),
        // The network gateway (csop-serve) only: csop itself links none of these.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket", from: "1.6.2"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // The C contract, nothing else.
        .target(name: "CSOPPluginABI"),
        // What plugin authors and embedders share: JSON, errors, Fields, locks, backoff.
        .target(
            name: "CSOPCore",
            dependencies: [
                "CSOPPluginABI",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings),
        // An atomic exchange on the plugin-visible call struct (C, for memory Swift does not own).
        .target(name: "CSOPHostShims"),
        // The engine and the embedding API: router, timers, plugins.d, the dlopen loader.
        .target(
            name: "CSOPHost",
            dependencies: [
                "CSOPCore", "CSOPPluginABI", "CSOPHostShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(name: "CSOPPluginKit", dependencies: ["CSOPCore", "CSOPPluginABI"], swiftSettings: swiftSettings),
        .target(
            name: "CSOPPostgres",
            dependencies: [
                "CSOPCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CJavaScriptCore", pkgConfig: "javascriptcoregtk-4.1", providers: [.apt(["libjavascriptcoregtk-4.1-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "DiagPlugin", dependencies: ["CSOPCore", "CSOPPluginKit"], path: "Plugins/Diag",
            exclude: ["Export"], swiftSettings: swiftSettings),
        .target(
            name: "StoragePlugin",
            dependencies: [
                "CSOPCore", "CSOPPluginKit", "CSOPPostgres", "CSQLite", "CZlib",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Plugins/Storage",
            exclude: ["Export"],
            swiftSettings: swiftSettings
        ),
        // Rewrites wasm modules so a compiler's code checks its time (no dependencies, so csop-fuzz can fuzz it).
        .target(name: "CSOPWasmRewrite", swiftSettings: swiftSettings),
        .target(
            name: "ComputePlugin",
            dependencies: [
                "CSOPCore", "CSOPPluginKit", "CJavaScriptCore", "CSOPPostgres", "CSOPWasmRewrite",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "WasmKit", package: "WasmKit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Plugins/Compute",
            exclude: ["Export"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SyncPlugin",
            dependencies: [
                "CSOPCore", "CSOPPluginKit", "CSOPPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Plugins/Sync",
            exclude: ["Export"],
            swiftSettings: swiftSettings
        ),
        .target(name: "DiagExport", dependencies: ["DiagPlugin"], path: "Plugins/Diag/Export", swiftSettings: swiftSettings),
        .target(name: "StorageExport", dependencies: ["StoragePlugin"], path: "Plugins/Storage/Export", swiftSettings: swiftSettings),
        .target(name: "ComputeExport", dependencies: ["ComputePlugin"], path: "Plugins/Compute/Export", swiftSettings: swiftSettings),
        .target(name: "SyncExport", dependencies: ["SyncPlugin"], path: "Plugins/Sync/Export", swiftSettings: swiftSettings),
        // What the executables share: output helpers, the options that load a host.
        .target(
            name: "CSOPCLISupport",
            dependencies: [
                "CSOPHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "OTel", package: "swift-otel", condition: .when(traits: ["OTLP"])),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: .when(traits: ["OTLP"])),
            ],
            swiftSettings: swiftSettings),
        // The gateway's raw reading of dispatch request heads (no dependencies, so csop-fuzz can fuzz it).
        .target(name: "CSOPHTTPHead", swiftSettings: swiftSettings),
        // The network gateway: HTTP, WebSocket and SSE in front of a host, with tokens and limits.
        .target(
            name: "CSOPServe",
            dependencies: [
                "CSOPCore", "CSOPHost", "CSOPHTTPHead", "TOMLKit",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [.embedInCode("Resources/csop.js"), .embedInCode("Resources/status.html")],
            swiftSettings: swiftSettings),
        // `csop serve` and `csop token` run this; kept apart so csop links no HTTP stack.
        .executableTarget(
            name: "csop-serve",
            dependencies: [
                "CSOPServe", "CSOPCLISupport", "CSOPCore", "CSOPHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings),
        // The CLI: links the host only; `csop bench` runs csop-bench from the same directory.
        .executableTarget(
            name: "csop",
            dependencies: [
                "CSOPCore", "CSOPHost", "CSOPCLISupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // The benchmark harness, with the raw SQLite and JavaScriptCore baselines it measures against.
        .executableTarget(
            name: "csop-bench",
            dependencies: [
                "CSOPCore", "CSOPHost", "CSOPCLISupport", "CSQLite", "CJavaScriptCore", "CSOPServe", "CSOPPostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // libFuzzer's driver entry point, for csop-fuzz (linked only by -sanitize=fuzzer).
        .systemLibrary(name: "CLibFuzzer"),
        // The parsers' fuzz targets: libFuzzer's in a fuzz build (scripts/fuzz.sh), a corpus replayer in any other.
        .executableTarget(
            name: "csop-fuzz",
            dependencies: [
                "CSOPCore", "CSOPHost", "CSOPPostgres", "SyncPlugin", "CSOPHTTPHead", "CSOPWasmRewrite", "CLibFuzzer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // Top-level code with no Foundation import, embedding the host as the README shows.
        .executableTarget(name: "csop-embed-example", dependencies: ["CSOPHost"], path: "examples/embed", swiftSettings: swiftSettings),
        .target(
            name: "CSOPTestSupport",
            dependencies: [
                "CSOPCore", "CSOPHost", "CSOPPluginABI", "CSOPPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(name: "CSOPCoreTests", dependencies: ["CSOPCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CSOPHostTests",
            dependencies: [
                "CSOPCore", "CSOPHost", "CSOPTestSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(name: "CLITests", dependencies: ["CSOPCore", "CSOPTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "FuzzTests", dependencies: ["CSOPTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "CSOPCore", "CSOPHost", "CSOPServe", "CSOPTestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "PluginKitTests", dependencies: ["CSOPCore", "CSOPPluginABI", "CSOPPluginKit", "CSOPTestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "StorageTests",
            dependencies: [
                "CSOPCore", "CSOPHost", "CSOPPluginABI", "CSQLite", "StoragePlugin", "CSOPTestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "ComputeTests",
            dependencies: ["CSOPCore", "CSOPHost", "ComputePlugin", "CSOPWasmRewrite", "CSOPTestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "SyncTests",
            dependencies: [
                "CSOPCore", "SyncPlugin", "CSOPPostgres", "CSOPTestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
    ]
)
