import Foundation
import PackagePlugin

/// Embeds every `.sql` file under the package's `sql/` folder into the target
/// as Swift string literals, so the built binary carries its migrations and
/// reports and never reads them relative to the working directory.
@main
struct EmbedSQLPlugin: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let sqlDirectory = context.package.directoryURL.appending(path: "sql")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedSQLFiles.swift")
        var files: [URL] = []
        if let walker = FileManager.default.enumerator(at: sqlDirectory, includingPropertiesForKeys: nil) {
            for case let url as URL in walker where url.pathExtension == "sql" {
                files.append(url)
            }
        }
        files.sort { $0.path < $1.path }
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) SQL files",
                executable: try context.tool(named: "embed-text").url,
                arguments: [output.path, sqlDirectory.path, "embeddedSQLFiles"] + files.map(\.path),
                inputFiles: files,
                outputFiles: [output]
            )
        ]
    }
}
