//! `-v` and `--mount` specs, parsed as Docker parses them, and turned into
//! OCI mounts.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;
use serde::{Deserialize, Serialize};

use crate::{check_name, Error, Result};

/// What a mount mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named or anonymous volume.
    Volume,
    /// A host path.
    Bind,
    /// A fresh tmpfs.
    Tmpfs,
}

impl MountKind {
    /// Docker's name (`volume`, `bind`, `tmpfs`).
    pub fn as_str(&self) -> &'static str {
        match self {
            MountKind::Volume => "volume",
            MountKind::Bind => "bind",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// One mount a container asked for (kept in its record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Volume, bind or tmpfs.
    pub kind: MountKind,
    /// Volume name (empty for an anonymous volume not yet named), host
    /// path for a bind, empty for a tmpfs.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mounted read-only.
    pub readonly: bool,
    /// Bind propagation (empty: `rprivate`).
    #[serde(default)]
    pub propagation: String,
    /// `nocopy` / `volume-nocopy`: no copy-up of image content.
    #[serde(default)]
    pub nocopy: bool,
    /// `volume-opt=` for a volume created by this mount.
    #[serde(default)]
    pub volume_options: BTreeMap<String, String>,
    /// `volume-label=` for a volume created by this mount.
    #[serde(default)]
    pub volume_labels: BTreeMap<String, String>,
    /// `tmpfs-size=` in bytes.
    #[serde(default)]
    pub tmpfs_size: Option<u64>,
    /// `tmpfs-mode=`.
    #[serde(default)]
    pub tmpfs_mode: Option<u32>,
    /// `-v /host:/path`: a missing host directory is created (`--mount`
    /// instead refuses a missing source).
    #[serde(default)]
    pub create_host_dir: bool,
    /// `bind-nonrecursive`: a plain bind, not rbind.
    #[serde(default)]
    pub nonrecursive: bool,
    /// An anonymous volume (removed with the container by `rm -v`).
    #[serde(default)]
    pub anonymous: bool,
    /// Docker's `Mode` for inspect (the `-v` mode string, `z` for volumes).
    #[serde(default)]
    pub mode: String,
}

impl MountSpec {
    fn new(kind: MountKind, source: &str, target: &str) -> MountSpec {
        MountSpec {
            kind,
            source: source.to_string(),
            target: target.to_string(),
            readonly: false,
            propagation: String::new(),
            nocopy: false,
            volume_options: BTreeMap::new(),
            volume_labels: BTreeMap::new(),
            tmpfs_size: None,
            tmpfs_mode: None,
            create_host_dir: false,
            nonrecursive: false,
            anonymous: false,
            mode: String::new(),
        }
    }

    /// The target, cleaned (`/a/./b/` is `/a/b`), for comparing destinations.
    pub fn clean_target(&self) -> PathBuf {
        clean(&self.target)
    }

    /// Docker's `Propagation` for inspect.
    pub fn propagation_name(&self) -> &str {
        match (self.kind, self.propagation.as_str()) {
            (MountKind::Bind, "") => "rprivate",
            (_, p) => p,
        }
    }

    /// The OCI mount; `host` is the host path to bind (a volume's data or
    /// the bind source; unused for a tmpfs).
    pub fn to_oci(&self, host: &Path) -> Mount {
        let mut m = Mount::default();
        m.set_destination(clean(&self.target));
        let mut options: Vec<String> = Vec::new();
        match self.kind {
            MountKind::Tmpfs => {
                m.set_typ(Some("tmpfs".into()));
                m.set_source(Some(PathBuf::from("tmpfs")));
                options.extend(["nosuid", "nodev", "noexec"].map(String::from));
                if let Some(size) = self.tmpfs_size {
                    options.push(format!("size={size}"));
                }
                if let Some(mode) = self.tmpfs_mode {
                    options.push(format!("mode={mode:o}"));
                }
            }
            MountKind::Volume | MountKind::Bind => {
                m.set_typ(Some("bind".into()));
                m.set_source(Some(host.to_path_buf()));
                options.push(if self.nonrecursive { "bind" } else { "rbind" }.into());
                options.push(if self.propagation.is_empty() {
                    "rprivate".to_string()
                } else {
                    self.propagation.clone()
                });
            }
        }
        if self.readonly {
            options.push("ro".into());
        }
        m.set_options(Some(options));
        m
    }

    /// Checks that need the host: a `--mount` bind source must exist.
    pub fn check_host(&self) -> Result<()> {
        if self.kind == MountKind::Bind
            && !self.create_host_dir
            && std::fs::symlink_metadata(&self.source).is_err()
        {
            return Err(Error::Invalid(format!(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                self.source
            )));
        }
        Ok(())
    }
}

/// Lexically clean an absolute path.
fn clean(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn check_target(raw: &str, what: &str, target: &str) -> Result<()> {
    if target.is_empty() {
        return Err(Error::Invalid(format!(
            "invalid {what} {raw:?}: the target (path in the container) is required"
        )));
    }
    if !target.starts_with('/') {
        return Err(Error::Invalid(format!(
            "invalid {what} {raw:?}: invalid mount path {target:?}: mount path must be absolute"
        )));
    }
    if clean(target) == Path::new("/") {
        return Err(Error::Invalid(format!(
            "invalid {what} {raw:?}: the destination cannot be /"
        )));
    }
    Ok(())
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// `-v [SOURCE:]TARGET[:MODE]`, as Docker on Linux: SOURCE is a volume name
/// or an absolute host path (`./x` and `../x` are taken from `cwd`); no
/// SOURCE is an anonymous volume; MODE is a comma list of `ro`/`rw`,
/// `z`/`Z`, `nocopy` and one propagation.
pub fn parse_volume_flag(raw: &str, cwd: &Path) -> Result<MountSpec> {
    let spec_err = |why: &str| {
        Error::Invalid(format!(
            "invalid volume specification: {raw:?}{}{why}",
            if why.is_empty() { "" } else { ": " }
        ))
    };
    let parts: Vec<&str> = raw.split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(spec_err(
            "use [NAME|/HOST/PATH:]/CONTAINER/PATH[:ro|rw], with no empty parts",
        ));
    }
    let (source, target, mode) = match parts.as_slice() {
        [t] => ("", *t, ""),
        [a, b] if valid_mode(b) && a.starts_with('/') && !b.starts_with('/') => ("", *a, *b),
        [s, t] => (*s, *t, ""),
        [s, t, m] => (*s, *t, *m),
        _ => return Err(spec_err("")),
    };
    if !valid_mode(mode) {
        return Err(spec_err(&format!(
            "invalid mode {mode:?}: use ro, rw, z, Z, nocopy or a propagation (rprivate, rshared, rslave, ...)"
        )));
    }
    check_target(raw, "volume specification", target)?;
    let source = if source == "." || source.starts_with("./") || source.starts_with("../") {
        cwd.join(source).to_string_lossy().into_owned()
    } else {
        source.to_string()
    };
    let kind = if source.starts_with('/') {
        MountKind::Bind
    } else {
        MountKind::Volume
    };
    let mut m = MountSpec::new(kind, &source, target);
    m.mode = mode.to_string();
    for flag in mode.split(',').filter(|f| !f.is_empty()) {
        match flag {
            "ro" => m.readonly = true,
            "rw" | "z" | "Z" => {}
            "nocopy" => m.nocopy = true,
            p => m.propagation = p.to_string(),
        }
    }
    match kind {
        MountKind::Bind => {
            if m.nocopy {
                return Err(spec_err("nocopy applies to volumes, not to host paths"));
            }
            m.create_host_dir = true;
            m.source = clean(&source).to_string_lossy().into_owned();
        }
        _ => {
            if !m.propagation.is_empty() {
                return Err(spec_err(
                    "a propagation mode applies to host paths, not to volumes",
                ));
            }
            if source.is_empty() {
                m.anonymous = true;
            } else {
                check_name(&source)?;
            }
            if m.mode.is_empty() {
                m.mode = "z".into();
            }
        }
    }
    Ok(m)
}

fn valid_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let (mut rw, mut label, mut prop, mut copy) = (0, 0, 0, 0);
    for f in mode.split(',') {
        match f {
            "ro" | "rw" => rw += 1,
            "z" | "Z" => label += 1,
            "nocopy" => copy += 1,
            p if PROPAGATIONS.contains(&p) => prop += 1,
            _ => return false,
        }
    }
    rw <= 1 && label <= 1 && prop <= 1 && copy <= 1
}

/// A boolean as Go's `strconv.ParseBool` reads it, as Docker's and BuildKit's
/// flag parsers do: `1`, `t`, `T`, `true`, `TRUE`, `True` and their false forms.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A `--mount` boolean option: alone it means true.
fn parse_bool(raw: &str, key: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None => Ok(true),
        Some(v) => parse_go_bool(v).ok_or_else(|| {
            Error::Invalid(format!(
                "invalid --mount {raw:?}: invalid value {v:?} for {key}: use true or false"
            ))
        }),
    }
}

/// Parse a size as Docker's `RAMInBytes` does: a number (decimals allowed)
/// with an optional unit `b`, `k`, `m`, `g`, `t` or `p` (case-insensitive,
/// units of 1024, an optional trailing `b` or `ib`, one space allowed before
/// the unit): "64m", "1g", "512k", "1024" (bytes), "1.5GiB". `None` for
/// anything else and for sizes of 2^63 bytes or more.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    // As Go's ParseFloat: "5", "5.", ".5"; not "." or "1.2.3".
    if !num.bytes().any(|b| b.is_ascii_digit()) || num.matches('.').count() > 1 {
        return None;
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut chars = unit.chars();
    let pow = match chars.next() {
        None => 0,
        Some('b') if chars.as_str().is_empty() => 0,
        Some(c) => {
            let pow = "kmgtp".find(c)? as i32 + 1;
            // A trailing `b` or `ib` only after a unit letter: "64mb", "1GiB".
            if !matches!(chars.as_str(), "" | "b" | "ib") {
                return None;
            }
            pow
        }
    };
    let bytes = num.parse::<f64>().ok()? * 1024f64.powi(pow);
    (bytes.is_finite() && bytes < i64::MAX as f64).then_some(bytes as u64)
}

/// `--mount type=volume|bind|tmpfs,source=,target=,...` as Docker parses it.
pub fn parse_mount_flag(raw: &str) -> Result<MountSpec> {
    let bad = |why: String| Error::Invalid(format!("invalid --mount {raw:?}: {why}"));
    let mut kind = MountKind::Volume;
    let mut source = String::new();
    let mut target = String::new();
    let mut m = MountSpec::new(MountKind::Volume, "", "");
    let mut seen: Vec<&str> = Vec::new();
    for field in raw.split(',') {
        if field.is_empty() {
            return Err(bad("empty field".into()));
        }
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v)),
            None => (field.trim(), None),
        };
        let key_lc = key.to_ascii_lowercase();
        let need = |v: Option<&str>| -> Result<String> {
            match v {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(bad(format!("{key} needs a value ({key}=...)"))),
            }
        };
        match key_lc.as_str() {
            "type" => {
                kind = match need(value)?.as_str() {
                    "volume" => MountKind::Volume,
                    "bind" => MountKind::Bind,
                    "tmpfs" => MountKind::Tmpfs,
                    other => {
                        return Err(bad(format!(
                            "unknown mount type {other:?}: use volume, bind or tmpfs"
                        )))
                    }
                }
            }
            "source" | "src" => source = need(value)?,
            "target" | "destination" | "dst" => target = need(value)?,
            "readonly" | "ro" => m.readonly = parse_bool(raw, key, value)?,
            "volume-nocopy" => {
                seen.push("volume-nocopy");
                m.nocopy = parse_bool(raw, key, value)?
            }
            "volume-opt" | "volume-label" => {
                seen.push(if key_lc == "volume-opt" {
                    "volume-opt"
                } else {
                    "volume-label"
                });
                let v = need(value)?;
                let (k, val) = v.split_once('=').unwrap_or((v.as_str(), ""));
                if k.is_empty() {
                    return Err(bad(format!("{key} needs KEY=VALUE")));
                }
                let map = if key_lc == "volume-opt" {
                    &mut m.volume_options
                } else {
                    &mut m.volume_labels
                };
                map.insert(k.to_string(), val.to_string());
            }
            "volume-driver" => {
                seen.push("volume-driver");
                let d = need(value)?;
                if d != "local" {
                    return Err(bad(format!(
                        "volume driver {d:?} is not available: berth has the local driver"
                    )));
                }
            }
            "bind-propagation" => {
                seen.push("bind-propagation");
                let p = need(value)?;
                if !PROPAGATIONS.contains(&p.as_str()) {
                    return Err(bad(format!(
                        "invalid bind-propagation {p:?}: use one of {}",
                        PROPAGATIONS.join(", ")
                    )));
                }
                m.propagation = p;
            }
            "bind-nonrecursive" => {
                seen.push("bind-nonrecursive");
                m.nonrecursive = parse_bool(raw, key, value)?
            }
            "tmpfs-size" => {
                seen.push("tmpfs-size");
                let v = need(value)?;
                m.tmpfs_size = Some(
                    parse_bytes(&v)
                        .ok_or_else(|| bad(format!("invalid tmpfs-size {v:?}: use e.g. 64m")))?,
                );
            }
            "tmpfs-mode" => {
                seen.push("tmpfs-mode");
                let v = need(value)?;
                m.tmpfs_mode = Some(
                    u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            bad(format!("invalid tmpfs-mode {v:?}: use octal, e.g. 1777"))
                        })?,
                );
            }
            "consistency" => {}
            _ => {
                return Err(bad(format!(
                    "unexpected key {key:?} in {field:?}; known keys: type, source, target, readonly, volume-opt, volume-label, volume-nocopy, bind-propagation, bind-nonrecursive, tmpfs-size, tmpfs-mode"
                )))
            }
        }
    }
    for key in seen {
        let ok = match kind {
            MountKind::Volume => key.starts_with("volume-"),
            MountKind::Bind => key.starts_with("bind-"),
            MountKind::Tmpfs => key.starts_with("tmpfs-"),
        };
        if !ok {
            return Err(bad(format!(
                "{key} cannot be used with type={}",
                kind.as_str()
            )));
        }
    }
    check_target(raw, "--mount", &target)?;
    m.kind = kind;
    m.target = target;
    match kind {
        MountKind::Bind => {
            if source.is_empty() {
                return Err(bad(
                    "invalid mount config for type \"bind\": field Source must not be empty".into(),
                ));
            }
            if !source.starts_with('/') {
                return Err(bad(format!(
                    "invalid bind source {source:?}: use an absolute host path"
                )));
            }
            m.source = clean(&source).to_string_lossy().into_owned();
        }
        MountKind::Tmpfs => {
            if !source.is_empty() {
                return Err(bad("a tmpfs mount takes no source".into()));
            }
        }
        MountKind::Volume => {
            if source.is_empty() {
                m.anonymous = true;
            } else {
                check_name(&source)?;
                m.source = source;
            }
            m.mode = "z".into();
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(raw: &str) -> Result<MountSpec> {
        parse_volume_flag(raw, Path::new("/cwd"))
    }

    #[test]
    fn volume_flags() {
        let m = v("data:/var/lib/x").unwrap();
        assert_eq!(
            (m.kind, m.source.as_str(), m.readonly),
            (MountKind::Volume, "data", false)
        );
        let m = v("data:/x:ro").unwrap();
        assert!(m.readonly);
        let m = v("/host/dir/:/x:rw").unwrap();
        assert_eq!((m.kind, m.source.as_str()), (MountKind::Bind, "/host/dir"));
        assert!(m.create_host_dir);
        let m = v("/anon").unwrap();
        assert!(m.anonymous);
        assert_eq!(m.kind, MountKind::Volume);
        let m = v("/anon:ro").unwrap();
        assert!(m.anonymous && m.readonly);
        let m = v("./rel:/x").unwrap();
        assert_eq!(m.source, "/cwd/rel");
        let m = v("/h:/x:ro,rshared").unwrap();
        assert_eq!(m.propagation, "rshared");
        for bad in [
            "",
            "rel",
            "data:rel",
            ":/x",
            "/x:",
            "a::/x",
            "/a:/b:ro:rw",
            "data:/x:bogus",
            "data:/x:ro,rw",
            "x:/y",
            "bad name:/x",
            "data:/",
            "data:/x:rshared",
            "/h:/x:nocopy",
        ] {
            let err = v(bad).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{bad}: {err}");
            assert!(v(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_flags() {
        let m =
            parse_mount_flag("type=bind,src=/h,dst=/x,readonly,bind-propagation=rslave").unwrap();
        assert_eq!(
            (m.kind, m.source.as_str(), m.target.as_str()),
            (MountKind::Bind, "/h", "/x")
        );
        assert!(m.readonly);
        assert!(!m.create_host_dir);
        let oci = m.to_oci(Path::new("/h"));
        assert_eq!(
            oci.options().clone().unwrap(),
            vec!["rbind".to_string(), "rslave".into(), "ro".into()]
        );
        let m = parse_mount_flag("source=vol,target=/data,volume-nocopy,volume-opt=type=tmpfs")
            .unwrap();
        assert_eq!(m.kind, MountKind::Volume);
        assert!(m.nocopy);
        assert_eq!(
            m.volume_options.get("type").map(String::as_str),
            Some("tmpfs")
        );
        let m =
            parse_mount_flag("type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770").unwrap();
        let oci = m.to_oci(Path::new(""));
        assert_eq!(oci.typ().as_deref(), Some("tmpfs"));
        let opts = oci.options().clone().unwrap();
        assert!(opts.contains(&"size=1048576".to_string()), "{opts:?}");
        assert!(opts.contains(&"mode=1770".to_string()), "{opts:?}");
        let m = parse_mount_flag("type=volume,target=/anon").unwrap();
        assert!(m.anonymous);
        // Booleans as Go's ParseBool reads them, as Docker's --mount does.
        for (flag, ro) in [
            ("ro", true),
            ("readonly=t", true),
            ("ro=TRUE", true),
            ("readonly=1", true),
            ("readonly=f", false),
            ("ro=False", false),
            ("readonly=0", false),
        ] {
            let m = parse_mount_flag(&format!("type=volume,source=vol,target=/x,{flag}")).unwrap();
            assert_eq!(m.readonly, ro, "{flag}");
        }
        for bad in [
            "type=bind,target=/x",
            "type=bind,source=rel,target=/x",
            "type=volume,source=v,target=rel",
            "type=volume,source=v",
            "type=volume,source=v,target=/x,foo=bar",
            "type=weird,target=/x",
            "type=tmpfs,source=x,target=/x",
            "type=tmpfs,target=/x,volume-nocopy",
            "type=bind,source=/h,target=/x,tmpfs-size=1m",
            "type=tmpfs,target=/x,tmpfs-size=lots",
            "type=volume,source=v,target=/x,readonly=maybe",
            "type=volume,source=v,,target=/x",
        ] {
            let err = parse_mount_flag(bad).unwrap_err().to_string();
            assert!(!err.contains('\n'), "{bad}: {err}");
        }
    }

    #[test]
    fn bytes() {
        assert_eq!(parse_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_bytes("1G"), Some(1 << 30));
        assert_eq!(parse_bytes("512kb"), Some(512 << 10));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("x"), None);
        for (s, n) in [
            ("0", 0),
            ("64M", 64 << 20),
            ("64MiB", 64 << 20),
            ("1.5g", 3 << 29),
            ("2t", 2 << 40),
            ("100b", 100),
            ("64 m", 64 << 20),
            (".5m", 1 << 19),
            ("5.k", 5 << 10),
        ] {
            assert_eq!(parse_bytes(s), Some(n), "{s}");
        }
        for s in [
            "", "12x", "-1", "m", ".", ".m", "1.2.3", "1bb", "64mbb", "1kk", "1ib", "9000000p",
        ] {
            assert_eq!(parse_bytes(s), None, "{s:?} accepted");
        }
    }
}
