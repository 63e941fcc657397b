import Foundation
import LockboxPostgres
import LockboxTestSupport
import Testing

@Suite("lockbox output formats")
struct OutputFormatTests {
    @Test("times print the millisecond the database holds, truncated: .001 is not .000, .9996 is .999")
    func millisecondsAsStored() async throws {
        try await CLIWorld.with { world in
            let stored = [
                "2026-03-01 09:30:00.001+00", "2026-03-01 09:30:00.007+00", "2026-03-01 09:30:00.123+00",
                "2026-03-01 09:30:00.9996+00", "2026-03-01 09:30:59.999999+00", "2026-03-01 09:30:00.000999+00",
            ]
            let printed = [
                "2026-03-01T09:30:00.001Z", "2026-03-01T09:30:00.007Z", "2026-03-01T09:30:00.123Z",
                "2026-03-01T09:30:00.999Z", "2026-03-01T09:30:59.999Z", "2026-03-01T09:30:00.000Z",
            ]
            for index in stored.indices { try await world.ok("operator", "add", "engineer\(index)") }
            for (index, time) in stored.enumerated() {
                try await world.db.pool.query(
                    "UPDATE lockbox.operators SET created_at = \(time)::timestamptz WHERE alias = \("engineer\(index)")")
            }
            let json = try await world.array("operator", "list")
            for index in stored.indices {
                let row = json.first { $0["alias"] as? String == "engineer\(index)" }
                #expect(row?["createdAt"] as? String == printed[index], "\(stored[index])")
            }
            let csv = try await world.ok("operator", "list", "--format", "csv")
            let table = try await world.ok("operator", "list")
            for index in stored.indices {
                #expect(csv.stdout.contains("engineer\(index),false,\(printed[index])\n"), "\(csv)")
                #expect(table.stdout.contains(printed[index]), "\(table)")
            }
        }
    }
}
