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
    /// A modifier Docker does not have either (`:#`, `:%`, `^`, ...).
    #[error("unsupported modifier \"{modifier}\" in \"{word}\"")]
    UnsupportedModifier {
        /// The modifier.
        modifier: String,
        /// The whole word.
        word: String,
    },
    /// A `#`, `%` or `/` pattern with an escape other than `\*`, `\?`, `\\`.
    #[error("invalid pattern \"{pattern}\" in \"{word}\": {reason}")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// The whole word.
        word: String,
        /// What is wrong with it.
        reason: String,
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
/// `${VAR+a}`, `${VAR:?m}`, `${VAR?m}`, and BuildKit's pattern forms
/// `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}` (shortest or longest
/// prefix or suffix removed), `${VAR/p/r}`, `${VAR//p/r}` (first or every
/// longest match replaced), where `*` is any string, `?` any character and
/// `\*`, `\?`, `\\` are literal; removes quotes (`'...'` is literal,
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
    lx.process(None, false)
}

/// A shell pattern (see [`expand`]) as a regex: `*` lazy unless `greedy`,
/// anchored at the start if `anchored`. A `\` before `}` or `/` only kept
/// them from ending the `${...}`.
fn pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<regex::Regex, String> {
    let mut out = String::from(if anchored { "^" } else { "" });
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(if greedy { ".*" } else { ".*?" }),
            '?' => out.push('.'),
            '\\' => match chars.peek() {
                Some('}' | '/') => {}
                Some(&n @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push_str(&regex::escape(&n.to_string()));
                }
                Some(n) => return Err(format!("invalid escape '\\{n}'")),
                None => return Err("a trailing '\\'".to_string()),
            },
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    regex::RegexBuilder::new(&out)
        .dot_matches_new_line(false)
        .build()
        .map_err(|e| e.to_string())
}

/// `pattern` for matching reversed text: its characters in reverse order,
/// each escape kept before the character it escapes.
fn reverse_pattern(pattern: &str) -> String {
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&n)) => {
                chars.next();
                tokens.push(format!("\\{n}"));
            }
            _ => tokens.push(c.to_string()),
        }
    }
    tokens.into_iter().rev().collect()
}

/// `value` without its shortest (longest if `greedy`) prefix matching `pattern`.
fn trim_prefix(value: &str, pattern: &str, greedy: bool) -> Result<String, String> {
    let re = pattern_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// `value` without its shortest (longest if `greedy`) suffix matching
/// `pattern`: a prefix trim of both reversed.
fn trim_suffix(value: &str, pattern: &str, greedy: bool) -> Result<String, String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reversed, &reverse_pattern(pattern), greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// `value` with the first (every, if `all`) longest match of `pattern`
/// replaced by `with`, taken literally.
fn replace(value: &str, pattern: &str, with: &str, all: bool) -> Result<String, String> {
    let re = pattern_regex(pattern, true, false)?;
    let with = regex::NoExpand(with);
    Ok(if all {
        re.replace_all(value, with).into_owned()
    } else {
        re.replace(value, with).into_owned()
    })
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

    /// Processes until `stop` (consumed) or end of input; with `raw`, an
    /// escape character stays in the output before what it escapes (for
    /// patterns, which read escapes themselves).
    fn process(&mut self, stop: Option<char>, raw: bool) -> Result<String, ExpandError> {
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
                        if raw {
                            out.push(c);
                        }
                        match self.next() {
                            Some(n) => out.push(n),
                            None if stop.is_some() => return Err(self.bad()),
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
            Some(m @ ('#' | '%')) => {
                // `##`/`%%` as written, not a pattern that expands to `#`/`%`.
                let greedy = self.peek() == Some(m);
                if greedy {
                    self.next();
                }
                let pattern = self.process(Some('}'), true)?;
                let value = value.unwrap_or_default();
                let trimmed = if m == '#' {
                    trim_prefix(&value, &pattern, greedy)
                } else {
                    trim_suffix(&value, &pattern, greedy)
                };
                trimmed.map_err(|reason| self.bad_pattern(&pattern, reason))
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.next();
                }
                let pattern = self.process(Some('/'), true)?;
                let with = self.process(Some('}'), true)?;
                replace(&value.unwrap_or_default(), &pattern, &with, all)
                    .map_err(|reason| self.bad_pattern(&pattern, reason))
            }
            Some(m) => Err(ExpandError::UnsupportedModifier {
                modifier: m.to_string(),
                word: self.word.to_string(),
            }),
            None => Err(self.bad()),
        }
    }

    fn bad_pattern(&self, pattern: &str, reason: String) -> ExpandError {
        ExpandError::BadPattern {
            pattern: pattern.to_string(),
            word: self.word.to_string(),
            reason,
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
        let word = self.process(Some('}'), false)?;
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
