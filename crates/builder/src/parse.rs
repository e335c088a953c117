//! Dockerfile parsing on top of parse-dockerfile, mapped to our own types.

use std::time::Duration;

use parse_dockerfile as pd;
use serde::Serialize;

use crate::error::{offset_of, ParseError};

/// The default escape character.
pub const DEFAULT_ESCAPE: char = '\\';

/// All instruction keywords, for "did you mean" hints.
const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    /// The file name used in errors.
    pub file: String,
    /// The `# syntax=` directive, if any (recorded, not acted on).
    pub syntax: Option<String>,
    /// The escape character (`\` or `` ` `` from `# escape=`).
    pub escape: char,
    /// The instructions in order.
    pub nodes: Vec<Node>,
}

/// Where an instruction starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    /// 1-based line of the keyword.
    pub line: usize,
    /// 1-based column (characters) of the keyword.
    pub column: usize,
    /// Byte offset of the keyword.
    pub start: usize,
    /// Byte offset one past the instruction's last character.
    pub end: usize,
}

/// One instruction with its location and original text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The typed instruction (variables not yet expanded).
    pub instruction: Instruction,
    /// Where it is.
    pub span: Span,
    /// The original text, continuations and heredoc bodies included.
    pub text: String,
}

/// Shell form or exec (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Command {
    /// Shell form: run through SHELL (default `/bin/sh -c`); escapes kept.
    Shell(String),
    /// Exec form: argv.
    Exec(Vec<String>),
}

/// A here-document body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The body.
    pub content: String,
    /// False when the delimiter was quoted (no expansion).
    pub expand: bool,
}

/// A `RUN --mount=...` flag, recorded as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The raw spec, e.g. `type=cache,target=/root/.cache`.
    pub spec: String,
}

impl Mount {
    /// Value of one `key=value` field of the spec.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.spec.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim().eq_ignore_ascii_case(key)).then_some(v.trim())
        })
    }
}

/// A COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CopySource {
    /// A path (glob allowed) in the context or the `--from` stage/image, or a URL (ADD).
    Path(String),
    /// An inline here-document.
    Heredoc(Heredoc),
}

/// Arguments of COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct CopyArgs {
    /// `--from=stage|index|image` (COPY only).
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=mode`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY).
    pub parents: bool,
    /// `--exclude=pattern` (repeatable).
    pub exclude: Vec<String>,
    /// `--checksum=` (ADD).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD).
    pub keep_git_dir: bool,
    /// Sources.
    pub sources: Vec<CopySource>,
    /// Destination.
    pub dest: String,
}

/// HEALTHCHECK arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable an inherited check.
    None,
    /// `HEALTHCHECK [options] CMD ...`.
    Cmd {
        /// The check command.
        command: Command,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// A typed Dockerfile instruction. String fields are raw (unexpanded);
/// quotes in ENV/LABEL/ARG values are kept until expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Instruction {
    /// `FROM [--platform=p] image [AS name]`.
    From {
        /// Image reference or stage name (`scratch` allowed).
        image: String,
        /// `AS name`.
        name: Option<String>,
        /// `--platform`.
        platform: Option<String>,
    },
    /// `RUN [--mount ...] [--network ...] [--security ...] command`.
    Run {
        /// The command; not expanded by the builder (the shell does it).
        command: Command,
        /// `--mount` flags.
        mounts: Vec<Mount>,
        /// `--network`.
        network: Option<String>,
        /// `--security`.
        security: Option<String>,
        /// Here-documents fed to the command.
        heredocs: Vec<Heredoc>,
    },
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `ENV k=v ...` or legacy `ENV k v`.
    Env(Vec<(String, String)>),
    /// `ARG name[=default] ...`.
    Arg(Vec<(String, Option<String>)>),
    /// `COPY`.
    Copy(CopyArgs),
    /// `ADD`.
    Add(CopyArgs),
    /// `WORKDIR`.
    Workdir(String),
    /// `USER`.
    User(String),
    /// `EXPOSE port[/proto] ...`.
    Expose(Vec<String>),
    /// `VOLUME` (JSON or space-separated list).
    Volume(Vec<String>),
    /// `LABEL k=v ...`.
    Label(Vec<(String, String)>),
    /// `STOPSIGNAL`.
    Stopsignal(String),
    /// `HEALTHCHECK`.
    Healthcheck(Healthcheck),
    /// `SHELL ["exe", "arg"]`.
    Shell(Vec<String>),
    /// `ONBUILD instruction`, recorded verbatim and triggered in child builds.
    Onbuild(Box<Node>),
    /// `MAINTAINER name` (deprecated): recorded as the `maintainer` label.
    Maintainer(String),
}

impl Instruction {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From { .. } => "FROM",
            Instruction::Run { .. } => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Label(_) => "LABEL",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell(_) => "SHELL",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }

    /// A canonical, deterministic text of this instruction for
    /// [`crate::cache_key`] (JSON of the typed form). Call it on the
    /// instruction returned by [`crate::StageScope::evaluate`], so that
    /// what counts is the text after expansion, not the spelling (`ENV a=1`
    /// and `env  a=1` give the same text).
    pub fn cache_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{self:?}"))
    }

    /// Whether the builder expands variables in this instruction (Docker's
    /// list: ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER, VOLUME,
    /// WORKDIR and ARG defaults). RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK and
    /// ONBUILD are not expanded.
    pub fn expands(&self) -> bool {
        matches!(
            self,
            Instruction::From { .. }
                | Instruction::Env(_)
                | Instruction::Arg(_)
                | Instruction::Copy(_)
                | Instruction::Add(_)
                | Instruction::Workdir(_)
                | Instruction::User(_)
                | Instruction::Expose(_)
                | Instruction::Volume(_)
                | Instruction::Label(_)
                | Instruction::Stopsignal(_)
        )
    }
}

/// Parses `text` as a file named `Dockerfile`.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    parse_named("Dockerfile", text)
}

/// Parses `text`, naming `file` in errors.
pub fn parse_named(file: &str, text: &str) -> Result<Dockerfile, ParseError> {
    // Docker ignores a UTF-8 byte-order mark; the grammar's spans do not
    // account for one, so it goes before parsing.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The grammar would skip a second one too, with spans that then point
    // inside it; to Docker it starts an unknown instruction.
    if text.starts_with('\u{feff}') {
        return Err(ParseError::at(
            file,
            text,
            0,
            "a second byte-order mark (U+FEFF) before the first instruction",
        ));
    }
    let df = pd::parse(text).map_err(|e| map_crate_error(file, text, &e))?;
    let escape = df
        .parser_directives
        .escape
        .as_ref()
        .map_or(DEFAULT_ESCAPE, |d| d.value.value);
    let syntax = df
        .parser_directives
        .syntax
        .as_ref()
        .map(|d| d.value.value.to_string());
    let cx = Cx {
        file,
        src: text,
        escape,
    };
    let starts: Vec<usize> = df.instructions.iter().map(keyword_start).collect();
    let mut nodes = Vec::with_capacity(df.instructions.len());
    for (i, ins) in df.instructions.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        nodes.push(cx.node(ins, end)?);
    }
    Ok(Dockerfile {
        file: file.to_string(),
        syntax,
        escape,
        nodes,
    })
}

fn keyword_start(ins: &pd::Instruction<'_>) -> usize {
    keyword_span(ins).start
}

fn keyword_span(ins: &pd::Instruction<'_>) -> pd::Span {
    use pd::Instruction as I;
    match ins {
        I::Add(i) => i.add.span.clone(),
        I::Arg(i) => i.arg.span.clone(),
        I::Cmd(i) => i.cmd.span.clone(),
        I::Copy(i) => i.copy.span.clone(),
        I::Entrypoint(i) => i.entrypoint.span.clone(),
        I::Env(i) => i.env.span.clone(),
        I::Expose(i) => i.expose.span.clone(),
        I::From(i) => i.from.span.clone(),
        I::Healthcheck(i) => i.healthcheck.span.clone(),
        I::Label(i) => i.label.span.clone(),
        I::Maintainer(i) => i.maintainer.span.clone(),
        I::Onbuild(i) => i.onbuild.span.clone(),
        I::Run(i) => i.run.span.clone(),
        I::Shell(i) => i.shell.span.clone(),
        I::Stopsignal(i) => i.stopsignal.span.clone(),
        I::User(i) => i.user.span.clone(),
        I::Volume(i) => i.volume.span.clone(),
        I::Workdir(i) => i.workdir.span.clone(),
        _ => 0..0,
    }
}

fn map_crate_error(file: &str, src: &str, e: &pd::Error) -> ParseError {
    let msg = format!("{e:#}");
    if e.line() == 0 {
        return ParseError::at(
            file,
            src,
            0,
            "no FROM instruction (a Dockerfile needs at least one stage)",
        );
    }
    let pos = offset_of(src, e.line(), e.column());
    let word: String = src[pos..]
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_string();
    if let Some(rest) = msg.strip_prefix("unknown instruction '") {
        let w = rest.trim_end_matches('\'');
        let hint = suggest(w)
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        return ParseError::at(file, src, pos, format!("unknown instruction \"{w}\"{hint}"));
    }
    if msg == "expected FROM" {
        return ParseError::at(
            file,
            src,
            pos,
            format!(
                "{} before the first FROM (only ARG may come before FROM)",
                word.to_uppercase()
            ),
        );
    }
    let line = src.lines().nth(e.line() - 1).unwrap_or("").trim();
    if line.is_empty() {
        return ParseError::at(file, src, pos, msg);
    }
    ParseError::at(file, src, pos, format!("{msg}: \"{line}\""))
}

/// The closest keyword within edit distance 2, if any.
fn suggest(word: &str) -> Option<&'static str> {
    let w = word.to_uppercase();
    KEYWORDS
        .iter()
        .map(|k| (levenshtein(&w, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

struct Cx<'a> {
    file: &'a str,
    src: &'a str,
    escape: char,
}

/// A parsed flag: name, value, byte offset.
struct Flag {
    name: String,
    value: Option<String>,
    pos: usize,
}

impl Cx<'_> {
    fn err(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        ParseError::at(self.file, self.src, pos, msg)
    }

    fn span(&self, start: usize, end: usize) -> Span {
        let (line, column) = crate::error::line_col(self.src, start);
        Span {
            line,
            column,
            start,
            end,
        }
    }

    /// The instruction's original text: from its keyword up to `end`, minus
    /// trailing blank and comment lines.
    fn text_end(&self, start: usize, end: usize) -> usize {
        let mut slice = &self.src[start..end];
        loop {
            let t = slice.trim_end();
            match t.rfind('\n') {
                Some(nl) if t[nl + 1..].trim_start().starts_with('#') => slice = &t[..nl],
                _ => return start + t.len(),
            }
        }
    }

    fn flags(
        &self,
        kw: &str,
        opts: &[pd::Flag<'_>],
        allowed: &[&str],
    ) -> Result<Vec<Flag>, ParseError> {
        let mut out = Vec::new();
        for f in opts {
            let pos = f.flag_span().start;
            let name = f.name.value.to_string();
            if !allowed.contains(&name.as_str()) {
                let list = allowed
                    .iter()
                    .map(|a| format!("--{a}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let list = if list.is_empty() {
                    "none".to_string()
                } else {
                    list
                };
                return Err(self.err(
                    pos,
                    format!("unknown flag \"--{name}\" for {kw} (allowed: {list})"),
                ));
            }
            out.push(Flag {
                name,
                value: f.value.as_ref().map(|v| v.value.to_string()),
                pos,
            });
        }
        Ok(out)
    }

    fn value(&self, kw: &str, f: &Flag) -> Result<String, ParseError> {
        match &f.value {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(self.err(
                f.pos,
                format!(
                    "flag \"--{}\" of {kw} needs a value (--{}=...)",
                    f.name, f.name
                ),
            )),
        }
    }

    fn bool_flag(&self, kw: &str, f: &Flag) -> Result<bool, ParseError> {
        match f.value.as_deref() {
            None | Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(self.err(
                f.pos,
                format!(
                    "flag \"--{}\" of {kw} takes true or false, not \"{v}\"",
                    f.name
                ),
            )),
        }
    }

    fn node(&self, ins: &pd::Instruction<'_>, end: usize) -> Result<Node, ParseError> {
        let kspan = keyword_span(ins);
        let start = kspan.start;
        let end = self.text_end(start, end);
        let instruction = self.convert(ins, start, end)?;
        Ok(Node {
            instruction,
            span: self.span(start, end),
            text: self.src[start..end].to_string(),
        })
    }

    fn command(c: &pd::Command<'_>) -> Command {
        match c {
            pd::Command::Exec(a) => {
                Command::Exec(a.value.iter().map(|s| s.value.to_string()).collect())
            }
            pd::Command::Shell(s) => Command::Shell(s.value.to_string()),
            _ => Command::Shell(String::new()),
        }
    }

    fn heredoc(h: &pd::HereDoc<'_>) -> Heredoc {
        Heredoc {
            content: h.value.to_string(),
            expand: h.expand,
        }
    }

    #[allow(clippy::too_many_lines)]
    fn convert(
        &self,
        ins: &pd::Instruction<'_>,
        start: usize,
        end: usize,
    ) -> Result<Instruction, ParseError> {
        use pd::Instruction as I;
        Ok(match ins {
            I::From(f) => {
                let flags = self.flags("FROM", &f.options, &["platform"])?;
                let mut platform = None;
                for fl in &flags {
                    platform = Some(self.value("FROM", fl)?);
                }
                let image = f.image.value.to_string();
                if image.is_empty() {
                    return Err(self.err(start, "FROM needs an image: \"FROM\""));
                }
                Instruction::From {
                    image,
                    name: f.as_.as_ref().map(|(_, n)| n.value.to_string()),
                    platform,
                }
            }
            I::Run(r) => {
                let flags = self.flags("RUN", &r.options, &["mount", "network", "security"])?;
                let (mut mounts, mut network, mut security) = (Vec::new(), None, None);
                for fl in &flags {
                    let v = self.value("RUN", fl)?;
                    match fl.name.as_str() {
                        "mount" => mounts.push(Mount { spec: v }),
                        "network" => network = Some(v),
                        _ => security = Some(v),
                    }
                }
                let command = if r.here_docs.is_empty() {
                    Self::command(&r.arguments)
                } else {
                    // Keep the whole first line (`<<EOT bash`): BuildKit runs it
                    // with the here-documents attached.
                    let first = self.src[start..end].lines().next().unwrap_or("");
                    let mut rest = first.get(3..).unwrap_or("").trim_start();
                    while rest.starts_with("--") {
                        rest = rest
                            .split_once(char::is_whitespace)
                            .map_or("", |(_, r)| r)
                            .trim_start();
                    }
                    Command::Shell(rest.trim_end().to_string())
                };
                Instruction::Run {
                    command,
                    mounts,
                    network,
                    security,
                    heredocs: r.here_docs.iter().map(Self::heredoc).collect(),
                }
            }
            I::Cmd(c) => Instruction::Cmd(Self::command(&c.arguments)),
            I::Entrypoint(c) => Instruction::Entrypoint(Self::command(&c.arguments)),
            I::Env(e) => {
                let pos = e.arguments.span.start;
                Instruction::Env(self.name_vals("ENV", &e.arguments.value, pos, true)?)
            }
            I::Label(l) => {
                let pos = l.arguments.span.start;
                Instruction::Label(self.name_vals("LABEL", &l.arguments.value, pos, true)?)
            }
            I::Arg(a) => {
                let words = split_words(&a.arguments.value, self.escape_of());
                let mut out = Vec::new();
                for w in words {
                    match w.split_once('=') {
                        Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
                        None => out.push((w, None)),
                    }
                }
                for (k, _) in &out {
                    if !valid_name(k) {
                        return Err(
                            self.err(a.arguments.span.start, format!("invalid ARG name \"{k}\""))
                        );
                    }
                }
                Instruction::Arg(out)
            }
            I::Copy(c) => Instruction::Copy(self.copy_args(
                "COPY",
                &c.options,
                &["from", "chown", "chmod", "link", "parents", "exclude"],
                &c.src,
                &c.dest,
            )?),
            I::Add(c) => Instruction::Add(self.copy_args(
                "ADD",
                &c.options,
                &[
                    "chown",
                    "chmod",
                    "link",
                    "checksum",
                    "keep-git-dir",
                    "exclude",
                ],
                &c.src,
                &c.dest,
            )?),
            I::Workdir(w) => Instruction::Workdir(w.arguments.value.to_string()),
            I::User(u) => Instruction::User(u.arguments.value.to_string()),
            I::Stopsignal(s) => Instruction::Stopsignal(s.arguments.value.to_string()),
            I::Expose(e) => {
                Instruction::Expose(e.arguments.iter().map(|a| a.value.to_string()).collect())
            }
            I::Volume(v) => Instruction::Volume(match &v.arguments {
                pd::JsonOrStringArray::Json(a) => {
                    a.value.iter().map(|s| s.value.to_string()).collect()
                }
                pd::JsonOrStringArray::String(a) => a.iter().map(|s| s.value.to_string()).collect(),
            }),
            I::Shell(s) => {
                Instruction::Shell(s.arguments.iter().map(|a| a.value.to_string()).collect())
            }
            I::Maintainer(m) => Instruction::Maintainer(m.name.value.to_string()),
            I::Onbuild(o) => {
                let inner = &*o.instruction;
                if matches!(inner, I::From(_) | I::Maintainer(_) | I::Onbuild(_)) {
                    return Err(self.err(
                        keyword_start(inner),
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            &self.src[keyword_span(inner)].to_uppercase()
                        ),
                    ));
                }
                Instruction::Onbuild(Box::new(self.node(inner, end)?))
            }
            I::Healthcheck(h) => {
                let flags = self.flags(
                    "HEALTHCHECK",
                    &h.options,
                    &[
                        "interval",
                        "timeout",
                        "start-period",
                        "start-interval",
                        "retries",
                    ],
                )?;
                match &h.arguments {
                    pd::HealthcheckArguments::None { .. } => {
                        if let Some(f) = flags.first() {
                            return Err(self.err(f.pos, "HEALTHCHECK NONE takes no options"));
                        }
                        Instruction::Healthcheck(Healthcheck::None)
                    }
                    pd::HealthcheckArguments::Cmd { arguments, .. } => {
                        let (
                            mut interval,
                            mut timeout,
                            mut start_period,
                            mut start_interval,
                            mut retries,
                        ) = (None, None, None, None, None);
                        for fl in &flags {
                            let v = self.value("HEALTHCHECK", fl)?;
                            if fl.name == "retries" {
                                let n: u32 = v.parse().map_err(|_| {
                                    self.err(
                                        fl.pos,
                                        format!("--retries must be a whole number, not \"{v}\""),
                                    )
                                })?;
                                retries = Some(n);
                                continue;
                            }
                            let d = parse_duration(&v).ok_or_else(|| {
                                self.err(
                                    fl.pos,
                                    format!(
                                        "--{} takes a duration like 30s or 1m30s, not \"{v}\"",
                                        fl.name
                                    ),
                                )
                            })?;
                            match fl.name.as_str() {
                                "interval" => interval = Some(d),
                                "timeout" => timeout = Some(d),
                                "start-period" => start_period = Some(d),
                                _ => start_interval = Some(d),
                            }
                        }
                        Instruction::Healthcheck(Healthcheck::Cmd {
                            command: Self::command(arguments),
                            interval,
                            timeout,
                            start_period,
                            start_interval,
                            retries,
                        })
                    }
                    _ => return Err(self.err(start, "unsupported HEALTHCHECK form")),
                }
            }
            _ => return Err(self.err(start, "unsupported instruction")),
        })
    }

    fn escape_of(&self) -> char {
        self.escape
    }

    /// Docker's parseNameVal: `k=v k2="v 2"` or legacy `k v w`.
    fn name_vals(
        &self,
        kw: &str,
        rest: &str,
        pos: usize,
        legacy_ok: bool,
    ) -> Result<Vec<(String, String)>, ParseError> {
        let words = split_words(rest, self.escape_of());
        let Some(first) = words.first() else {
            return Err(self.err(pos, format!("{kw} needs at least one argument")));
        };
        if !first.contains('=') {
            let mut parts = rest.trim().splitn(2, char::is_whitespace);
            let key = parts.next().unwrap_or("").to_string();
            let value = parts.next().map(str::trim_start).unwrap_or("");
            if !legacy_ok || value.is_empty() {
                return Err(self.err(
                    pos,
                    format!(
                        "{kw} needs a value: \"{kw} {}\" (use {key}=value)",
                        rest.trim()
                    ),
                ));
            }
            return Ok(vec![(key, value.to_string())]);
        }
        let mut out = Vec::new();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(self.err(
                    pos,
                    format!("{kw}: can't find = in \"{w}\"; use name=value"),
                ));
            };
            if k.is_empty() {
                return Err(self.err(pos, format!("{kw}: empty name in \"{w}\"")));
            }
            out.push((k.to_string(), v.to_string()));
        }
        Ok(out)
    }

    fn copy_args(
        &self,
        kw: &str,
        opts: &[pd::Flag<'_>],
        allowed: &[&str],
        src: &[pd::Source<'_>],
        dest: &pd::UnescapedString<'_>,
    ) -> Result<CopyArgs, ParseError> {
        let mut a = CopyArgs::default();
        for fl in self.flags(kw, opts, allowed)? {
            match fl.name.as_str() {
                "from" => a.from = Some(self.value(kw, &fl)?),
                "chown" => a.chown = Some(self.value(kw, &fl)?),
                "chmod" => a.chmod = Some(self.value(kw, &fl)?),
                "checksum" => a.checksum = Some(self.value(kw, &fl)?),
                "exclude" => a.exclude.push(self.value(kw, &fl)?),
                "link" => a.link = self.bool_flag(kw, &fl)?,
                "parents" => a.parents = self.bool_flag(kw, &fl)?,
                _ => a.keep_git_dir = self.bool_flag(kw, &fl)?,
            }
        }
        for s in src {
            match s {
                pd::Source::Path(p) => a.sources.push(CopySource::Path(p.value.to_string())),
                pd::Source::HereDoc(h) => a.sources.push(CopySource::Heredoc(Self::heredoc(h))),
                _ => return Err(self.err(dest.span.start, format!("{kw}: unsupported source"))),
            }
        }
        a.dest = dest.value.to_string();
        Ok(a)
    }
}

/// Whether `name` is a valid variable name.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// Docker's parseWords: split on whitespace outside quotes, keeping quotes and
/// escapes in the words (they are removed by expansion).
pub(crate) fn split_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            None => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    match chars.next() {
                        None => continue,
                        Some(n) => {
                            word.push(ch);
                            word.push(n);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                if ch == escape && q != '\'' {
                    match chars.next() {
                        None => continue,
                        Some(n) => {
                            word.push(ch);
                            word.push(n);
                            continue;
                        }
                    }
                }
                word.push(ch);
            }
        }
    }
    if !word.is_empty() || blank_ok {
        words.push(word);
    }
    words
}

/// Parses a Go-style duration (`1h2m3s`, `500ms`, `1.5s`); like Go, refuses
/// one longer than an i64 of nanoseconds (about 292 years).
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[u..];
    }
    let d = Duration::try_from_secs_f64(total).ok()?;
    (d.as_nanos() <= i64::MAX as u128).then_some(d)
}
