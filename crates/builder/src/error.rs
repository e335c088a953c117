//! Parse errors with file, line and column.

/// A Dockerfile parse error, rendered on one line as
/// `FILE:LINE:COLUMN: MESSAGE`, e.g.
/// `Dockerfile:3:1: unknown instruction "FROMM" (did you mean FROM?)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ParseError {
    /// The file name given to [`crate::parse_named`] (`Dockerfile` for [`crate::parse`]).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The one-line message, which quotes the offending text.
    pub message: String,
    /// The offending source line (first line only).
    pub text: String,
}

impl ParseError {
    /// Builds an error for byte offset `pos` of `src`.
    pub(crate) fn at(file: &str, src: &str, pos: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_col(src, pos);
        let text = src.lines().nth(line - 1).unwrap_or("").to_string();
        let message: String = message.into();
        ParseError {
            file: file.to_string(),
            line,
            column,
            message: message.replace('\n', "\\n"),
            text,
        }
    }
}

/// 1-based (line, column) of byte offset `pos`; the column counts characters.
pub(crate) fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(src.len());
    while !src.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = &src[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = src[line_start..pos].chars().count() + 1;
    (line, column)
}

/// Byte offset of 1-based (line, column) in `src` (column counted in bytes as
/// reported by parse-dockerfile).
pub(crate) fn offset_of(src: &str, line: usize, column: usize) -> usize {
    let mut off = 0;
    for (i, l) in src.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            // The parser's byte column may land inside a character (it does
            // after a byte-order mark): round down to the character's start.
            let mut pos = (off + column.saturating_sub(1)).min(src.len());
            while !src.is_char_boundary(pos) {
                pos -= 1;
            }
            return pos;
        }
        off += l.len();
    }
    src.len()
}
