import Foundation
import Records
import TestSupport
import XCTest

/// The behaviour every record backend must show, run the same way on each. `makeBackend(name)` gives a client of
/// the backend whose keys are separate from every other name's (its own prefix or namespace).
struct RecordsSuite {
    /// Whether the backend's conditional writes hold when clients race (false for moto: see S3RecordsTests).
    /// Where they do not, the "racing" writers of a check take turns, so the check still asserts everything else.
    var racesAreAtomic = true
    var makeBackend: (String) throws -> any RecordBackend

    /// Runs `body(0..<count)` on threads at once, or one after another where races are not atomic.
    private func race(_ count: Int, _ body: @Sendable (Int) -> Void) {
        if racesAreAtomic {
            DispatchQueue.concurrentPerform(iterations: count, execute: body)
        } else {
            for worker in 0..<count { body(worker) }
        }
    }

    func stores(_ check: String, ttl: Double? = 86_400, clock: TestClock? = nil) throws -> RecordStores {
        let backend = try makeBackend("\(check)-\(UUID().uuidString.prefix(8))/")
        guard let clock else { return RecordStores(backend: backend, ttl: ttl) }
        return RecordStores(backend: backend, ttl: ttl, clock: clock.read)
    }

    /// Create, get, update, end, list; the JSON is seed 001's shape with `schema_version` and UTC times.
    func sessionLifecycle() throws {
        let stores = try stores("sessions")
        let created = try stores.sessions.create(id: "s/1 x", userID: "alice", metadata: ["host": "h1", "n": 3])
        XCTAssertThrowsError(try stores.sessions.create(id: "s/1 x", userID: "bob")) {
            XCTAssertTrue("\($0)".contains("exists"))
        }
        XCTAssertEqual(try stores.sessions.get("s/1 x"), created)
        XCTAssertNil(try stores.sessions.get("nobody"))

        XCTAssertTrue(
            try stores.sessions.update(
                "s/1 x", metadata: ["mode": "ro"], incrementRequests: 2,
                addProcessingTime: 0.25, markErrors: 1))
        XCTAssertFalse(try stores.sessions.update("nobody", incrementRequests: 1))
        let updated = try XCTUnwrap(try stores.sessions.get("s/1 x"))
        XCTAssertEqual(
            updated.metrics, SessionRecord.Metrics(requestCount: 2, totalProcessingTime: 0.25, errorCount: 1))
        XCTAssertEqual(updated.metadata, ["host": "h1", "n": 3, "mode": "ro"])
        XCTAssertGreaterThanOrEqual(updated.updatedAt, created.updatedAt)

        let raw = try XCTUnwrap(try stores.backend.read("sessions/s%2F1%20x.json")).data
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: raw) as? [String: Any])
        XCTAssertEqual(json["schema_version"] as? Int, 1)
        XCTAssertEqual(json["session_id"] as? String, "s/1 x")
        XCTAssertEqual(json["status"] as? String, "active")
        XCTAssertEqual((json["metrics"] as? [String: Any])?["request_count"] as? Int, 2)
        let createdAt = try XCTUnwrap(json["created_at"] as? String)
        XCTAssertTrue(createdAt.hasSuffix("Z") && createdAt.count == 24, createdAt)

        try stores.sessions.create(id: "second", userID: "bob")
        XCTAssertTrue(try stores.sessions.end("s/1 x", status: "unmounted"))
        let ended = try XCTUnwrap(try stores.sessions.get("s/1 x"))
        XCTAssertEqual(ended.status, "unmounted")
        XCTAssertNotNil(ended.endedAt)
        XCTAssertEqual(try stores.sessions.list().map(\.sessionID), ["s/1 x", "second"])
    }

    /// 8 threads × 100 increments of one session's request count: compare-and-swap loses none.
    func concurrentIncrements(threads: Int = 8, each: Int = 100) throws {
        let stores = try stores("concurrent")
        try stores.sessions.create(id: "busy", userID: "u")
        let failures = Locked<[String]>([])
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            for _ in 0..<each {
                do {
                    try stores.sessions.update("busy", incrementRequests: 1, addProcessingTime: 0.5)
                } catch {
                    failures.update { $0.append("\(error)") }
                }
            }
        }
        XCTAssertEqual(failures.value, [])
        let record = try XCTUnwrap(try stores.sessions.get("busy"))
        XCTAssertEqual(record.metrics.requestCount, threads * each)
        XCTAssertEqual(record.metrics.totalProcessingTime, Double(threads * each) * 0.5)
    }

    /// Idle sessions go, with their conversation and task context; fresh ones stay.
    func cleanupExpiredSessions() throws {
        let stores = try stores("cleanup")
        try stores.sessions.create(id: "old", userID: "u")
        try stores.conversations.append(session: "old", role: "user", content: "hi")
        try stores.tasks.put(session: "old", context: ["step": 1])
        XCTAssertEqual(try stores.sessions.cleanupExpired(maxIdleHours: 1), [])
        XCTAssertEqual(
            try stores.sessions.cleanupExpired(maxIdleHours: 1, now: Date().addingTimeInterval(7200)), ["old"])
        XCTAssertNil(try stores.sessions.get("old"))
        XCTAssertEqual(try stores.conversations.history(session: "old"), [])
        XCTAssertNil(try stores.tasks.get(session: "old"))
    }

    /// Messages in order; history keeps the last `limit`, oldest first; racing appenders all land.
    func conversations() throws {
        let stores = try stores("conversations")
        for n in 0..<5 {
            try stores.conversations.append(session: "c", role: n % 2 == 0 ? "user" : "assistant", content: "m\(n)")
        }
        let last3 = try stores.conversations.history(session: "c", limit: 3)
        XCTAssertEqual(last3.map(\.content), ["m2", "m3", "m4"])
        XCTAssertEqual(last3.map(\.sequence), [2, 3, 4])
        XCTAssertEqual(last3.first?.role, "user")

        race(4) { worker in
            for n in 0..<5 {
                _ = try? stores.conversations.append(session: "race", role: "user", content: "w\(worker)-\(n)")
            }
        }
        let all = try stores.conversations.history(session: "race", limit: 100)
        XCTAssertEqual(all.map(\.sequence), Array(0..<20))
        XCTAssertEqual(Set(all.map(\.content)).count, 20)
    }

    /// Latest, by id, newest first with a limit, and intermediate writes.
    func checkpoints() throws {
        let clock = TestClock(frozen: true)
        let stores = try stores("checkpoints", clock: clock)
        for n in 1...3 {
            try stores.checkpoints.store(
                thread: "t1", id: "cp\(n)", data: ["step": .integer(Int64(n))], metadata: ["n": .integer(Int64(n))])
            clock.advance(by: 0.005)  // newest first is by created_at (ms)
        }
        try stores.checkpoints.store(thread: "t2", id: "other", data: nil)
        XCTAssertEqual(try stores.checkpoints.get(thread: "t1")?.checkpointID, "cp3")
        XCTAssertEqual(try stores.checkpoints.get(thread: "t1", id: "cp1")?.data, ["step": 1])
        XCTAssertNil(try stores.checkpoints.get(thread: "t1", id: "cp9"))
        XCTAssertEqual(try stores.checkpoints.list(thread: "t1", limit: 2).map(\.checkpointID), ["cp3", "cp2"])

        try stores.checkpoints.putWrites(
            thread: "t1", checkpoint: "cp3", task: "a", writes: [("ch1", 1), ("ch2", "x")])
        try stores.checkpoints.putWrites(thread: "t1", checkpoint: "cp3", task: "b", writes: [("ch1", 2)])
        let writes = try stores.checkpoints.getWrites(thread: "t1", checkpoint: "cp3")
        XCTAssertEqual(writes.map(\.taskID), ["a", "a", "b"])
        XCTAssertEqual(writes.map(\.value), [1, "x", 2])
        XCTAssertEqual(try stores.checkpoints.getWrites(thread: "t1", checkpoint: "cp1"), [])
        // The writes object does not count as a checkpoint.
        XCTAssertEqual(try stores.checkpoints.list(thread: "t1", limit: 10).count, 3)
        XCTAssertEqual(try stores.checkpoints.threads(), ["t1", "t2"])
    }

    func taskContexts() throws {
        let stores = try stores("tasks")
        XCTAssertNil(try stores.tasks.get(session: "s"))
        try stores.tasks.put(session: "s", context: ["plan": ["a", "b"], "done": false])
        try stores.tasks.put(session: "s", context: ["plan": ["a", "b"], "done": true])
        XCTAssertEqual(try stores.tasks.get(session: "s"), ["plan": ["a", "b"], "done": true])
    }

    /// Save, parts added from many threads, list active, stale cleanup, delete.
    func uploadStates() throws {
        let stores = try stores("uploads")
        try stores.uploads.save(UploadStateRecord(id: "job1", key: "big.bin", uploadID: "U1", stagedPath: "/tmp/x"))
        race(10) { n in
            _ = try? stores.uploads.addPart("job1", UploadStateRecord.Part(partNumber: n + 1, etag: "\"e\(n + 1)\""))
        }
        let state = try XCTUnwrap(try stores.uploads.get("job1"))
        XCTAssertEqual(state.parts.map(\.partNumber), Array(1...10))
        XCTAssertEqual(state.parts.first?.etag, "\"e1\"")
        XCTAssertEqual(state.stagedPath, "/tmp/x")
        try stores.uploads.save(UploadStateRecord(id: "job2", key: "other.bin", uploadID: "U2"))
        XCTAssertEqual(try stores.uploads.listActive().map(\.id), ["job1", "job2"])
        XCTAssertEqual(try stores.uploads.cleanupStale(maxAgeHours: 1), [])
        try stores.uploads.delete("job2")
        let stale = try stores.uploads.cleanupStale(maxAgeHours: 1, now: Date().addingTimeInterval(7200))
        XCTAssertEqual(stale.map(\.uploadID), ["U1"])
        XCTAssertEqual(try stores.uploads.listActive(), [])
    }

    /// Seed 004's buffers: indexes, get all/one, length, delete, list, TTL.
    func threadBuffers() throws {
        let stores = try stores("buffers")
        XCTAssertEqual(try stores.buffers.append(thread: "t", data: "a"), 0)
        XCTAssertEqual(try stores.buffers.append(thread: "t", data: ["b": 1]), 1)
        XCTAssertEqual(try stores.buffers.append(thread: "u", data: "c"), 0)
        XCTAssertEqual(try stores.buffers.all(thread: "t").map(\.data), ["a", ["b": 1]])
        XCTAssertEqual(try stores.buffers.slot(thread: "t", index: 1)?.data, ["b": 1])
        XCTAssertNil(try stores.buffers.slot(thread: "t", index: 5))
        XCTAssertEqual(try stores.buffers.length(thread: "t"), 2)
        XCTAssertEqual(try stores.buffers.threads(), ["t", "u"])
        XCTAssertTrue(try stores.buffers.delete(thread: "u"))
        XCTAssertFalse(try stores.buffers.delete(thread: "u"))
        XCTAssertEqual(try stores.buffers.threads(), ["t"])

        let clock = TestClock(frozen: true)
        let short = RecordStores(backend: stores.backend, ttl: 30, clock: clock.read)
        try short.buffers.append(thread: "brief", data: 1)
        XCTAssertEqual(try short.buffers.length(thread: "brief"), 1)
        clock.advance(by: 29)
        XCTAssertEqual(try short.buffers.length(thread: "brief"), 1, "alive until its TTL")
        XCTAssertEqual(try short.buffers.purgeExpired(), 0)
        clock.advance(by: 2)
        XCTAssertEqual(try short.buffers.length(thread: "brief"), 0)
        XCTAssertNil(try short.buffers.slot(thread: "brief", index: 0))
        XCTAssertEqual(try short.buffers.purgeExpired(), 1)
        XCTAssertEqual(try stores.buffers.length(thread: "t"), 2, "unexpired slots stay")
    }

    /// Seed 004's registry: both directions, replacement, delete, list, TTL.
    func registry() throws {
        let stores = try stores("registry")
        try stores.registry.set(chain: "console.router", uuid: "u1")
        try stores.registry.set(chain: "console.greeter", uuid: "u2")
        XCTAssertEqual(try stores.registry.uuid(for: "console.router"), "u1")
        XCTAssertEqual(try stores.registry.chain(for: "u2"), "console.greeter")
        try stores.registry.set(chain: "console.router", uuid: "u3")
        XCTAssertEqual(try stores.registry.uuid(for: "console.router"), "u3")
        XCTAssertNil(try stores.registry.chain(for: "u1"))
        XCTAssertEqual(try stores.registry.all(), ["u2": "console.greeter", "u3": "console.router"])
        XCTAssertTrue(try stores.registry.delete(uuid: "u2"))
        XCTAssertFalse(try stores.registry.delete(uuid: "u2"))
        XCTAssertNil(try stores.registry.uuid(for: "console.greeter"))

        let clock = TestClock(frozen: true)
        let short = RecordStores(backend: stores.backend, ttl: 30, clock: clock.read)
        try short.registry.set(chain: "brief", uuid: "u9")
        XCTAssertEqual(try short.registry.chain(for: "u9"), "brief")
        clock.advance(by: 29)
        XCTAssertEqual(try short.registry.uuid(for: "brief"), "u9", "alive until its TTL")
        XCTAssertEqual(try short.registry.purgeExpired(), 0)
        clock.advance(by: 2)
        XCTAssertNil(try short.registry.chain(for: "u9"))
        XCTAssertNil(try short.registry.uuid(for: "brief"))
        XCTAssertEqual(try short.registry.purgeExpired(), 1)
        XCTAssertEqual(try stores.registry.all(), ["u3": "console.router"])
    }

    /// Append, read a range, tail, count and aggregate by type, streams, racing appenders, follow.
    func events() throws {
        let name = "events-\(UUID().uuidString.prefix(8))/"
        let stores = RecordStores(backend: try makeBackend(name))
        for (n, type) in ["mounted", "upload_failed", "lock_lost", "upload_failed", "unmounted"].enumerated() {
            let event = try stores.events.append(stream: "mount a/1", type: type, data: ["n": .integer(Int64(n))])
            XCTAssertEqual(event.sequence, n)
        }
        try stores.events.append(stream: "other", type: "mounted")
        XCTAssertEqual(
            try stores.events.read(stream: "mount a/1", from: 1, limit: 2).map(\.type), ["upload_failed", "lock_lost"])
        XCTAssertEqual(try stores.events.read(stream: "mount a/1", from: 3).map(\.sequence), [3, 4])
        XCTAssertEqual(
            try stores.events.tail(stream: "mount a/1", count: 2).map(\.type), ["upload_failed", "unmounted"])
        XCTAssertEqual(try stores.events.count(stream: "mount a/1"), 5)
        XCTAssertEqual(try stores.events.count(stream: "mount a/1", type: "upload_failed"), 2)
        XCTAssertEqual(
            try stores.events.countByType(stream: "mount a/1"),
            ["mounted": 1, "upload_failed": 2, "lock_lost": 1, "unmounted": 1])
        XCTAssertEqual(try stores.events.streams(), ["mount a/1", "other"])
        let raw = try XCTUnwrap(try stores.backend.read("events/mount%20a%2F1/0000000001.json")).data
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: raw) as? [String: Any])
        XCTAssertEqual(json["type"] as? String, "upload_failed")
        XCTAssertEqual(json["stream"] as? String, "mount a/1")
        XCTAssertEqual(json["schema_version"] as? Int, 1)

        // Racing appenders on separate clients (each with its own idea of the next number) all land, once each.
        let logs = try (0..<4).map { _ in RecordStores(backend: try makeBackend(name)).events }
        race(4) { worker in
            for n in 0..<10 {
                _ = try? logs[worker].append(stream: "race", type: "w", data: ["who": .string("\(worker)-\(n)")])
            }
        }
        let raced = try stores.events.read(stream: "race")
        XCTAssertEqual(raced.map(\.sequence), Array(0..<40))
        XCTAssertEqual(
            Set(
                raced.compactMap { event -> String? in
                    if case .string(let who)? = event.data["who"] { return who } else { return nil }
                }
            ).count, 40)

        // Follow sees events appended after it started, in order, and stops when told.
        let seen = Locked<[Int]>([])
        let following = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        let deadline = Date().addingTimeInterval(30)
        Thread.detachNewThread {
            following.signal()
            _ = try? stores.events.follow(stream: "live", interval: 0.05, shouldStop: { Date() > deadline }) { event in
                seen.update { $0.append(event.sequence) }
                return seen.value.count < 3
            }
            done.signal()
        }
        following.wait()
        for _ in 0..<3 { try stores.events.append(stream: "live", type: "tick") }
        XCTAssertEqual(done.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(seen.value, [0, 1, 2])
    }

    /// Every kind of record copied to another backend and back, byte for byte; a second run copies nothing.
    func migrationRoundTrip(via other: any RecordBackend) throws {
        let stores = try stores("migrate")
        try stores.sessions.create(id: "m1", userID: "u", metadata: ["k": "v"])
        try stores.conversations.append(session: "m1", role: "user", content: "hello")
        try stores.checkpoints.store(thread: "t", id: "c", data: [1, 2])
        try stores.checkpoints.putWrites(thread: "t", checkpoint: "c", task: "x", writes: [("ch", nil)])
        try stores.tasks.put(session: "m1", context: "ctx")
        try stores.uploads.save(UploadStateRecord(id: "j", key: "k", uploadID: "U"))
        try stores.buffers.append(thread: "b", data: true)
        try stores.registry.set(chain: "a.b", uuid: "r1")
        try stores.events.append(stream: "m1", type: "mounted", data: ["host": "h"])
        let original = try snapshot(stores.backend)
        XCTAssertEqual(original.count, 10)

        let out = try RecordMigration(from: stores.backend, to: other).run()
        XCTAssertEqual(out.copied, 10)
        XCTAssertEqual(try RecordMigration(from: stores.backend, to: other).run().unchanged, 10, "idempotent")
        let back = try makeBackend("migrate-back-\(UUID().uuidString.prefix(8))/")
        try RecordMigration(from: other, to: back).run()
        XCTAssertEqual(try snapshot(back), original)
        XCTAssertEqual(try RecordStores(backend: back).sessions.get("m1")?.metadata, ["k": "v"])
    }

    func snapshot(_ backend: any RecordBackend) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for folder in RecordKey.folders {
            for key in try backend.keys(under: folder) { out[key] = try backend.read(key)?.data }
        }
        return out
    }
}
