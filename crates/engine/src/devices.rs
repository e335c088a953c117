//! `--device`, `--device-cgroup-rule` and `--privileged` as device nodes
//! (`linux.devices`) and device cgroup rules (`linux.resources.devices`).
//!
//! As Docker's: a container may use no device but the runtime's defaults
//! (null, zero, full, random, urandom, tty, the ptys) unless it is
//! privileged (every device) or is given one: `--device HOST[:CONTAINER][:PERMS]`
//! creates the host's node (a directory: every device under it) in the
//! container and allows PERMS (`rwm` by default) on it;
//! `--device-cgroup-rule 'c 42:* rmw'` only allows.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::spec::{invalid, SpecError};

fn rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(typ));
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

fn valid_perms(p: &str) -> bool {
    !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
}

/// One `--device` flag, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFlag {
    /// The host path.
    pub host: PathBuf,
    /// The path in the container.
    pub container: PathBuf,
    /// `r`, `w`, `m` in any combination.
    pub perms: String,
}

/// Split `HOST[:CONTAINER][:PERMS]`.
pub fn parse_device_flag(s: &str) -> Result<DeviceFlag, SpecError> {
    let bad = |why: &str| invalid("--device", s, why);
    let parts: Vec<&str> = s.split(':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, p] if valid_perms(p) => (*h, *h, *p),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => return Err(bad("use HOST[:CONTAINER][:PERMS]")),
    };
    if !valid_perms(perms) {
        return Err(bad("permissions are r, w and m"));
    }
    for p in [host, container] {
        if !p.starts_with('/') {
            return Err(bad("device paths must be absolute"));
        }
    }
    Ok(DeviceFlag {
        host: host.into(),
        container: container.into(),
        perms: perms.to_string(),
    })
}

/// Parse `TYPE MAJOR:MINOR PERMS` (`c 1:3 rwm`, `a *:* m`, `b 8:* r`).
pub fn parse_cgroup_rule(s: &str) -> Result<LinuxDeviceCgroup, SpecError> {
    let bad = || {
        invalid(
            "--device-cgroup-rule",
            s,
            "use TYPE MAJOR:MINOR PERMS, like 'c 42:* rmw'",
        )
    };
    let fields: Vec<&str> = s.split_whitespace().collect();
    let [typ, numbers, perms] = fields.as_slice() else {
        return Err(bad());
    };
    let typ = match *typ {
        "a" => LinuxDeviceType::A,
        "c" => LinuxDeviceType::C,
        "b" => LinuxDeviceType::B,
        _ => return Err(bad()),
    };
    let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
    let number = |n: &str| -> Result<Option<i64>, SpecError> {
        match n {
            "*" => Ok(None),
            n => n.parse::<u32>().map(|n| Some(n as i64)).map_err(|_| bad()),
        }
    };
    if !valid_perms(perms) {
        return Err(bad());
    }
    Ok(rule(true, typ, number(major)?, number(minor)?, perms))
}

/// The device node at `path` on the host, as it is to appear at `target`.
fn node(path: &Path, target: &Path) -> std::io::Result<Option<LinuxDevice>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path)?;
    let typ = if meta.file_type().is_char_device() {
        LinuxDeviceType::C
    } else if meta.file_type().is_block_device() {
        LinuxDeviceType::B
    } else {
        return Ok(None);
    };
    let rdev = meta.rdev();
    let mut d = LinuxDevice::default();
    d.set_path(target.to_path_buf());
    d.set_typ(typ);
    d.set_major(nix::sys::stat::major(rdev) as i64);
    d.set_minor(nix::sys::stat::minor(rdev) as i64);
    d.set_file_mode(Some(meta.mode() & 0o777));
    d.set_uid(Some(meta.uid()));
    d.set_gid(Some(meta.gid()));
    Ok(Some(d))
}

/// The nodes one `--device` names: the host path's, or every device under
/// a directory (at the same relative path under the container path).
fn nodes_of(flag: &DeviceFlag, shown: &str) -> Result<Vec<LinuxDevice>, SpecError> {
    let gather = |e: std::io::Error| {
        invalid(
            "--device",
            shown,
            &format!("error gathering device information: {e}"),
        )
    };
    let meta = std::fs::metadata(&flag.host).map_err(gather)?;
    if !meta.is_dir() {
        return node(&flag.host, &flag.container)
            .map_err(gather)?
            .map(|d| vec![d])
            .ok_or_else(|| invalid("--device", shown, "not a device node"));
    }
    let mut out = Vec::new();
    let mut stack = vec![flag.host.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(gather)?.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if !kind.is_symlink() {
                let rel = path.strip_prefix(&flag.host).unwrap_or(&path);
                if let Ok(Some(d)) = node(&path, &flag.container.join(rel)) {
                    out.push(d);
                }
            }
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

/// The device nodes and cgroup rules for a container: deny all (allow all
/// when privileged), then each `--device`'s nodes with their permissions,
/// then each `--device-cgroup-rule`.
pub fn devices_and_rules(
    privileged: bool,
    devices: &[String],
    cgroup_rules: &[String],
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let mut nodes = Vec::new();
    let mut rules = vec![rule(privileged, LinuxDeviceType::A, None, None, "rwm")];
    for s in devices {
        let flag = parse_device_flag(s)?;
        for d in nodes_of(&flag, s)? {
            rules.push(rule(
                true,
                d.typ(),
                Some(d.major()),
                Some(d.minor()),
                &flag.perms,
            ));
            nodes.push(d);
        }
    }
    for s in cgroup_rules {
        rules.push(parse_cgroup_rule(s)?);
    }
    Ok((nodes, rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_split_as_docker() {
        let f = parse_device_flag("/dev/fuse").unwrap();
        assert_eq!(
            (f.container.to_str(), f.perms.as_str()),
            (Some("/dev/fuse"), "rwm")
        );
        let f = parse_device_flag("/dev/fuse:r").unwrap();
        assert_eq!(
            (f.container.to_str(), f.perms.as_str()),
            (Some("/dev/fuse"), "r")
        );
        let f = parse_device_flag("/dev/sdc:/dev/xvdc:rw").unwrap();
        assert_eq!(
            (f.container.to_str(), f.perms.as_str()),
            (Some("/dev/xvdc"), "rw")
        );
        assert!(parse_device_flag("/dev/a:/dev/b:rx").is_err());
        assert!(parse_device_flag("dev/a").is_err());
        assert!(parse_device_flag("/a:/b:r:w").is_err());
    }

    #[test]
    fn cgroup_rules_parse() {
        let r = parse_cgroup_rule("c 42:* rmw").unwrap();
        assert_eq!(
            (r.major(), r.minor(), r.access().as_deref()),
            (Some(42), None, Some("rmw"))
        );
        assert!(parse_cgroup_rule("x 1:2 r").is_err());
        assert!(parse_cgroup_rule("c 1 r").is_err());
        assert!(parse_cgroup_rule("c 1:2 q").is_err());
    }

    #[test]
    fn nodes_and_rules() {
        let (nodes, rules) =
            devices_and_rules(false, &["/dev/null:/dev/mynull:r".into()], &[]).unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].path(), Path::new("/dev/mynull"));
        assert_eq!((nodes[0].major(), nodes[0].minor()), (1, 3));
        assert!(!rules[0].allow());
        assert_eq!(rules[1].access().as_deref(), Some("r"));
        let (_, rules) = devices_and_rules(true, &[], &[]).unwrap();
        assert!(rules[0].allow());
        let err = devices_and_rules(false, &["/dev/no-such-device".into()], &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("error gathering device information"),
            "{err}"
        );
        let err = devices_and_rules(false, &["/etc/hostname".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("not a device"), "{err}");
    }
}
