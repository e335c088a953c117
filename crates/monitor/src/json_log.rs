//! The writer of container logs in Docker's json-file format: one JSON object
//! per line, `{"log":TEXT,"stream":"stdout"|"stderr","time":RFC3339}`, the
//! time with nanoseconds in UTC. Readers live in the engine.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// A line longer than this is written in pieces (as Docker's 16 KiB).
const MAX_LINE: usize = 16 * 1024;

/// Appends container output to a log file, splitting it into lines.
pub struct LogWriter {
    file: File,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Open `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<LogWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogWriter::from_file(file))
    }

    /// Append to an already open file (opened with `O_APPEND`).
    pub fn from_file(file: File) -> LogWriter {
        LogWriter {
            file,
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// Add output of stream 0 (stdout) or 1 (stderr); complete lines are written.
    pub fn write(&mut self, stream: usize, data: &[u8]) -> std::io::Result<()> {
        self.pending[stream].extend_from_slice(data);
        while let Some(pos) = self.pending[stream].iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending[stream].drain(..=pos).collect();
            self.emit(stream, &line)?;
        }
        if self.pending[stream].len() >= MAX_LINE {
            let line = std::mem::take(&mut self.pending[stream]);
            self.emit(stream, &line)?;
        }
        Ok(())
    }

    /// Write what is left of unterminated lines.
    pub fn flush(&mut self) -> std::io::Result<()> {
        for stream in 0..2 {
            if !self.pending[stream].is_empty() {
                let line = std::mem::take(&mut self.pending[stream]);
                self.emit(stream, &line)?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, stream: usize, line: &[u8]) -> std::io::Result<()> {
        let mut json = Vec::with_capacity(line.len() + 80);
        json.extend_from_slice(b"{\"log\":");
        json_string(&mut json, &String::from_utf8_lossy(line));
        json.extend_from_slice(if stream == 0 {
            b",\"stream\":\"stdout\",\"time\":\""
        } else {
            b",\"stream\":\"stderr\",\"time\":\""
        });
        json.extend_from_slice(rfc3339_nanos(SystemTime::now()).as_bytes());
        json.extend_from_slice(b"\"}\n");
        self.file.write_all(&json)
    }
}

/// Append `s` as a JSON string (escaping as serde_json does: quote, backslash
/// and control characters; everything else as is).
fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// `t` as RFC 3339 in UTC with nanoseconds: `2006-01-02T15:04:05.123456789Z`.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// The Gregorian date of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Count from 0000-03-01 in 400-year eras, so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_match_humantime() {
        let mut t = 0u64;
        // Every ~3.7 days over 140 years, leap years and centuries included.
        while t < 4_450_000_000 {
            let at = UNIX_EPOCH + Duration::new(t, (t % 1_000_000_007) as u32 % 1_000_000_000);
            assert_eq!(
                rfc3339_nanos(at),
                humantime::format_rfc3339_nanos(at).to_string()
            );
            t += 321_987;
        }
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_nanos(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn strings_match_serde_json() {
        let cases = [
            "plain",
            "quote \" backslash \\ slash /",
            "\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "unicode é 漢字 🚢",
            "",
        ];
        for s in cases {
            let mut out = Vec::new();
            json_string(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn lines_are_split_per_stream_and_long_lines_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let mut w = LogWriter::open(&path).unwrap();
        w.write(0, b"hel").unwrap();
        w.write(1, b"oops\n").unwrap();
        w.write(0, b"lo\n\"x\"").unwrap();
        w.write(1, &vec![b'a'; MAX_LINE + 1]).unwrap();
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let got: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let time = v["time"].as_str().unwrap();
                assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
                (
                    v["stream"].as_str().unwrap().to_string(),
                    v["log"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            got,
            vec![
                s("stderr", "oops\n"),
                s("stdout", "hello\n"),
                s("stderr", &"a".repeat(MAX_LINE + 1)),
                s("stdout", "\"x\""),
            ]
        );
    }
}
