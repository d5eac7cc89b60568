import CHiredis

/// Parses raw RESP bytes with hiredis' reader, as a connection does with what the server sends: for the fuzz
/// target (Fuzz/), which feeds it arbitrary bytes.
public enum RedisReplyReader {
    /// The number of complete replies in `bytes`, or -1 for a protocol error.
    public static func countReplies(_ bytes: [UInt8]) -> Int {
        guard let reader = redisReaderCreate() else { return -1 }
        defer { redisReaderFree(reader) }
        let fed = bytes.withUnsafeBufferPointer { buffer in
            buffer.baseAddress.map { base in
                base.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                    redisReaderFeed(reader, $0, buffer.count)
                }
            } ?? REDIS_OK
        }
        guard fed == REDIS_OK else { return -1 }
        var count = 0
        while true {
            var reply: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &reply) == REDIS_OK else { return -1 }
            guard let reply else { return count }
            _ = RedisConnection.convert(reply.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(reply)
            count += 1
        }
    }
}
