import Foundation
import XCTest

@testable import BucketfsCLI

/// `--help`, docs/CONFIGURATION.md and the option declarations say the same: every `-o` key the parser takes is
/// in the catalog (`--help` is made from it) and in the doc's tables, and every flag `mount --help` lists is in
/// the doc's tables too. A key added to one place only fails here, naming it.
final class MountOptionCatalogTests: XCTestCase {
    private static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    private var catalog: Set<String> { Set(MountOptionCatalog.all.map(\.name)) }

    private func read(_ path: String) throws -> String {
        try String(contentsOf: Self.root.appendingPathComponent(path), encoding: .utf8)
    }

    /// The rows of the first Markdown table after `heading`, as cells.
    private func table(after heading: String, in text: String) throws -> [[String]] {
        let start = try XCTUnwrap(text.range(of: "\n" + heading + "\n"), "no section \(heading)").upperBound
        var rows: [[String]] = []
        for line in text[start...].split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("## ") { break }
            guard line.hasPrefix("|") else {
                if !rows.isEmpty { break }
                continue
            }
            rows.append(
                line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
                    .map { $0.trimmingCharacters(in: .whitespaces) })
        }
        return Array(rows.dropFirst(2))  // the header and the --- line
    }

    /// `ro`, `uid=N`, `log_level=L`… in a cell → their names.
    private func codeNames(_ cell: String) -> [String] {
        cell.components(separatedBy: "`").enumerated().filter { $0.offset % 2 == 1 }
            .map { String($0.element.split(separator: "=", maxSplits: 1).first ?? "") }
            .filter { !$0.isEmpty && $0.first != "-" }
    }

    /// Each `case "…"` label of the `-o` parser (`apply(mountOptions:)` and `setMountOption`).
    private func parserKeys() throws -> Set<String> {
        let source = try read("Sources/BucketfsCLI/Configuration.swift")
        var keys = Set<String>()
        for (from, to) in [
            ("func apply(mountOptions", "static let mountCommandOptions"),
            ("func setMountOption(", "// MARK: - Output"),
        ] {
            let start = try XCTUnwrap(source.range(of: from), from).upperBound
            let end = try XCTUnwrap(source.range(of: to, range: start..<source.endIndex), to).lowerBound
            for line in source[start..<end].split(separator: "\n") {
                let code = line.trimmingCharacters(in: .whitespaces)
                guard code.hasPrefix("case \""), let colon = code.firstIndex(of: ":") else { continue }
                let labels = code[code.index(code.startIndex, offsetBy: 5)..<colon]
                keys.formUnion(
                    labels.components(separatedBy: "\"").enumerated().filter { $0.offset % 2 == 1 }
                        .map(\.element))
            }
        }
        return keys
    }

    func testTheParserTakesExactlyTheCatalog() throws {
        let parsed = try parserKeys()
        XCTAssertGreaterThan(parsed.count, 20, "the parser's cases were found")
        XCTAssertEqual(parsed.subtracting(catalog).sorted(), [], "-o keys the catalog (and --help) leave out")
        XCTAssertEqual(catalog.subtracting(parsed).sorted(), [], "catalog keys the parser does not know")
        for option in MountOptionCatalog.all {
            var configuration = Configuration()
            XCTAssertNoThrow(try configuration.apply(mountOptions: option.example), option.example)
        }
        var configuration = Configuration()
        XCTAssertThrowsError(try configuration.apply(mountOptions: "no_such_option=1"))
    }

    func testTheDocumentListsExactlyTheCatalog() throws {
        let text = try read("docs/CONFIGURATION.md")
        var documented = Set<String>()
        for row in try table(after: "## Mount options", in: text) where row.count >= 3 {
            documented.formUnion(codeNames(row[2]))
        }
        for row in try table(after: "## Records and the control directory", in: text) where !row.isEmpty {
            documented.formUnion(codeNames(row[0]))
        }
        XCTAssertEqual(catalog.subtracting(documented).sorted(), [], "-o keys docs/CONFIGURATION.md leaves out")
        XCTAssertEqual(documented.subtracting(catalog).sorted(), [], "-o keys documented that do not exist")
    }

    func testHelpShowsTheCatalogAndTheDocumentEveryFlag() throws {
        let help = MountCommand.helpMessage(columns: 10_000)
        let flat = help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for option in MountOptionCatalog.all {
            XCTAssertTrue(flat.contains(option.usage), "mount --help does not show -o \(option.usage)")
        }
        let text = try read("docs/CONFIGURATION.md")
        var documented = Set<String>()
        for heading in ["## Mount options", "## S3", "## GCS"] {
            for row in try table(after: heading, in: text) {
                documented.formUnion(
                    row[0].components(separatedBy: "`").enumerated().filter { $0.offset % 2 == 1 }
                        .compactMap { $0.element.split(separator: " ").first.map(String.init) }
                        .filter { $0.hasPrefix("--") })
            }
        }
        // Option lines start with the flag: "  --uid <uid>  Owner…", "  -f, --foreground  Stay…".
        let flags = Set(
            help.split(separator: "\n").compactMap { line -> String? in
                var words = line.split(separator: " ")
                if words.first?.count == 3, words.first?.hasPrefix("-") == true, words.first?.last == "," {
                    words.removeFirst()
                }
                guard let first = words.first, first.hasPrefix("--") else { return nil }
                return String(first)
            }
        ).subtracting(["--help", "--version"])
        XCTAssertGreaterThan(flags.count, 15, "the help's flags were found")
        XCTAssertEqual(flags.subtracting(documented).sorted(), [], "mount flags docs/CONFIGURATION.md leaves out")
        XCTAssertEqual(documented.subtracting(flags).sorted(), [], "flags documented that mount does not take")
    }
}
