//! Plain-text tables (Markdown pipe tables with aligned columns: readable in a terminal and
//! pasteable into a README) and the number formats the report uses.

use crate::stats::Summary;

/// A table with a header row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are shown empty, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    /// The rows added so far.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The table as text: a header, a separator, one line per row, columns padded to their
    /// widest cell (first column left-aligned, the others right-aligned).
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|column| {
                std::iter::once(&self.headers)
                    .chain(&self.rows)
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(3)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut out = String::from("|");
            for (column, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                let pad = width.saturating_sub(cell.chars().count());
                out.push(' ');
                if column == 0 {
                    out.push_str(cell);
                    out.extend(std::iter::repeat_n(' ', pad));
                } else {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(cell);
                }
                out.push_str(" |");
            }
            out.push('\n');
            out
        };
        let mut out = line(&self.headers);
        out.push('|');
        for (column, width) in widths.iter().enumerate() {
            out.push(' ');
            if column == 0 {
                out.extend(std::iter::repeat_n('-', *width));
            } else {
                out.extend(std::iter::repeat_n('-', width.saturating_sub(1)));
                out.push(':');
            }
            out.push_str(" |");
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// `median (min..max)` with no decimals: `5123 (5010..5400)`.
pub fn summary_cell(summary: Option<Summary>) -> String {
    match summary {
        Some(s) => format!("{:.0} ({:.0}..{:.0})", s.median, s.min, s.max),
        None => "-".into(),
    }
}

/// A ratio with two decimals and an `x`: `1.02x`.
pub fn ratio_cell(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!("{r:.2}x"),
        None => "-".into(),
    }
}

/// Milliseconds with one decimal from ns: `12.3 ms`.
pub fn ms_cell(ns: Option<f64>) -> String {
    match ns {
        Some(ns) => format!("{:.1} ms", ns / 1e6),
        None => "-".into(),
    }
}

/// KiB as MiB with one decimal: `23.4 MiB`.
pub fn mib_cell(kib: Option<f64>) -> String {
    match kib {
        Some(kib) => format!("{:.1} MiB", kib / 1024.0),
        None => "-".into(),
    }
}

/// A rate with thousands grouped: `1,234,567/s`.
pub fn rate_cell(per_second: Option<f64>) -> String {
    match per_second {
        Some(rate) if rate.is_finite() && rate >= 0.0 => {
            format!("{}/s", group_thousands(rate.round() as u64))
        }
        _ => "-".into(),
    }
}

/// `1234567` as `1,234,567`.
pub fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let mut table = Table::new(["runner", "ns"]);
        table.row(["raw", "12345"]);
        table.row(["vmkit (binary)", "7"]);
        let text = table.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "| runner         |    ns |");
        assert_eq!(lines[1], "| -------------- | ----: |");
        assert_eq!(lines[2], "| raw            | 12345 |");
        assert_eq!(lines[3], "| vmkit (binary) |     7 |");
        // Every line has the same width.
        assert!(lines
            .iter()
            .all(|l| l.chars().count() == lines[0].chars().count()));
    }

    #[test]
    fn short_rows_are_filled_and_long_rows_cut() {
        let mut table = Table::new(["a", "b", "c"]);
        table.row(["x"]);
        table.row(["1", "2", "3", "4"]);
        assert_eq!(table.rows()[0], vec!["x", "", ""]);
        assert_eq!(table.rows()[1], vec!["1", "2", "3"]);
        assert!(!table.render().contains('4'));
    }

    #[test]
    fn number_formats() {
        let s = Summary {
            median: 9876.4,
            min: 9500.2,
            max: 10500.7,
            count: 5,
        };
        assert_eq!(summary_cell(Some(s)), "9876 (9500..10501)");
        assert_eq!(summary_cell(None), "-");
        assert_eq!(ratio_cell(Some(1.0249)), "1.02x");
        assert_eq!(ratio_cell(None), "-");
        assert_eq!(ms_cell(Some(23_450_000.0)), "23.4 ms");
        assert_eq!(mib_cell(Some(3.5 * 1024.0)), "3.5 MiB");
        assert_eq!(rate_cell(Some(98_765.4)), "98,765/s");
        assert_eq!(rate_cell(Some(f64::INFINITY)), "-");
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn grouping_keeps_the_digits(value in any::<u64>()) {
            let grouped = group_thousands(value);
            prop_assert_eq!(grouped.replace(',', ""), value.to_string());
            prop_assert!(grouped.split(',').skip(1).all(|g| g.len() == 3));
        }
    }
}
