import Foundation
import PackagePlugin

/// Embeds every `.json` file of the target's `Fixtures/` folder into the target
/// as `embeddedFixtures`, so that a connector's seed content travels inside the
/// binary: a `lockbox` copied anywhere on its own still has it (a resource
/// bundle would have to be copied beside it).
@main
struct EmbedFixturesPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        guard let target = target as? SourceModuleTarget else { return [] }
        let fixtures = target.directoryURL.appending(path: "Fixtures")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedFixtures.swift")
        let files = ((try? FileManager.default.contentsOfDirectory(at: fixtures, includingPropertiesForKeys: nil)) ?? [])
            .filter { $0.pathExtension == "json" }
            .sorted { $0.path < $1.path }
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) fixtures of \(target.name)",
                executable: try context.tool(named: "embed-text").url,
                arguments: [output.path, fixtures.path, "embeddedFixtures"] + files.map(\.path),
                inputFiles: files,
                outputFiles: [output]
            )
        ]
    }
}
