import CSOPCore

/// `csop bench --html FILE`: the table as one self-contained HTML page (no scripts, no outside
/// assets), each row with a bar chart of itself against its same-run baseline and, where the
/// README has one, its peer's published figure.
enum BenchReport {
    static func html(_ rows: [BenchRow], title: String) -> String {
        var body = ""
        var suite = ""
        for row in rows {
            if row.suite != suite {
                if !suite.isEmpty { body += "</tbody></table>\n" }
                suite = row.suite
                body += "<h2>\(escape(suite))</h2>\n<table><thead><tr><th>row</th><th>p50 / p95 / p99</th><th>throughput</th>"
                body += "<th>against</th><th>targets</th><th class=\"chart\">chart</th></tr></thead><tbody>\n"
            }
            body += line(row)
        }
        if !suite.isEmpty { body += "</tbody></table>\n" }
        let missed = rows.flatMap { row in row.targets.compactMap { $0.check(row) }.filter { !$0.met } }.count
        let summary = missed == 0 ? "every target met" : "\(missed) target\(missed == 1 ? "" : "s") missed"
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>\(escape(title))</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2330; }
            table { border-collapse: collapse; width: 100%; margin-bottom: 24px; }
            th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e3e6ed; vertical-align: top; }
            th { color: #6b7385; font-weight: 500; }
            td.chart { width: 360px; }
            .met { color: #1e7b34; } .missed { color: #b3261e; font-weight: 600; }
            .note { color: #6b7385; font-size: 12px; }
            </style></head><body>
            <h1>\(escape(title))</h1>
            <p>\(rows.count) rows; \(summary). Bars: shorter is better for latency (p50), longer for throughput; the baseline is measured in the same run, the peer is a published figure.</p>
            \(body)</body></html>

            """
    }

    private static func line(_ row: BenchRow) -> String {
        let us = BenchFormat.microseconds
        var cells: [String] = []
        var name = escape(row.name)
        if let note = row.note { name += "<div class=\"note\">\(escape(note))</div>" }
        cells.append(name)
        cells.append(row.stats.map { "\(us($0.p50)) / \(us($0.p95)) / \(us($0.p99)) µs" } ?? row.value.map { "\(BenchFormat.number($0.amount)) \(escape($0.unit))" } ?? "")
        cells.append(row.throughput.map { "\(BenchFormat.grouped($0))/s" } ?? "")
        var against = row.baseline.map { escape($0) } ?? ""
        if let ratio = row.ratio { against += " (\(BenchFormat.fixed(ratio, 2))×)" }
        if let comparison = PeerFigure.forRow(row)?.comparison(of: row) { against += "<br>\(escape(comparison))" }
        cells.append(against)
        cells.append(
            row.targets.compactMap { target in
                target.check(row).map { met, measured in
                    met ? "<span class=\"met\">\(escape(target.text)): met</span>" : "<span class=\"missed\">\(escape(target.text)): missed (\(escape(measured)))</span>"
                }
            }.joined(separator: "<br>"))
        return "<tr>" + cells.map { "<td>\($0)</td>" }.joined() + "<td class=\"chart\">\(chart(row))</td></tr>\n"
    }

    /// Horizontal bars of the row, its baseline and its peer on one scale: latency p50 when
    /// the row has it, else throughput, else its value.
    static func chart(_ row: BenchRow) -> String {
        var bars: [(label: String, amount: Double, color: String)] = []
        let peer = PeerFigure.forRow(row)
        let unit: String
        if let stats = row.stats {
            unit = "µs p50"
            bars.append(("this row", stats.p50, "#3366cc"))
            if let base = row.baselineStats { bars.append((row.baseline ?? "baseline", base.p50, "#9aa3b5")) }
            if let p50 = peer?.p50 { bars.append((peer!.peer, p50, "#ff9900")) }
        } else if let throughput = row.throughput {
            unit = "/s"
            bars.append(("this row", throughput, "#3366cc"))
            if let base = row.baselineThroughput { bars.append((row.baseline ?? "baseline", base, "#9aa3b5")) }
            if let peerThroughput = peer?.throughput { bars.append((peer!.peer, peerThroughput, "#ff9900")) }
        } else if let value = row.value {
            unit = value.unit
            bars.append(("this row", value.amount, "#3366cc"))
            if let base = row.baselineValue { bars.append((row.baseline ?? "baseline", base.amount, "#9aa3b5")) }
        } else {
            return ""
        }
        let largest = max(bars.map(\.amount).max() ?? 1, 1e-9)
        let width = 360.0, barHeight = 14.0, gap = 18.0
        var svg = "<svg width=\"\(Int(width))\" height=\"\(Int(Double(bars.count) * (barHeight + gap)))\" role=\"img\">"
        for (index, bar) in bars.enumerated() {
            let y = Double(index) * (barHeight + gap)
            let length = max(1, (width - 4) * bar.amount / largest)
            let amount = unit == "µs p50" ? BenchFormat.microseconds(bar.amount) : BenchFormat.number(bar.amount)
            let label = bar.label.count > 44 ? String(bar.label.prefix(43)) + "…" : bar.label
            svg += "<rect x=\"0\" y=\"\(y + 4)\" width=\"\(BenchFormat.fixed(length, 1))\" height=\"\(barHeight - 4)\" fill=\"\(bar.color)\"/>"
            svg += "<text x=\"0\" y=\"\(y + barHeight + 10)\" font-size=\"11\" fill=\"#1d2330\">\(escape(label)): \(amount) \(escape(unit))</text>"
        }
        return svg + "</svg>"
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }
}
