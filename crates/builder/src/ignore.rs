//! `.dockerignore` with Docker's rules (moby/patternmatcher).

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

/// A `.dockerignore` error.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// A pattern that does not compile.
    #[error(".dockerignore:{line}: bad pattern \"{pattern}\": {reason}")]
    Pattern {
        /// 1-based line.
        line: usize,
        /// The pattern as written.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: String,
    exception: bool,
    matcher: GlobMatcher,
}

/// Compiled `.dockerignore` patterns.
///
/// Rules (Docker's): one pattern per line; lines starting with `#` are
/// comments; surrounding whitespace is trimmed; `!` makes an exception;
/// patterns are cleaned like Go's `filepath.Clean` and a leading `/` is
/// dropped, so `/a`, `./a` and `a` are the same; `*` and `?` do not cross
/// `/`; `**` matches any number of directories (including none); `[...]`
/// classes (`[^...]` or `[!...]` negated); `\` escapes. A pattern excludes
/// a path if it matches the path or one of its parent directories. The last
/// matching pattern wins. The Dockerfile and `.dockerignore` are always read
/// by the builder, but if they match they are hidden from COPY/ADD.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    rules: Vec<Rule>,
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

impl DockerIgnore {
    /// Parses the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Result<Self, IgnoreError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let exception = p.starts_with('!');
            if exception {
                p = p[1..].trim();
            }
            if p.is_empty() {
                continue;
            }
            let mut pattern = clean(p);
            if pattern.len() > 1 && pattern.starts_with('/') {
                pattern.remove(0);
            }
            // Braces are literal in Docker patterns.
            let glob_src = pattern.replace('{', "\\{").replace('}', "\\}");
            let matcher = GlobBuilder::new(&glob_src)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| IgnoreError::Pattern {
                    line: i + 1,
                    pattern: raw.to_string(),
                    reason: e.kind().to_string(),
                })?
                .compile_matcher();
            rules.push(Rule {
                pattern,
                exception,
                matcher,
            });
        }
        Ok(DockerIgnore { rules })
    }

    /// Reads `<dockerfile>.dockerignore` if it exists (BuildKit's per-
    /// Dockerfile ignore file), else `<context>/.dockerignore`, else nothing.
    pub fn for_context(context: &Path, dockerfile: Option<&Path>) -> Result<Self, IgnoreError> {
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile {
            let mut s = df.as_os_str().to_owned();
            s.push(".dockerignore");
            candidates.push(std::path::PathBuf::from(s));
        }
        candidates.push(context.join(".dockerignore"));
        for c in candidates {
            match std::fs::read_to_string(&c) {
                Ok(t) => return Self::parse(&t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(IgnoreError::Io {
                        path: c.display().to_string(),
                        source,
                    })
                }
            }
        }
        Ok(Self::default())
    }

    /// The cleaned patterns, `!` kept on exceptions.
    pub fn patterns(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| {
                if r.exception {
                    format!("!{}", r.pattern)
                } else {
                    r.pattern.clone()
                }
            })
            .collect()
    }

    /// Whether any exception pattern exists (a walker must then descend into
    /// excluded directories).
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path.trim_start_matches('/'));
        let comps: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for r in &self.rules {
            // Last match wins; skip rules that cannot change the outcome.
            if r.exception != excluded {
                continue;
            }
            let mut m = r.matcher.is_match(&path);
            if !m {
                for i in 1..comps.len() {
                    if r.matcher.is_match(comps[..i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                excluded = !r.exception;
            }
        }
        excluded
    }
}
