//! The engine-independent half of the executor: the tar a COPY/ADD step
//! applies, and how metadata instructions change an image config. The engine (`berth_engine::build`) runs the steps.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::{json, Value};

use crate::cache::SourceHashError;
use crate::ignore::{clean, DockerIgnore};
use crate::parse::{Command, Healthcheck, Instruction};

/// Why a COPY/ADD tar could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source is missing or excluded.
    #[error("COPY failed: \"{0}\" not found in the build context or excluded by .dockerignore")]
    NotFound(String),
    /// A source escapes its root.
    #[error("COPY failed: \"{0}\" is outside the build context")]
    Outside(String),
    /// A bad `--chmod`.
    #[error("invalid --chmod value \"{0}\" (an octal mode is expected)")]
    Chmod(String),
    /// Several sources need a directory destination.
    #[error("when using COPY with more than one source file, the destination must be a directory and end with a /")]
    NotDir,
    /// I/O failure.
    #[error("COPY: {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

fn ioe(path: &Path) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Parses a `--chmod` value (octal).
pub fn parse_chmod(s: &str) -> Result<u32, CopyError> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| CopyError::Chmod(s.to_string()))
}

/// What a COPY/ADD step copies and where.
#[derive(Debug, Clone)]
pub struct CopySpec<'a> {
    /// The directory sources are relative to (the context or a stage rootfs).
    pub root: &'a Path,
    /// The sources (expanded; globs allowed).
    pub sources: &'a [String],
    /// The destination, absolute (already joined with WORKDIR).
    pub dest: &'a str,
    /// Whether `dest` already exists as a directory in the image.
    pub dest_is_dir: bool,
    /// `.dockerignore` rules (the context only).
    pub ignore: Option<&'a DockerIgnore>,
    /// `--chown` resolved to numbers; without it context files get 0:0 and
    /// `--from` files keep their owner.
    pub owner: Option<(u64, u64)>,
    /// Keep the sources' owners when `owner` is `None` (`--from`).
    pub keep_owner: bool,
    /// `--chmod`.
    pub mode: Option<u32>,
    /// ADD: extract local tar archives (plain or gzip).
    pub extract: bool,
}

/// Resolves sources to root-relative paths (globs expanded, sorted).
fn resolve_sources(spec: &CopySpec<'_>) -> Result<Vec<String>, CopyError> {
    let empty = DockerIgnore::default();
    let ignore = spec.ignore.unwrap_or(&empty);
    crate::cache::expand_sources(spec.root, spec.sources, ignore).map_err(|e| match e {
        SourceHashError::OutsideContext(s) => CopyError::Outside(s),
        SourceHashError::NotFound(s) | SourceHashError::Pattern(s, _) => CopyError::NotFound(s),
        SourceHashError::Io { path, source } => CopyError::Io { path, source },
    })
}

fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = File::open(path) else {
        return false;
    };
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    (n >= 2 && head[0] == 0x1f && head[1] == 0x8b) || (n >= 262 && &head[257..262] == b"ustar")
}

struct TarOut<'a, W: Write> {
    b: tar::Builder<W>,
    spec: &'a CopySpec<'a>,
}

impl<W: Write> TarOut<'_, W> {
    fn header(&self, md: &fs::Metadata) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let perm = md.permissions().mode() & 0o7777;
        h.set_mode(self.spec.mode.unwrap_or(perm));
        let (uid, gid) = match self.spec.owner {
            Some(o) => o,
            None if self.spec.keep_owner => (u64::from(md.uid()), u64::from(md.gid())),
            None => (0, 0),
        };
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(md.mtime().max(0) as u64);
        h
    }

    /// Appends `src` (root-relative) as `dest` (tar path), recursing into
    /// directories; `rel` is the ignore-relative path.
    fn add(&mut self, src: &Path, rel: &str, dest: &str, top: bool) -> Result<(), CopyError> {
        let md = fs::symlink_metadata(src).map_err(ioe(src))?;
        let mut h = self.header(&md);
        if md.is_dir() {
            if !top {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                self.b
                    .append_data(&mut h, format!("{dest}/"), io::empty())
                    .map_err(ioe(src))?;
            }
            let mut names: Vec<String> = fs::read_dir(src)
                .map_err(ioe(src))?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_, _>>()
                .map_err(ioe(src))?;
            names.sort();
            for n in names {
                let child_rel = if rel.is_empty() || rel == "." {
                    n.clone()
                } else {
                    format!("{rel}/{n}")
                };
                if let Some(ig) = self.spec.ignore {
                    if ig.is_excluded(&child_rel) && !ig.has_exceptions() {
                        continue;
                    }
                    let cmd = fs::symlink_metadata(src.join(&n)).map_err(ioe(src))?;
                    if ig.is_excluded(&child_rel) && !cmd.is_dir() {
                        continue;
                    }
                }
                let child_dest = if dest.is_empty() {
                    n.clone()
                } else {
                    format!("{dest}/{n}")
                };
                self.add(&src.join(&n), &child_rel, &child_dest, false)?;
            }
        } else if md.file_type().is_symlink() {
            let target = fs::read_link(src).map_err(ioe(src))?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(md.permissions().mode() & 0o7777);
            self.b
                .append_link(&mut h, dest, &target)
                .map_err(ioe(src))?;
        } else if md.is_file() {
            if self.spec.extract && top && is_archive(src) {
                return self.extract(src, dest);
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            let f = File::open(src).map_err(ioe(src))?;
            self.b.append_data(&mut h, dest, f).map_err(ioe(src))?;
        }
        // Devices, fifos and sockets are skipped, as COPY does.
        Ok(())
    }

    /// ADD of a local archive: its entries, re-rooted at `dest`.
    fn extract(&mut self, src: &Path, dest: &str) -> Result<(), CopyError> {
        let f = BufReader::new(File::open(src).map_err(ioe(src))?);
        let mut head = [0u8; 2];
        let gz = File::open(src)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
            && head == [0x1f, 0x8b];
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let mut ar = tar::Archive::new(reader);
        let join = |p: &Path| -> Option<String> {
            let c = clean(p.to_string_lossy().trim_start_matches('/'));
            if c == ".." || c.starts_with("../") {
                return None;
            }
            Some(if c == "." {
                dest.to_string()
            } else if dest.is_empty() {
                c
            } else {
                format!("{dest}/{c}")
            })
        };
        for e in ar.entries().map_err(ioe(src))? {
            let mut e = e.map_err(ioe(src))?;
            let path = e.path().map_err(ioe(src))?.into_owned();
            let Some(target) = join(&path) else { continue };
            if target.is_empty() {
                continue;
            }
            let mut h = e.header().clone();
            match h.entry_type() {
                tar::EntryType::Symlink => {
                    let l = e.link_name().map_err(ioe(src))?.unwrap_or_default();
                    let l = l.into_owned();
                    self.b.append_link(&mut h, &target, l).map_err(ioe(src))?;
                }
                tar::EntryType::Link => {
                    let l = e.link_name().map_err(ioe(src))?.unwrap_or_default();
                    let Some(l) = join(&l) else { continue };
                    self.b.append_link(&mut h, &target, l).map_err(ioe(src))?;
                }
                tar::EntryType::Regular | tar::EntryType::Directory => {
                    self.b
                        .append_data(&mut h, &target, &mut e)
                        .map_err(ioe(src))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Writes the tar a COPY/ADD applies on the image root: paths relative to
/// `/`, Docker's directory semantics (a directory source copies its
/// contents; a destination ending in `/`, an existing directory, or several
/// sources mean "into this directory").
pub fn copy_tar(spec: &CopySpec<'_>, out: impl Write) -> Result<(), CopyError> {
    let sources = resolve_sources(spec)?;
    let dest_dir = spec.dest.ends_with('/') || spec.dest_is_dir;
    let dest = clean(spec.dest).trim_start_matches('/').to_string();
    if sources.len() > 1 && !dest_dir {
        return Err(CopyError::NotDir);
    }
    let mut t = TarOut {
        b: tar::Builder::new(out),
        spec,
    };
    t.b.follow_symlinks(false);
    for rel in &sources {
        let path = if rel == "." {
            spec.root.to_path_buf()
        } else {
            spec.root.join(rel)
        };
        let md = fs::symlink_metadata(&path).map_err(ioe(&path))?;
        let archive = spec.extract && md.is_file() && is_archive(&path);
        let target = if md.is_dir() || archive || !dest_dir {
            dest.clone()
        } else {
            let base = Path::new(rel)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if dest.is_empty() {
                base
            } else {
                format!("{dest}/{base}")
            }
        };
        t.add(&path, rel, &target, true)?;
    }
    t.b.into_inner().map_err(ioe(spec.root))?.flush().ok();
    Ok(())
}

/// Resolves a WORKDIR/COPY destination against the current working dir.
pub fn resolve_path(workdir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", if workdir.is_empty() { "/" } else { workdir })
    };
    let mut c = clean(&joined);
    if path.ends_with('/') && !c.ends_with('/') {
        c.push('/');
    }
    c
}

fn strs(v: &[String]) -> Value {
    json!(v)
}

/// The argv of a shell/exec form command with `shell` (SHELL).
pub fn command_argv(cmd: &Command, shell: &[String]) -> Vec<String> {
    match cmd {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
    }
}

/// The SHELL of a config (default `/bin/sh -c`).
pub fn shell_of(config: &Value) -> Vec<String> {
    config["Shell"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

/// Applies a metadata instruction (already expanded) to the image config's
/// `config` object. `env` is the stage's ENV after the instruction. Returns
/// false for instructions that are not metadata-only.
pub fn apply_metadata(config: &mut Value, ins: &Instruction, env: &[(String, String)]) -> bool {
    if !config.is_object() {
        *config = json!({});
    }
    let obj = config.as_object_mut().expect("object");
    let shell = shell_of(&Value::Object(obj.clone()));
    let map_insert = |obj: &mut serde_json::Map<String, Value>, field: &str, k: &str, v: Value| {
        let e = obj.entry(field).or_insert_with(|| json!({}));
        if !e.is_object() {
            *e = json!({});
        }
        e.as_object_mut().expect("object").insert(k.to_string(), v);
    };
    match ins {
        Instruction::Env(_) => {
            let list: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            obj.insert("Env".into(), strs(&list));
        }
        Instruction::Arg(_) => {}
        Instruction::Workdir(w) => {
            let cur = obj
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string();
            let p = resolve_path(&cur, w);
            let p = if p.len() > 1 {
                p.trim_end_matches('/').to_string()
            } else {
                p
            };
            obj.insert("WorkingDir".into(), json!(p));
        }
        Instruction::User(u) => {
            obj.insert("User".into(), json!(u));
        }
        Instruction::Cmd(c) => {
            obj.insert("Cmd".into(), strs(&command_argv(c, &shell)));
        }
        Instruction::Entrypoint(c) => {
            obj.insert("Entrypoint".into(), strs(&command_argv(c, &shell)));
            // Docker: an ENTRYPOINT resets the CMD inherited from the base.
            obj.insert("Cmd".into(), Value::Null);
        }
        Instruction::Expose(ports) => {
            for p in ports {
                let p = if p.contains('/') {
                    p.to_lowercase()
                } else {
                    format!("{p}/tcp")
                };
                map_insert(obj, "ExposedPorts", &p, json!({}));
            }
        }
        Instruction::Volume(vs) => {
            for v in vs {
                map_insert(obj, "Volumes", v, json!({}));
            }
        }
        Instruction::Label(pairs) => {
            for (k, v) in pairs {
                map_insert(obj, "Labels", k, json!(v));
            }
        }
        Instruction::Maintainer(m) => map_insert(obj, "Labels", "maintainer", json!(m)),
        Instruction::Stopsignal(s) => {
            obj.insert("StopSignal".into(), json!(s));
        }
        Instruction::Shell(s) => {
            obj.insert("Shell".into(), strs(s));
        }
        Instruction::Healthcheck(Healthcheck::None) => {
            obj.insert("Healthcheck".into(), json!({"Test": ["NONE"]}));
        }
        Instruction::Healthcheck(Healthcheck::Cmd {
            command,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        }) => {
            let test: Vec<String> = match command {
                Command::Exec(v) => std::iter::once("CMD".to_string())
                    .chain(v.iter().cloned())
                    .collect(),
                Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            };
            let mut h = serde_json::Map::new();
            h.insert("Test".into(), strs(&test));
            let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
            for (k, v) in [
                ("Interval", ns(interval)),
                ("Timeout", ns(timeout)),
                ("StartPeriod", ns(start_period)),
                ("StartInterval", ns(start_interval)),
            ] {
                if let Some(v) = v {
                    h.insert(k.into(), json!(v));
                }
            }
            if let Some(r) = retries {
                h.insert("Retries".into(), json!(r));
            }
            obj.insert("Healthcheck".into(), Value::Object(h));
        }
        Instruction::Onbuild(node) => {
            let e = obj.entry("OnBuild").or_insert_with(|| json!([]));
            if !e.is_array() {
                *e = json!([]);
            }
            let text = node.text.trim().to_string();
            e.as_array_mut().expect("array").push(json!(text));
        }
        Instruction::From { .. }
        | Instruction::Run { .. }
        | Instruction::Copy(_)
        | Instruction::Add(_) => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar: &[u8]) -> Vec<(String, u32, u64)> {
        let mut ar = tar::Archive::new(tar);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                    e.header().uid().unwrap(),
                )
            })
            .collect()
    }

    fn spec<'a>(root: &'a Path, sources: &'a [String], dest: &'a str) -> CopySpec<'a> {
        CopySpec {
            root,
            sources,
            dest,
            dest_is_dir: false,
            ignore: None,
            owner: None,
            keep_owner: false,
            mode: None,
            extract: false,
        }
    }

    #[test]
    fn copy_semantics() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("dir/sub")).unwrap();
        fs::write(d.path().join("dir/a"), "a").unwrap();
        fs::write(d.path().join("dir/sub/b"), "b").unwrap();
        fs::write(d.path().join("f"), "f").unwrap();
        fs::write(d.path().join("secret"), "s").unwrap();
        let run = |s: &CopySpec<'_>| {
            let mut v = Vec::new();
            copy_tar(s, &mut v).unwrap();
            entries(&v).into_iter().map(|e| e.0).collect::<Vec<_>>()
        };
        let src = vec!["dir".to_string()];
        assert_eq!(
            run(&spec(d.path(), &src, "/app")),
            ["app/a", "app/sub/", "app/sub/b"]
        );
        let src = vec!["f".to_string()];
        assert_eq!(run(&spec(d.path(), &src, "/x/g")), ["x/g"]);
        assert_eq!(run(&spec(d.path(), &src, "/x/")), ["x/f"]);
        let mut s = spec(d.path(), &src, "/x");
        s.dest_is_dir = true;
        assert_eq!(run(&s), ["x/f"]);
        let src = vec!["f".to_string(), "dir/a".to_string()];
        let mut v = Vec::new();
        assert!(matches!(
            copy_tar(&spec(d.path(), &src, "/x"), &mut v),
            Err(CopyError::NotDir)
        ));
        let src = vec!["*".to_string()];
        let ig = DockerIgnore::parse("secret\n").unwrap();
        let mut s = spec(d.path(), &src, "/o/");
        s.ignore = Some(&ig);
        let got = run(&s);
        assert!(got.contains(&"o/f".to_string()) && !got.iter().any(|p| p.contains("secret")));
        let src = vec!["secret".to_string()];
        let mut s = spec(d.path(), &src, "/o/");
        s.ignore = Some(&ig);
        assert!(matches!(
            copy_tar(&s, &mut Vec::new()),
            Err(CopyError::NotFound(_))
        ));
        let src = vec!["../x".to_string()];
        assert!(matches!(
            copy_tar(&spec(d.path(), &src, "/"), &mut Vec::new()),
            Err(CopyError::Outside(_))
        ));
        // --chown and --chmod.
        let src = vec!["f".to_string()];
        let mut s = spec(d.path(), &src, "/f");
        s.owner = Some((7, 8));
        s.mode = Some(parse_chmod("640").unwrap());
        let mut v = Vec::new();
        copy_tar(&s, &mut v).unwrap();
        assert_eq!(entries(&v), [("f".to_string(), 0o640, 7)]);
    }

    #[test]
    fn add_extracts_archives() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, "in/x", &b"hi"[..]).unwrap();
        let raw = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        fs::write(d.path().join("a.tar.gz"), gz.finish().unwrap()).unwrap();
        let src = vec!["a.tar.gz".to_string()];
        let mut s = spec(d.path(), &src, "/opt");
        s.extract = true;
        let mut v = Vec::new();
        copy_tar(&s, &mut v).unwrap();
        assert_eq!(entries(&v)[0].0, "opt/in/x");
    }

    #[test]
    fn metadata() {
        let mut c = json!({"Cmd": ["sh"], "WorkingDir": "/a"});
        apply_metadata(&mut c, &Instruction::Workdir("b/".into()), &[]);
        assert_eq!(c["WorkingDir"], "/a/b");
        apply_metadata(
            &mut c,
            &Instruction::Entrypoint(Command::Shell("run".into())),
            &[],
        );
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "run"]));
        assert!(c["Cmd"].is_null());
        apply_metadata(&mut c, &Instruction::Expose(vec!["80".into()]), &[]);
        assert!(c["ExposedPorts"]["80/tcp"].is_object());
        apply_metadata(
            &mut c,
            &Instruction::Env(vec![]),
            &[("A".into(), "1".into())],
        );
        assert_eq!(c["Env"], json!(["A=1"]));
    }
}
