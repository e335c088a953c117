//! The `local` driver's options: `type=`, `device=`, `o=` (as mount(8)'s
//! `-t`, device and `-o`), e.g. `type=tmpfs device=tmpfs o=size=64m` or
//! `type=none device=/path o=bind`.

use std::collections::BTreeMap;
use std::path::Path;

use nix::mount::MsFlags;

use crate::{errno, Error, Result};

const KEYS: &[&str] = &["type", "device", "o"];

/// Refuse options the local driver does not know, and half-given ones.
pub(crate) fn validate_options(opts: &BTreeMap<String, String>) -> Result<()> {
    for k in opts.keys() {
        if !KEYS.contains(&k.as_str()) {
            return Err(Error::Invalid(format!(
                "invalid option: {k:?}: the local driver takes type=, device= and o="
            )));
        }
    }
    let has = |k: &str| opts.get(k).is_some_and(|v| !v.is_empty());
    if has("type") != has("device") {
        return Err(Error::Invalid(
            "the local driver needs both type= and device= (e.g. --opt type=tmpfs --opt device=tmpfs)".into(),
        ));
    }
    if !has("type") && has("o") {
        return Err(Error::Invalid(
            "the local driver's o= needs type= and device=".into(),
        ));
    }
    let (_, _, bind) = split_options(opts.get("o").map(String::as_str).unwrap_or(""));
    if bind {
        let device = opts.get("device").map(String::as_str).unwrap_or("");
        if !device.starts_with('/') {
            return Err(Error::Invalid(format!(
                "invalid device {device:?} for a bind volume: use an absolute host path"
            )));
        }
    }
    Ok(())
}

/// Whether a volume's options ask for a filesystem mounted on its data.
pub(crate) fn needs_mount(opts: &BTreeMap<String, String>) -> bool {
    opts.get("type").is_some_and(|t| !t.is_empty())
}

/// mount(8)-style `o=`: flags, filesystem data, and whether it is a bind.
fn split_options(o: &str) -> (MsFlags, String, bool) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut bind = false;
    for opt in o.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let f = match opt {
            "ro" => MsFlags::MS_RDONLY,
            "rw" | "defaults" => MsFlags::empty(),
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "sync" => MsFlags::MS_SYNCHRONOUS,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            "suid" | "dev" | "exec" | "async" | "atime" => MsFlags::empty(),
            "bind" => {
                bind = true;
                MsFlags::MS_BIND
            }
            "rbind" => {
                bind = true;
                MsFlags::MS_BIND | MsFlags::MS_REC
            }
            other => {
                data.push(other.to_string());
                MsFlags::empty()
            }
        };
        flags |= f;
    }
    (flags, data.join(","), bind)
}

/// Mount the volume's filesystem on `target` (its `_data`).
pub(crate) fn mount(opts: &BTreeMap<String, String>, target: &Path) -> Result<()> {
    let typ = opts.get("type").map(String::as_str).unwrap_or("none");
    let device = opts.get("device").map(String::as_str).unwrap_or("none");
    let (flags, data, bind) = split_options(opts.get("o").map(String::as_str).unwrap_or(""));
    if bind {
        let meta = std::fs::metadata(device).map_err(crate::io(format!(
            "volume device {device}: the bind source must exist"
        )))?;
        if !meta.is_dir() {
            return Err(Error::Invalid(format!(
                "volume device {device} is not a directory"
            )));
        }
        nix::mount::mount(
            Some(device),
            target,
            None::<&str>,
            flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(errno(format!("bind {device} on {}", target.display())))?;
        let extra = flags - MsFlags::MS_BIND - MsFlags::MS_REC;
        if !extra.is_empty() {
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                None::<&str>,
            )
            .map_err(errno(format!("remount {}", target.display())))?;
        }
    } else {
        let fstype = if typ == "none" { None } else { Some(typ) };
        let data = (!data.is_empty()).then_some(data.as_str());
        nix::mount::mount(Some(device), target, fstype, flags, data).map_err(errno(format!(
            "mount {device} (type {typ}) on {}",
            target.display()
        )))?;
    }
    // Keep it out of other mount namespaces' propagation.
    let _ = nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    );
    Ok(())
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(n) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether something is mounted on `path` in this mount namespace.
pub(crate) fn is_mounted(path: &Path) -> bool {
    let Some(p) = path.to_str() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            m.lines()
                .any(|l| l.split(' ').nth(4).map(unescape).as_deref() == Some(p))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options() {
        assert!(validate_options(&opts(&[])).is_ok());
        assert!(validate_options(&opts(&[
            ("type", "tmpfs"),
            ("device", "tmpfs"),
            ("o", "size=64m")
        ]))
        .is_ok());
        assert!(
            validate_options(&opts(&[("type", "none"), ("device", "/x"), ("o", "bind")])).is_ok()
        );
        assert!(validate_options(&opts(&[("type", "tmpfs")])).is_err());
        assert!(validate_options(&opts(&[("foo", "bar")])).is_err());
        assert!(
            validate_options(&opts(&[("type", "none"), ("device", "rel"), ("o", "bind")])).is_err()
        );
        let (f, d, b) = split_options("size=64m,ro,uid=1000");
        assert_eq!(f, MsFlags::MS_RDONLY);
        assert_eq!(d, "size=64m,uid=1000");
        assert!(!b);
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
