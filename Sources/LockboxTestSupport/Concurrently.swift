import LockboxCore

/// Runs `body` `count` times at once (each with its index) and returns, for each
/// run in completion order, nil when it succeeded or the code of the
/// `LockboxError` it threw (`operationFailed` for any other error).
public func concurrentOutcomes(
    _ count: Int, _ body: @escaping @Sendable (Int) async throws -> Void
) async -> [LockboxError.Code?] {
    await withTaskGroup(of: LockboxError.Code?.self) { group in
        for index in 0..<count {
            group.addTask {
                do {
                    try await body(index)
                    return nil
                } catch let error as LockboxError {
                    return error.code
                } catch {
                    return .operationFailed
                }
            }
        }
        var codes: [LockboxError.Code?] = []
        for await code in group { codes.append(code) }
        return codes
    }
}
