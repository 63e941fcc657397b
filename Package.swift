// swift-tools-version:6.1

import PackageDescription

let package = Package(
    name: "lockbox",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lockbox", targets: ["lockbox"]),
        .library(name: "LockboxCore", targets: ["LockboxCore"]),
        .library(name: "LockboxPostgres", targets: ["LockboxPostgres"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.1.0"),
    ],
    targets: [
        // MARK: libpq and our PostgreSQL layer

        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(
            name: "LockboxPostgres",
            dependencies: [
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ]
        ),

        // MARK: SQL files and connector fixtures embedded at build time

        .executableTarget(name: "embed-text"),
        .plugin(
            name: "EmbedSQLPlugin",
            capability: .buildTool(),
            dependencies: ["embed-text"],
            path: "Sources/EmbedSQLPlugin"
        ),
        .plugin(
            name: "EmbedFixturesPlugin",
            capability: .buildTool(),
            dependencies: ["embed-text"],
            path: "Sources/EmbedFixturesPlugin"
        ),
        .target(
            name: "LockboxSQL",
            plugins: ["EmbedSQLPlugin"]
        ),

        // MARK: The broker

        .target(
            name: "LockboxCore",
            dependencies: [
                "LockboxPostgres",
                "LockboxSQL",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Connectors (one folder each under Plugins/)

        .target(
            name: "ExchangeOnline", dependencies: ["LockboxCore"], path: "Plugins/ExchangeOnline", exclude: ["Fixtures"],
            plugins: ["EmbedFixturesPlugin"]
        ),
        .target(
            name: "SharePointOnline", dependencies: ["LockboxCore"], path: "Plugins/SharePointOnline", exclude: ["Fixtures"],
            plugins: ["EmbedFixturesPlugin"]
        ),
        .target(
            name: "OneDrive", dependencies: ["LockboxCore"], path: "Plugins/OneDrive", exclude: ["Fixtures"],
            plugins: ["EmbedFixturesPlugin"]
        ),
        .target(
            name: "LockboxConnectors",
            dependencies: ["LockboxCore", "ExchangeOnline", "SharePointOnline", "OneDrive"]
        ),

        // MARK: The command line

        .executableTarget(
            name: "lockbox",
            dependencies: [
                "LockboxCore",
                "LockboxConnectors",
                "LockboxPostgres",
                "LockboxSQL",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),

        // MARK: Tests

        .target(
            name: "LockboxTestSupport",
            dependencies: ["LockboxPostgres", "LockboxCore", "LockboxSQL", "LockboxConnectors"]
        ),
        .testTarget(name: "LockboxPostgresTests", dependencies: ["LockboxPostgres", "LockboxTestSupport"]),
        .testTarget(name: "LockboxCoreTests", dependencies: ["LockboxCore", "LockboxTestSupport"]),
        .testTarget(
            name: "ConnectorTests",
            dependencies: [
                "LockboxCore", "LockboxConnectors", "LockboxTestSupport", "ExchangeOnline", "SharePointOnline",
                "OneDrive",
            ]
        ),
        .testTarget(
            name: "LockboxCLITests",
            dependencies: [
                "LockboxTestSupport",
                "LockboxPostgres",
                .product(name: "Subprocess", package: "swift-subprocess"),
            ]
        ),
        .testTarget(
            name: "ReportTests",
            dependencies: [
                "LockboxCore", "LockboxConnectors", "LockboxPostgres", "LockboxSQL", "LockboxTestSupport",
                .product(name: "Subprocess", package: "swift-subprocess"),
            ]
        ),
    ]
)

let sharedSwiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

for target in package.targets where [.executable, .test, .regular].contains(target.type) {
    target.swiftSettings = (target.swiftSettings ?? []) + sharedSwiftSettings
}
