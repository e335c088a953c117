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

/// How long ago an RFC 3339 time was, in Docker's words ("Less than a
/// second", "About a minute", "3 hours", "2 weeks"); empty when absent or
/// unparsable.
pub fn since(rfc3339: Option<&str>) -> String {
    let Some(t) = rfc3339.and_then(|s| {
        humantime::parse_rfc3339_weak(s.trim_end_matches('Z').split('.').next()?).ok()
    }) else {
        return String::new();
    };
    let secs = std::time::SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    human_duration(secs)
}

/// Docker's human duration (go-units' HumanDuration) of `secs` seconds.
pub fn human_duration(secs: u64) -> String {
    let (minutes, hours) = (secs / 60, secs / 3600);
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", hours / 24 / 365),
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

    #[test]
    fn human_durations_read_as_dockers() {
        for (secs, text) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3600, "About an hour"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (14 * 86_400, "2 weeks"),
            (60 * 86_400, "2 months"),
            (730 * 86_400, "2 years"),
        ] {
            assert_eq!(super::human_duration(secs), text, "{secs} s");
        }
    }
}
