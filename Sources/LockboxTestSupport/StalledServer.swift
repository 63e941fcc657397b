import Foundation
import LockboxPostgres

#if canImport(Glibc)
    import Glibc
#endif

/// A fake PostgreSQL server on a Unix socket that lets clients in (trust
/// authentication), answers their first `answering` requests (a simple query, or
/// an extended-protocol exchange up to its Sync) with "done", and then stops
/// answering while it keeps reading, as a server that stalls or a network that
/// partitions after the connection was made. A cancel request is read and closed.
/// Each client is hung up on after `hangUpAfter`, so that a client that waits
/// for ever is freed when the test ends. With `keepsReading` false it stops reading
/// too once it has answered, as a server process that is stopped, or a network
/// that drops everything: what a client sends past the socket's buffers then waits.
public final class StalledServer: Sendable {
    /// The directory holding the socket, for a conninfo's `host`.
    public let directory: String
    private let listener: Int32

    /// A Unix socket listening at `path` (the kernel queues connections until they are
    /// accepted, so a client connects even if nothing ever accepts).
    public static func listeningSocket(at path: String) throws -> Int32 {
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw POSIXError(.EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(listener, 16) == 0 else {
            close(listener)
            throw POSIXError(.EADDRINUSE)
        }
        return listener
    }

    /// Starts listening; the server answers `answering` requests of each client, and then
    /// keeps reading what they send (or not, with `keepsReading` false).
    public init(answering: Int, keepsReading: Bool = true, hangUpAfter: Duration = .seconds(20)) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("lbx-stall-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let listener = try Self.listeningSocket(at: directory + "/.s.PGSQL.5432")
        self.listener = listener
        let thread = Thread {
            while true {
                let client = accept(listener, nil, nil)
                guard client >= 0 else { return }
                let serving = Thread {
                    Self.serve(client, answering: answering, keepsReading: keepsReading, hangUpAfter: hangUpAfter)
                }
                serving.start()
            }
        }
        thread.start()
    }

    /// A conninfo for this server.
    public var conninfo: String { "host=\(conninfoQuote(directory)) port=5432 user=nobody dbname=x" }

    /// Stops accepting clients and removes the socket.
    public func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func serve(_ client: Int32, answering: Int, keepsReading: Bool, hangUpAfter: Duration) {
        defer { close(client) }
        let (seconds, attoseconds) = hangUpAfter.components
        var limit = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        func read(_ count: Int) -> [UInt8]? {
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let got = bytes.withUnsafeMutableBytes { recv(client, $0.baseAddress! + done, count - done, 0) }
                if got <= 0 { return nil }
                done += got
            }
            return bytes
        }
        func int32(_ bytes: ArraySlice<UInt8>) -> Int {
            bytes.reduce(0) { $0 << 8 | Int($1) }
        }
        func message(_ type: Character, _ body: [UInt8] = []) -> [UInt8] {
            let length = UInt32(body.count + 4)
            return [UInt8(type.asciiValue!)] + withUnsafeBytes(of: length.bigEndian, Array.init) + body
        }
        func write(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { send(client, $0.baseAddress, $0.count, 0) } }

        // The startup packet: length, then a protocol code; a cancel request is only read.
        guard let head = read(4), let rest = read(int32(head[0...]) - 4) else { return }
        if int32(rest[0..<4]) == 80_877_102 { return }
        write(
            message("R", [0, 0, 0, 0]) + message("K", [0, 0, 0, 1, 0, 0, 0, 2]) + message("Z", [UInt8(ascii: "I")]))
        var answered = 0
        var pending: [UInt8] = []
        while keepsReading || answered < answering, let header = read(5) {
            guard let body = read(int32(header[1...]) - 4) else { return }
            _ = body
            switch Character(UnicodeScalar(header[0])) {
            case "X": return
            case "P": pending += message("1")
            case "B": pending += message("2")
            case "D": pending += message("n")
            case "E": pending += message("C", Array("SET".utf8) + [0])
            case "Q", "S":
                if header[0] == UInt8(ascii: "Q") { pending += message("C", Array("SET".utf8) + [0]) }
                pending += message("Z", [UInt8(ascii: "I")])
                if answered < answering { write(pending) }
                answered += 1
                pending = []
            default: break
            }
        }
        // Not reading any more: hold the connection open (unread) until it is time to hang up.
        if !keepsReading { Thread.sleep(forTimeInterval: Double(seconds) + Double(attoseconds) / 1e18) }
    }
}
