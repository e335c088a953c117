//! Docker's word expansion (moby/buildkit `shell.Lex.ProcessWord`).

/// An expansion error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// Unterminated quote.
    #[error("unexpected end of text while looking for matching {0} in \"{1}\"")]
    Unterminated(&'static str, String),
    /// `${` without `}` or a bad name.
    #[error("bad substitution in \"{0}\"")]
    BadSubstitution(String),
    /// A modifier we don't support (`#`, `%`, `/`, ...).
    #[error("unsupported modifier \"{modifier}\" in \"{word}\"")]
    UnsupportedModifier {
        /// The modifier.
        modifier: String,
        /// The whole word.
        word: String,
    },
    /// `${VAR:?message}` / `${VAR?message}` with VAR unset (or empty).
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message given or a default one.
        message: String,
    },
}

/// Expands one word: `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:+a}`,
/// `${VAR+a}`, `${VAR:?m}`, `${VAR?m}`; removes quotes (`'...'` is literal,
/// `"..."` expands) and escapes (`\$` is a literal `$`), with `escape` as the
/// escape character. Unset variables expand to the empty string. Defaults
/// are themselves expanded, so `${A:-${B:-x}}` nests.
pub fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut lx = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        lookup,
        word,
    };
    lx.process(None)
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    word: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += usize::from(c.is_some());
        c
    }

    fn bad(&self) -> ExpandError {
        ExpandError::BadSubstitution(self.word.to_string())
    }

    /// Processes until `stop` (consumed) or end of input.
    fn process(&mut self, stop: Option<char>) -> Result<String, ExpandError> {
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                if stop.is_some() {
                    return Err(self.bad());
                }
                return Ok(out);
            };
            if Some(c) == stop {
                self.next();
                return Ok(out);
            }
            match c {
                '\'' => out.push_str(&self.single_quote()?),
                '"' => out.push_str(&self.double_quote()?),
                '$' => out.push_str(&self.dollar()?),
                _ => {
                    self.next();
                    if c == self.escape {
                        match self.next() {
                            Some(n) => out.push(n),
                            None => return Ok(out),
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    fn single_quote(&mut self) -> Result<String, ExpandError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(ExpandError::Unterminated(
                        "single-quote",
                        self.word.to_string(),
                    ))
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ExpandError> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ExpandError::Unterminated(
                        "double-quote",
                        self.word.to_string(),
                    ))
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    self.next();
                    if c == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.next();
                                out.push(n);
                            }
                            Some(_) => out.push(c),
                        }
                    } else {
                        out.push(c);
                    }
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.next();
            } else {
                break;
            }
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok((self.lookup)(&name).unwrap_or_default());
        }
        self.next();
        let name = self.name();
        if name.is_empty() {
            return Err(self.bad());
        }
        let value = (self.lookup)(&name);
        match self.next() {
            Some('}') => Ok(value.unwrap_or_default()),
            Some(':') => {
                let m = self.next().ok_or_else(|| self.bad())?;
                // With a colon, "set" means set and non-empty.
                let set = value.as_deref().is_some_and(|v| !v.is_empty());
                self.modifier(&name, m, set, value, true)
            }
            Some(m @ ('-' | '+' | '?')) => {
                let set = value.is_some();
                self.modifier(&name, m, set, value, false)
            }
            Some(m) => Err(ExpandError::UnsupportedModifier {
                modifier: m.to_string(),
                word: self.word.to_string(),
            }),
            None => Err(self.bad()),
        }
    }

    fn modifier(
        &mut self,
        name: &str,
        m: char,
        set: bool,
        value: Option<String>,
        colon: bool,
    ) -> Result<String, ExpandError> {
        let word = self.process(Some('}'))?;
        match m {
            '-' => Ok(if set { value.unwrap_or_default() } else { word }),
            '+' => Ok(if set { word } else { String::new() }),
            '?' => {
                if set {
                    Ok(value.unwrap_or_default())
                } else {
                    let message = if word.is_empty() {
                        if colon {
                            "is not allowed to be unset or empty"
                        } else {
                            "is not allowed to be unset"
                        }
                        .to_string()
                    } else {
                        word
                    };
                    Err(ExpandError::Required {
                        name: name.to_string(),
                        message,
                    })
                }
            }
            _ => Err(ExpandError::UnsupportedModifier {
                modifier: format!("{}{m}", if colon { ":" } else { "" }),
                word: self.word.to_string(),
            }),
        }
    }
}
