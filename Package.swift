// swift-tools-version: 6.0
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
        .library(name: "CSOP", targets: ["CSOPHost"]),
        .library(name: "CSOPPluginKit", targets: ["CSOPPluginKit"]),
        .library(name: "csop-diag", type: .dynamic, targets: ["DiagExport"]),
        .library(name: "csop-storage", type: .dynamic, targets: ["StorageExport"]),
        .library(name: "csop-compute", type: .dynamic, targets: ["ComputeExport"]),
        .library(name: "csop-sync", type: .dynamic, targets: ["SyncExport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/attaswift/BigInt", from: "6.0.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .target(name: "CSOPPluginABI"),
        .target(name: "CSOPCore", swiftSettings: swiftSettings),
        .target(
            name: "CSOPHost",
            dependencies: ["CSOPCore", "CSOPPluginABI", .product(name: "Logging", package: "swift-log")],
            swiftSettings: swiftSettings
        ),
        .target(name: "CSOPPluginKit", dependencies: ["CSOPCore", "CSOPPluginABI"], swiftSettings: swiftSettings),
        .target(
            name: "CSOPPostgres",
            dependencies: ["CSOPCore", .product(name: "PostgresNIO", package: "postgres-nio")],
            swiftSettings: swiftSettings
        ),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CJavaScriptCore", pkgConfig: "javascriptcoregtk-4.1", providers: [.apt(["libjavascriptcoregtk-4.1-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "DiagPlugin", dependencies: ["CSOPPluginKit"], path: "Plugins/Diag",
            exclude: ["Export"], swiftSettings: swiftSettings),
        .target(
            name: "StoragePlugin",
            dependencies: [
                "CSOPPluginKit", "CSOPPostgres", "CSQLite", "CZlib",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Plugins/Storage",
            exclude: ["Export"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "ComputePlugin",
            dependencies: [
                "CSOPPluginKit", "CJavaScriptCore",
                .product(name: "BigInt", package: "BigInt"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Plugins/Compute",
            exclude: ["Export"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SyncPlugin",
            dependencies: ["CSOPPluginKit", "CSOPPostgres", .product(name: "PostgresNIO", package: "postgres-nio")],
            path: "Plugins/Sync",
            exclude: ["Export"],
            swiftSettings: swiftSettings
        ),
        .target(name: "DiagExport", dependencies: ["DiagPlugin"], path: "Plugins/Diag/Export", swiftSettings: swiftSettings),
        .target(name: "StorageExport", dependencies: ["StoragePlugin"], path: "Plugins/Storage/Export", swiftSettings: swiftSettings),
        .target(name: "ComputeExport", dependencies: ["ComputePlugin"], path: "Plugins/Compute/Export", swiftSettings: swiftSettings),
        .target(name: "SyncExport", dependencies: ["SyncPlugin"], path: "Plugins/Sync/Export", swiftSettings: swiftSettings),
        .executableTarget(
            name: "csop",
            dependencies: [
                "CSOPHost", "CSQLite", "CJavaScriptCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(name: "CSOPTestSupport", dependencies: ["CSOPHost"], swiftSettings: swiftSettings),
        .testTarget(name: "CSOPCoreTests", dependencies: ["CSOPCore"], swiftSettings: swiftSettings),
        .testTarget(name: "CSOPHostTests", dependencies: ["CSOPHost", "CSOPTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "CLITests", dependencies: ["CSOPTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "StorageTests", dependencies: ["StoragePlugin", "CSOPTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "ComputeTests", dependencies: ["ComputePlugin", "CSOPTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "SyncTests", dependencies: ["SyncPlugin", "CSOPPostgres", "CSOPTestSupport"], swiftSettings: swiftSettings),
    ]
)
