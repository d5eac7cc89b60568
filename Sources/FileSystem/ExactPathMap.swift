/// A dictionary by path, byte for byte (`ExactPath`), with the `Dictionary` calls the state's caches make: the
/// negative cache, the directories known listed, the size hints; and the versions a directory's rename made.
struct ExactPathMap<Value>: ExpressibleByDictionaryLiteral, Sequence {
    private var storage: [ExactPath: Value]

    init(dictionaryLiteral elements: (String, Value)...) {
        storage = Dictionary(elements.map { (ExactPath($0.0), $0.1) }, uniquingKeysWith: { $1 })
    }

    private init(storage: [ExactPath: Value]) { self.storage = storage }

    subscript(path: String) -> Value? {
        get { storage[ExactPath(path)] }
        set { storage[ExactPath(path)] = newValue }
    }

    @discardableResult
    mutating func removeValue(forKey path: String) -> Value? { storage.removeValue(forKey: ExactPath(path)) }

    var count: Int { storage.count }

    func filter(_ isIncluded: ((key: ExactPath, value: Value)) throws -> Bool) rethrows -> ExactPathMap {
        ExactPathMap(storage: try storage.filter(isIncluded))
    }

    /// Each path (as a `String`) with its value, in no particular order.
    func makeIterator() -> LazyMapSequence<[ExactPath: Value], (String, Value)>.Iterator {
        storage.lazy.map { ($0.key.string, $0.value) }.makeIterator()
    }
}
