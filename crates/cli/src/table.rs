//! Docker-style tables: each column as wide as its widest cell, columns apart by at
//! least three spaces (Docker's `tabwriter` settings: min width 10, padding 3).

use std::io::{self, Write};

/// Rows of cells under a header, written aligned.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header row.
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Append a row (tabs and newlines in cells become spaces).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| c.replace(['\t', '\n'], " "))
                .collect(),
        );
    }

    /// Write the header and rows to `out`.
    pub fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut tw = tabwriter::TabWriter::new(out).minwidth(10).padding(3);
        for row in &self.rows {
            writeln!(tw, "{}", row.join("\t"))?;
        }
        tw.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_the_widest_cell() {
        let mut t = Table::new(&["CONTAINER ID", "STATUS", "NAMES"]);
        t.row(vec![
            "abc".into(),
            "Less than a second ago".into(),
            "x".into(),
        ]);
        let mut out = Vec::new();
        t.write(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "CONTAINER ID   STATUS                   NAMES");
        assert_eq!(lines[1], "abc            Less than a second ago   x");
    }
}
