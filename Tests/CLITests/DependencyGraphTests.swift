import Foundation
import XCTest

/// docs/DEVELOPMENT.md draws the module graph as Package.swift declares it.
final class DependencyGraphTests: XCTestCase {
    private static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    private func read(_ path: String) throws -> String {
        try String(contentsOf: Self.root.appendingPathComponent(path), encoding: .utf8)
    }

    private func quoted(_ text: Substring) -> [String] {
        text.components(separatedBy: "\"").enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
    }

    /// Target → the targets of this package it depends on (products of other packages left out).
    private func declared() throws -> [String: Set<String>] {
        // Line breaks after an opening parenthesis or bracket are the formatter's, not the graph's.
        let manifest = try read("Package.swift").replacingOccurrences(
            of: #"([(\[])\s+"#, with: "$1", options: .regularExpression)
        var graph: [String: Set<String>] = [:]
        var rest = manifest[...]
        while let start = rest.range(of: "arget(name: \"") {
            let nameEnd = try XCTUnwrap(rest[start.upperBound...].firstIndex(of: "\""))
            let name = String(rest[start.upperBound..<nameEnd])
            let isTest = rest[..<start.lowerBound].hasSuffix(".testT")
            guard let open = rest[nameEnd...].range(of: "dependencies: ["),
                rest[nameEnd..<open.lowerBound].contains(")") == false
            else {
                rest = rest[nameEnd...]
                continue
            }
            var depth = 1
            var index = open.upperBound
            while depth > 0 {
                if rest[index] == "[" { depth += 1 }
                if rest[index] == "]" { depth -= 1 }
                index = rest.index(after: index)
            }
            var list = String(rest[open.upperBound..<index])
            while let product = list.range(of: #"\.product\([^)]*\)"#, options: .regularExpression) {
                list.removeSubrange(product)
            }
            if !isTest { graph[name] = Set(quoted(list[...])) }
            rest = rest[index...]
        }
        return graph
    }

    /// The `X → A, B (external…)` lines of DEVELOPMENT.md's first code block.
    private func documented() throws -> [String: Set<String>] {
        let text = try read("docs/DEVELOPMENT.md")
        let start = try XCTUnwrap(text.range(of: "```\n")).upperBound
        let end = try XCTUnwrap(text.range(of: "```", range: start..<text.endIndex)).lowerBound
        var graph: [String: Set<String>] = [:]
        for line in text[start..<end].split(separator: "\n") {
            let sides = line.components(separatedBy: "→")
            guard sides.count == 2 else { continue }
            let local = sides[1].split(separator: "(").first ?? ""
            graph[sides[0].trimmingCharacters(in: .whitespaces)] = Set(
                local.split(separator: ",")
                    .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }
        return graph
    }

    func testTheDocumentedGraphIsPackageSwifts() throws {
        let declared = try declared()
        XCTAssertGreaterThanOrEqual(declared.count, 9, "the manifest's targets were found: \(declared.keys.sorted())")
        XCTAssertEqual(declared["FileSystem"], ["ObjectStore", "Locking", "Records"])
        let documented = try documented()
        for (target, dependencies) in declared where !dependencies.isEmpty {
            XCTAssertEqual(documented[target], dependencies, "docs/DEVELOPMENT.md, \(target) →")
        }
        XCTAssertEqual(Set(documented.keys).subtracting(declared.keys).sorted(), [], "documented, not declared")
    }
}
