//! ARG/ENV scoping with Docker's rules.

use std::collections::BTreeMap;

use crate::expand::{expand, ExpandError};
use crate::parse::{CopyArgs, CopySource, Dockerfile, Instruction};

/// Docker's predefined proxy ARGs: usable from `--build-arg` without an ARG
/// instruction, passed to RUN, never persisted in history nor part of the
/// cache key (unless the Dockerfile declares them with ARG).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether `name` is one of [`PROXY_ARGS`].
pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
}

/// `--build-arg` names that no ARG instruction declares (Docker warns
/// "build-args were not consumed"). Proxy args are never reported.
pub fn unused_build_args(df: &Dockerfile, build_args: &BTreeMap<String, String>) -> Vec<String> {
    let mut declared = std::collections::BTreeSet::new();
    for n in &df.nodes {
        if let Instruction::Arg(list) = &n.instruction {
            declared.extend(list.iter().map(|(k, _)| k.as_str()));
        }
    }
    build_args
        .keys()
        .filter(|k| !declared.contains(k.as_str()) && !is_proxy_arg(k))
        .cloned()
        .collect()
}

/// The ARGs declared before the first FROM. They are usable only in FROM
/// lines, unless a stage re-declares them with `ARG NAME` (no value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalArgs {
    values: BTreeMap<String, Option<String>>,
}

impl GlobalArgs {
    /// Evaluates the ARGs before the first FROM of `df`; a `--build-arg`
    /// overrides a declared default.
    pub fn from_dockerfile(
        df: &Dockerfile,
        build_args: &BTreeMap<String, String>,
    ) -> Result<Self, ExpandError> {
        let mut g = GlobalArgs::default();
        for n in &df.nodes {
            match &n.instruction {
                Instruction::Arg(list) => {
                    for (name, default) in list {
                        let value = match (build_args.get(name), default) {
                            (Some(v), _) => Some(v.clone()),
                            (None, Some(d)) => Some(g.expand(d, df.escape)?),
                            (None, None) => None,
                        };
                        g.values.insert(name.clone(), value);
                    }
                }
                _ => break,
            }
        }
        Ok(g)
    }

    /// The value of a global ARG (None if undeclared or without value).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.as_deref())
    }

    /// Whether `name` was declared before the first FROM.
    pub fn declared(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Expands a FROM word with the global ARGs only.
    pub fn expand(&self, word: &str, escape: char) -> Result<String, ExpandError> {
        expand(word, escape, &|n| self.get(n).map(str::to_string))
    }
}

/// The variables visible inside one stage: the base image's ENV, ENVs set so
/// far and ARGs declared so far. ENV wins over ARG of the same name.
#[derive(Debug, Clone)]
pub struct StageScope<'a> {
    build_args: &'a BTreeMap<String, String>,
    global: &'a GlobalArgs,
    escape: char,
    args: BTreeMap<String, Option<String>>,
    env: Vec<(String, String)>,
}

impl<'a> StageScope<'a> {
    /// A new stage scope on top of the base image's `env`.
    pub fn new(
        global: &'a GlobalArgs,
        build_args: &'a BTreeMap<String, String>,
        escape: char,
        env: Vec<(String, String)>,
    ) -> Self {
        StageScope {
            build_args,
            global,
            escape,
            args: BTreeMap::new(),
            env,
        }
    }

    /// Looks a name up: ENV first, then declared ARGs.
    pub fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.env.iter().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        self.args.get(name).cloned().flatten()
    }

    /// Expands a word in this scope.
    pub fn expand(&self, word: &str) -> Result<String, ExpandError> {
        expand(word, self.escape, &|n| self.lookup(n))
    }

    /// Declares `ARG name[=default]`: the build-arg wins, then the default
    /// (expanded), then the global ARG of that name.
    pub fn declare_arg(
        &mut self,
        name: &str,
        default: Option<&str>,
    ) -> Result<Option<String>, ExpandError> {
        let value = match (self.build_args.get(name), default) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(d)) => Some(self.expand(d)?),
            (None, None) => self.global.get(name).map(str::to_string),
        };
        self.args.insert(name.to_string(), value.clone());
        Ok(value)
    }

    /// Sets an ENV variable (replacing in place, keeping order).
    pub fn set_env(&mut self, key: &str, value: &str) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value.to_string(),
            None => self.env.push((key.to_string(), value.to_string())),
        }
    }

    /// The ENV that goes into the image config (ARGs are not persisted).
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The declared ARGs that have a value, for the cache key and RUN's
    /// environment. Proxy args appear only if declared.
    pub fn args(&self) -> BTreeMap<String, String> {
        self.args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    /// The environment of a RUN step: ENV, then ARGs not shadowed by ENV,
    /// then proxy build-args (not declared, not in history or cache key).
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut out = self.env.clone();
        for (k, v) in self.args() {
            if !out.iter().any(|(e, _)| *e == k) {
                out.push((k, v));
            }
        }
        for (k, v) in self.build_args {
            if is_proxy_arg(k) && !out.iter().any(|(e, _)| e == k) {
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }

    /// Expands `ins` by Docker's rules and applies its effect on the scope
    /// (ARG declares, ENV sets). Instructions that are not expanded are
    /// returned unchanged; FROM is expanded with the global ARGs only.
    pub fn evaluate(&mut self, ins: &Instruction) -> Result<Instruction, ExpandError> {
        Ok(match ins {
            Instruction::From {
                image,
                name,
                platform,
            } => Instruction::From {
                image: self.global.expand(image, self.escape)?,
                name: name.clone(),
                platform: platform
                    .as_deref()
                    .map(|p| self.global.expand(p, self.escape))
                    .transpose()?,
            },
            Instruction::Env(pairs) => {
                // All pairs are expanded against the env before this instruction.
                let pairs = self.expand_pairs(pairs)?;
                for (k, v) in &pairs {
                    self.set_env(k, v);
                }
                Instruction::Env(pairs)
            }
            Instruction::Label(pairs) => Instruction::Label(self.expand_pairs(pairs)?),
            Instruction::Arg(list) => {
                let mut out = Vec::new();
                for (name, default) in list {
                    let d = default.as_deref().map(|d| self.expand(d)).transpose()?;
                    self.declare_arg(name, default.as_deref())?;
                    out.push((name.clone(), d));
                }
                Instruction::Arg(out)
            }
            Instruction::Copy(a) => Instruction::Copy(self.expand_copy(a)?),
            Instruction::Add(a) => Instruction::Add(self.expand_copy(a)?),
            Instruction::Workdir(w) => Instruction::Workdir(self.expand(w)?),
            Instruction::User(w) => Instruction::User(self.expand(w)?),
            Instruction::Stopsignal(w) => Instruction::Stopsignal(self.expand(w)?),
            Instruction::Expose(l) => Instruction::Expose(self.expand_all(l)?),
            Instruction::Volume(l) => Instruction::Volume(self.expand_all(l)?),
            other => other.clone(),
        })
    }

    fn expand_all(&self, l: &[String]) -> Result<Vec<String>, ExpandError> {
        l.iter().map(|w| self.expand(w)).collect()
    }

    fn expand_pairs(
        &self,
        pairs: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ExpandError> {
        pairs
            .iter()
            .map(|(k, v)| Ok((self.expand(k)?, self.expand(v)?)))
            .collect()
    }

    fn expand_copy(&self, a: &CopyArgs) -> Result<CopyArgs, ExpandError> {
        let opt = |o: &Option<String>| o.as_deref().map(|v| self.expand(v)).transpose();
        Ok(CopyArgs {
            from: opt(&a.from)?,
            chown: opt(&a.chown)?,
            chmod: opt(&a.chmod)?,
            checksum: opt(&a.checksum)?,
            exclude: self.expand_all(&a.exclude)?,
            sources: a
                .sources
                .iter()
                .map(|s| match s {
                    CopySource::Path(p) => self.expand(p).map(CopySource::Path),
                    h @ CopySource::Heredoc(_) => Ok(h.clone()),
                })
                .collect::<Result<_, _>>()?,
            dest: self.expand(&a.dest)?,
            ..a.clone()
        })
    }
}
