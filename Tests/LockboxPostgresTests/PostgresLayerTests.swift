import Foundation
import LockboxPostgres
import LockboxTestSupport
import Testing

@Suite("libpq layer against a real server")
struct PostgresLayerTests {
    @Test("every supported type round-trips, NULLs included")
    func roundTrips() async throws {
        try await TestDatabase.with { db in
            try await db.pool.query(
                """
                CREATE TABLE t (i bigint, i4 integer, b boolean, d double precision, s text, u uuid,
                                ts timestamptz, bytes bytea, j jsonb, ip inet, dur interval)
                """)
            let uuid = UUID()
            let when = PGTimestamp.date(microseconds: 1_796_000_000_123_456)
            let before1970 = PGTimestamp.date(microseconds: -2_000_000_000_654_321)
            let megabyte = Data((0..<1_048_576).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            let json = try PGJSON(encoding: ["name": "Zoë", "n": "1"])
            let texts = ["", "Grüße, 東京 🚀", "'); DROP TABLE t; --"]
            for (index, text) in texts.enumerated() {
                try await db.pool.query(
                    """
                    INSERT INTO t VALUES (\(Int.max - index), \(Int32.min), \(true), \(3.25), \(text), \(uuid),
                        \(index == 0 ? before1970 : when), \(megabyte), \(json), \(PGInet("2001:db8::1")),
                        \(Duration.seconds(4 * 3600) + .microseconds(7)))
                    """)
            }
            let rows = try await db.pool.query("SELECT * FROM t ORDER BY i DESC")
            #expect(rows.count == 3)
            for (index, row) in rows.enumerated() {
                let (i, i4, b, d, s, u, ts, bytes, j, ip, dur) = try row.decode(
                    (Int, Int32, Bool, Double, String, UUID, Date, Data, PGJSON, PGInet, Duration).self)
                #expect(i == Int.max - index)
                #expect(i4 == Int32.min)
                #expect(b == true)
                #expect(d == 3.25)
                #expect(s == texts[index])
                #expect(u == uuid)
                #expect(PGTimestamp.microseconds(ts) == PGTimestamp.microseconds(index == 0 ? before1970 : when))
                #expect(bytes == megabyte)
                #expect(try j.decode([String: String].self) == ["name": "Zoë", "n": "1"])
                #expect(ip.address == "2001:db8::1")
                #expect(dur == .seconds(4 * 3600) + .microseconds(7))
            }
            try await db.pool.query("INSERT INTO t (i) VALUES (\(Int?.none))")
            let nulls = try await db.pool.query("SELECT i, s, ts, bytes, j FROM t WHERE i IS NULL")
            let decoded = try #require(nulls.first).decode((Int?, String?, Date?, Data?, PGJSON?).self)
            #expect(decoded.0 == nil && decoded.1 == nil && decoded.2 == nil && decoded.3 == nil && decoded.4 == nil)
        }
    }

    @Test("an interval too long to count in microseconds is refused, not trapped on")
    func intervalOverflow() async throws {
        #expect(try Duration.pgDecode("P1DT2H30M") == .seconds(26 * 3600 + 1800))
        #expect(try Duration.pgDecode("PT-0.5S") == .milliseconds(-500))
        for text in ["PT9999999999999999H", "P9999999999999D", "P106751991DT10H"] {
            let error = #expect(throws: PGDecodeFailure.self, "\(text)") { try Duration.pgDecode(text) }
            #expect(error?.reason.contains("too long to count") == true, "\(text)")
        }
        // So is such an interval read from the server (PostgreSQL stores millions of years).
        try await TestDatabase.with { db in
            let rows = try await db.pool.query("SELECT interval '2147483647 days 2562047788 hours'")
            let error = #expect(throws: (any Error).self) { try rows.first?.decode(Duration.self, at: 0) }
            #expect("\(String(describing: error))".contains("too long to count"), "\(String(describing: error))")
        }
    }

    @Test("a timestamp too far from 1970 to count in microseconds is refused, not trapped on")
    func timestampOverflow() async throws {
        try await TestDatabase.with { db in
            // PostgreSQL's last timestamp; without the fix, decoding it stopped the process
            // (arithmetic overflow) instead of failing the read.
            let rows = try await db.pool.query(
                "SELECT '294276-12-31 23:59:59.999999+00'::timestamptz, '2026-01-01 00:00:00+00'::timestamptz")
            let error = #expect(throws: PostgresError.self) { try rows.first!.decode(Date.self, at: 0) }
            #expect(error?.kind == .decoding, "\(String(describing: error))")
            #expect(error?.message.contains("too far from 1970") == true, "\(String(describing: error))")
            #expect(try PGTimestamp.microseconds(rows.first!.decode(Date.self, at: 1)) == 1_767_225_600_000_000)
        }
    }

    @Test("a UUID is read from the server's text in either case, and anything else is refused")
    func uuidText() throws {
        for _ in 0..<200 {
            let uuid = UUID()
            #expect(try UUID.pgDecode(uuid.uuidString.lowercased()) == uuid)
            #expect(try UUID.pgDecode(uuid.uuidString) == uuid)
        }
        let zero = UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        #expect(try UUID.pgDecode("00000000-0000-0000-0000-000000000000") == zero)
        let ones = try UUID.pgDecode("ffffffff-ffff-ffff-ffff-ffffffffffff")
        #expect(ones.uuidString == "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF")
        let malformed = [
            "", "not a uuid", "0123456789abcdef0123456789abcdef", "{01234567-89ab-cdef-0123-456789abcdef}",
            "01234567-89ab-cdef-0123-456789abcdeg", "01234567-89ab-cdef-0123-456789abcde",
            "01234567-89ab-cdef-0123-456789abcdef0", "0123456789-ab-cdef-0123-456789abcdef",
            "01234567_89ab_cdef_0123_456789abcdef", "0123456é-89ab-cdef-0123-456789abcdef",
            "01234567-89ab-cdef-0123-4567 9abcdef",  // Foundation's sscanf-based parser accepts this one
        ]
        for text in malformed {
            let error = #expect(throws: PGDecodeFailure.self) { try UUID.pgDecode(text) }
            #expect(error?.reason.contains("not a UUID") == true, "\(text)")
        }
    }

    @Test("an SQL-looking value is stored and read back verbatim")
    func injectionIsData() async throws {
        try await TestDatabase.with { db in
            try await db.pool.query("CREATE TABLE x (v text)")
            let hostile = "'); DROP TABLE x; --"
            try await db.pool.query("INSERT INTO x VALUES (\(hostile))")
            let back = try await db.pool.query("SELECT v FROM x WHERE v = \(hostile)")
            #expect(try back.first?.decode(String.self, column: "v") == hostile)
            let tables = try await db.pool.query("SELECT count(*) FROM pg_tables WHERE tablename = 'x'")
            #expect(try tables.first?.decode(Int.self, at: 0) == 1)
        }
    }

    @Test("a text value holding a NUL is refused before sending, never cut short at it")
    func nulCharacterIsRefused() async throws {
        try await TestDatabase.with { db in
            let connection = try await db.connect()
            try await connection.query("CREATE TABLE n (v text)")
            let cut = "alex\u{0}blake"
            let plain = try await #require(throws: PostgresError.self) {
                try await connection.query("INSERT INTO n VALUES (\(cut))")
            }
            #expect(plain.kind == .client)
            #expect(plain.message.contains("parameter $1 contains a NUL character"))
            await #expect(throws: PostgresError.self) {
                try await connection.query("INSERT INTO n VALUES (\(cut))", prepared: true)
            }
            await #expect(throws: PostgresError.self) {
                try await connection.query("INSERT INTO n SELECT unnest(\(PGArray([cut] as [String?]))::text[])")
            }
            await #expect(throws: PostgresError.self) {
                try await connection.pipeline(["INSERT INTO n VALUES ('first')", "INSERT INTO n VALUES (\(cut))"])
            }
            // Nothing was written (the pipeline's first statement was not sent either), and
            // the connection is still usable.
            let count = try await connection.query("SELECT count(*) FROM n")
            #expect(try count.first?.decode(Int.self, at: 0) == 0)
            await connection.close()
        }
    }

    @Test("every connection commits durably: a default synchronous_commit = off is turned on, others kept, all pinned")
    func commitsAreDurable() async throws {
        try await TestDatabase.with { db in
            for (configured, expected) in [("off", "on"), ("local", "local"), ("remote_apply", "remote_apply")] {
                try await db.pool.query(
                    "ALTER DATABASE \(identifier: db.name) SET synchronous_commit = \(identifier: configured)")
                let connection = try await db.connect()
                let setting = try await connection.query(
                    "SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'")
                #expect(try setting.first?.decode(String.self, at: 0) == expected, "database default \(configured)")
                // Set for the session: a reload of the server's configuration cannot turn it off.
                #expect(try setting.first?.decode(String.self, at: 1) == "session", "database default \(configured)")
                await connection.close()
            }
        }
    }

    @Test("a connection dropped without being closed ends its session on the server")
    func droppedConnectionIsClosed() async throws {
        try await TestDatabase.with { db in
            var connection: PGConnection? = try await db.connect()
            let pid = try await connection!.query("SELECT pg_backend_pid()").first!.decode(Int.self, at: 0)
            connection = nil
            var open = -1
            for _ in 0..<1000 where open != 0 {
                open = try await db.pool.query("SELECT count(*) FROM pg_stat_activity WHERE pid = \(pid)")
                    .first!.decode(Int.self, at: 0)
                if open != 0 { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(open == 0, "the server session of a dropped connection still runs")
            _ = connection
        }
    }

    @Test("text is sent and read as UTF-8 whatever client encoding the connection string or environment asks for")
    func clientEncoding() async throws {
        try await TestDatabase.with { db in
            try await db.pool.query("CREATE TABLE enc (s text)")
            let text = "Zoë 東京 🚀 ā"
            // As PGCLIENTENCODING=LATIN1 in the environment would ask (which a test cannot set for
            // itself alone). Without the fix the server took the UTF-8 bytes for Latin-1 and stored
            // "ZoÃ«…" (or refused them, for an encoding without some bytes), reading them back
            // the same way, so that only other clients (auditors, psql) saw the damage.
            for encoding in ["LATIN1", "SQL_ASCII", "WIN1252"] {
                let base = db.connectionString
                let separator = !base.hasPrefix("postgres") ? " " : base.contains("?") ? "&" : "?"
                let connection = try await PGConnection.connect(base + separator + "client_encoding=\(encoding)")
                try await connection.query("INSERT INTO enc VALUES (\(text))")
                #expect(try await connection.query("SELECT s FROM enc").first?.decode(String.self, at: 0) == text, "\(encoding)")
                #expect(try await connection.query("SHOW client_encoding").first?.decode(String.self, at: 0) == "UTF8")
                await connection.close()
                let stored = try await db.pool.query("SELECT s, length(s) FROM enc")
                #expect(try stored.decode((String, Int).self).map(\.0) == [text], "\(encoding)")
                #expect(try stored.decode((String, Int).self).map(\.1) == [text.unicodeScalars.count], "\(encoding)")
                try await db.pool.query("DELETE FROM enc")
            }
        }
    }

    @Test("a unique violation carries SQLSTATE 23505 and the constraint name")
    func uniqueViolation() async throws {
        try await TestDatabase.with { db in
            try await db.pool.query("CREATE TABLE u (v text CONSTRAINT u_v_unique UNIQUE)")
            try await db.pool.query("INSERT INTO u VALUES ('a')")
            let error = try await #require(throws: PostgresError.self) {
                try await db.pool.query("INSERT INTO u VALUES ('a')")
            }
            #expect(error.sqlState == "23505")
            #expect(error.constraint == "u_v_unique")
            #expect(error.kind == .server)
            #expect(error.description.contains("duplicate key"))
            #expect(error.debugDescription.contains("23505"))
        }
    }

    @Test("decoding errors name the column and the type")
    func decodingError() async throws {
        try await TestDatabase.with { db in
            let rows = try await db.pool.query("SELECT 'abc'::text AS label, NULL::int AS missing")
            let row = try #require(rows.first)
            let error = try #require(throws: PostgresError.self) { try row.decode(Int.self, column: "label") }
            #expect(error.message.contains("\"label\"") && error.message.contains("Int"))
            let nullError = try #require(throws: PostgresError.self) { try row.decode(Int.self, column: "missing") }
            #expect(nullError.message.contains("\"missing\"") && nullError.message.contains("NULL"))
        }
    }

    @Test("a transaction that throws leaves nothing behind; one that returns commits")
    func transactions() async throws {
        struct Boom: Error {}
        try await TestDatabase.with { db in
            try await db.pool.query("CREATE TABLE tx (v int)")
            await #expect(throws: Boom.self) {
                try await db.pool.withTransaction { connection in
                    try await connection.query("INSERT INTO tx VALUES (1)")
                    throw Boom()
                }
            }
            try await db.pool.withTransaction { connection in
                try await connection.query("INSERT INTO tx VALUES (2)")
            }
            let rows = try await db.pool.query("SELECT v FROM tx")
            #expect(try rows.decode((Int).self) == [2])
        }
    }

    @Test("prepared statements are reused and pipelines return one result per statement")
    func preparedAndPipeline() async throws {
        try await TestDatabase.with { db in
            let connection = try await db.connect()
            try await connection.query("CREATE TABLE p (v int CONSTRAINT p_positive CHECK (v > 0))")
            for value in 1...3 {
                try await connection.query("INSERT INTO p VALUES (\(value))", prepared: true)
            }
            let prepared = try await connection.query("SELECT count(*) FROM pg_prepared_statements")
            #expect(try prepared.first?.decode(Int.self, at: 0) == 1)
            let results = try await connection.pipeline([
                "INSERT INTO p VALUES (\(10)) RETURNING v", "SELECT count(*) FROM p",
            ])
            #expect(try results[0].get().first?.decode(Int.self, at: 0) == 10)
            #expect(try results[1].get().first?.decode(Int.self, at: 0) == 4)
            // In a transaction, a failed statement aborts the rest of the pipeline.
            let failing = try await connection.pipeline([
                "BEGIN", "INSERT INTO p VALUES (\(-1))", "INSERT INTO p VALUES (\(20))", "COMMIT",
            ])
            guard case .failure(let error) = failing[1] else {
                Issue.record("a CHECK violation must fail")
                return
            }
            #expect(error.constraint == "p_positive")
            if case .success = failing[2] { Issue.record("statement after a failure must not succeed") }
            try? await connection.execute(script: "ROLLBACK")
            let count = try await connection.query("SELECT count(*) FROM p")
            #expect(try count.first?.decode(Int.self, at: 0) == 4)
            // Without one, the pipeline is one transaction: a failure rolls back what ran before it.
            let implicit = try await connection.pipeline([
                "INSERT INTO p VALUES (\(30))", "INSERT INTO p VALUES (\(-1))", "INSERT INTO p VALUES (\(31))",
            ])
            #expect((try? implicit[0].get()) != nil)
            #expect((try? implicit[1].get()) == nil && (try? implicit[2].get()) == nil)
            let after = try await connection.query("SELECT count(*) FROM p")
            #expect(try after.first?.decode(Int.self, at: 0) == 4, "the statement before the failure was kept")
            await connection.close()
        }
    }

    @Test("16 tasks × 200 queries share the pool without exceeding its limit")
    func poolUnderLoad() async throws {
        try await TestDatabase.with(maxConnections: 4) { db in
            let total = try await withThrowingTaskGroup(of: Int.self) { group in
                for task in 0..<16 {
                    group.addTask {
                        var sum = 0
                        for query in 0..<200 {
                            let rows = try await db.pool.query("SELECT \(task * 1000 + query)::bigint")
                            sum += try rows.first!.decode(Int.self, at: 0)
                        }
                        return sum
                    }
                }
                return try await group.reduce(0, +)
            }
            let expected = (0..<16).reduce(0) { sum, task in sum + (0..<200).reduce(0) { $0 + task * 1000 + $1 } }
            #expect(total == expected)
            let statistics = await db.pool.statistics
            #expect(statistics.peakOpen <= 4)
            #expect(statistics.peakOpen >= 1)
        }
    }

    @Test("connecting to a server that is not there fails with a connection error")
    func unreachable() async throws {
        let error = try await #require(throws: PostgresError.self) {
            _ = try await PGConnection.connect("host=/nonexistent-lockbox-socket-dir port=5 user=nobody")
        }
        #expect(error.kind == .connection)
        #expect(error.isConnectionFailure)
    }
}

@Suite("array parameters")
struct ArrayParameterTests {
    @Test("text arrays carry quotes, backslashes, braces, commas, NULL and non-ASCII verbatim")
    func textArrays() async throws {
        try await TestDatabase.with { db in
            let elements: [String?] = ["plain", "with \"quotes\"", "back\\slash", "{braces}, commas", nil, "", "Zoë 東京", "NULL"]
            let rows = try await db.pool.query(
                "SELECT ordinality, value FROM unnest(\(PGArray(elements))::text[]) WITH ORDINALITY AS u(value, ordinality)")
            let decoded = try rows.decode((Int, String?).self)
            #expect(decoded.map(\.0) == Array(1...elements.count))
            #expect(decoded.map(\.1) == elements)
        }
    }
}
