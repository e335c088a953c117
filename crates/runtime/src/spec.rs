//! Loading and checking a bundle's config.json, and the default spec.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilities, LinuxNamespaceType, Process, Spec,
};

use crate::error::{Error, Result};

/// Namespace types the runtime understands (`user` and `time` are refused for now).
pub(crate) const SUPPORTED_NAMESPACES: &[&str] =
    &["pid", "network", "mount", "ipc", "uts", "cgroup"];

/// A validated bundle: its spec and the absolute path of its root filesystem.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    /// The parsed config.json.
    pub spec: Spec,
    /// Absolute path of the root filesystem.
    pub rootfs: PathBuf,
}

impl Bundle {
    /// Read `<dir>/config.json` and check everything that can be checked before
    /// any process is started: the rootfs exists, the namespaces are known,
    /// the process has arguments.
    pub fn load(dir: &Path) -> Result<Self> {
        let dir =
            std::fs::canonicalize(dir).map_err(|_| Error::BundleMissing(dir.to_path_buf()))?;
        if !dir.is_dir() {
            return Err(Error::BundleMissing(dir));
        }
        let path = dir.join("config.json");
        let invalid = |reason: String| Error::InvalidConfig {
            path: path.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
        let spec = parse_spec(&text).map_err(invalid)?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| invalid("no \"root\" section".into()))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            dir.join(root.path())
        };
        if !rootfs.is_dir() {
            return Err(invalid(format!(
                "root.path {}: no such directory",
                rootfs.display()
            )));
        }
        Ok(Bundle { dir, spec, rootfs })
    }
}

/// Parse and check a runtime spec from JSON text. Errors name the problem
/// (with line and column for malformed JSON).
pub fn parse_spec(text: &str) -> std::result::Result<Spec, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let Some(namespaces) = value
        .pointer("/linux/namespaces")
        .and_then(|v| v.as_array())
    {
        for ns in namespaces {
            let typ = ns.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let known = LinuxNamespaceType::try_from(typ).is_ok();
            if !known {
                return Err(format!("unknown namespace type {typ:?}"));
            }
            if !SUPPORTED_NAMESPACES.contains(&canonical_ns_name(typ)) {
                return Err(format!("namespace type {typ:?} is not supported by berth"));
            }
        }
    }
    let spec: Spec = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| "no \"process\" section".to_string())?;
    check_process(process)?;
    check_uts(&spec)?;
    Ok(spec)
}

/// A hostname or domain name needs the container's own UTS namespace:
/// without one, setting it would rename the host (runc refuses the same).
fn check_uts(spec: &Spec) -> std::result::Result<(), String> {
    // Joining a namespace by path is private only if it is not our own (the host's).
    let own = std::fs::metadata("/proc/self/ns/uts").ok();
    let is_own = |path: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        match (&own, std::fs::metadata(path)) {
            (Some(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    };
    let private_uts = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == LinuxNamespaceType::Uts
                    && n.path()
                        .as_ref()
                        .is_none_or(|p| p.as_os_str().is_empty() || !is_own(p))
            })
        });
    let named = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    if !private_uts && (named(spec.hostname()) || named(spec.domainname())) {
        return Err(
            "unable to set the hostname or domainname without a private UTS namespace".into(),
        );
    }
    Ok(())
}

/// Check that a process has something to run.
pub fn check_process(process: &Process) -> std::result::Result<(), String> {
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => Ok(()),
        _ => Err("process.args is empty: nothing to run".into()),
    }
}

fn canonical_ns_name(typ: &str) -> &str {
    match typ {
        "net" => "network",
        "mnt" => "mount",
        other => other,
    }
}

/// The config.json written by `berth runtime spec`: like `runc spec` (a shell,
/// a terminal, the default mounts, masked and read-only paths, new pid,
/// network, ipc, uts, mount and cgroup namespaces, three capabilities, no new
/// privileges), plus berth's default seccomp profile.
pub fn default_spec() -> Spec {
    let mut spec = Spec::default();
    spec.set_hostname(Some("berth".into()));
    let caps: oci_spec::runtime::Capabilities = [
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_ambient(None);
    capabilities.set_inheritable(None);
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(true));
        process.set_args(Some(vec!["sh".into()]));
        process.set_capabilities(Some(capabilities));
        process.set_no_new_privileges(Some(true));
    }
    let linux = spec.linux().clone().unwrap_or_else(|| {
        LinuxBuilder::default()
            .build()
            .expect("an empty linux section always builds")
    });
    let mut linux = linux;
    linux.set_seccomp(Some(crate::seccomp::default_profile()));
    spec.set_linux(Some(linux));
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_namespace_is_named() {
        let text = r#"{"ociVersion":"1.0.2","process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}},
            "root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"},{"type":"bogus"}]}}"#;
        let err = parse_spec(text).unwrap_err();
        assert!(err.contains("unknown namespace type \"bogus\""), "{err}");
    }

    #[test]
    fn malformed_json_has_position() {
        let err = parse_spec("{\"ociVersion\": ").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn empty_args_refused() {
        let text = r#"{"ociVersion":"1.0.2","process":{"cwd":"/","args":[],"user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#;
        assert!(parse_spec(text).unwrap_err().contains("nothing to run"));
    }

    #[test]
    fn default_spec_round_trips() {
        let spec = default_spec();
        let text = serde_json::to_string(&spec).unwrap();
        let back = parse_spec(&text).unwrap();
        assert_eq!(back.hostname().as_deref(), Some("berth"));
        assert!(back.linux().as_ref().unwrap().seccomp().is_some());
    }

    #[test]
    fn a_hostname_without_a_uts_namespace_is_refused() {
        let mut spec = default_spec();
        let mut linux = spec.linux().clone().unwrap();
        let namespaces = linux.namespaces().clone().unwrap();
        linux.set_namespaces(Some(
            namespaces
                .into_iter()
                .filter(|n| n.typ() != LinuxNamespaceType::Uts)
                .collect(),
        ));
        spec.set_linux(Some(linux));
        let text = serde_json::to_string(&spec).unwrap();
        assert!(parse_spec(&text).unwrap_err().contains("UTS namespace"));
        spec.set_hostname(None);
        parse_spec(&serde_json::to_string(&spec).unwrap()).unwrap();
        // Joining the host's own UTS namespace by path is no private one either.
        spec.set_hostname(Some("x".into()));
        let mut linux = spec.linux().clone().unwrap();
        let mut namespaces = linux.namespaces().clone().unwrap();
        let mut uts = oci_spec::runtime::LinuxNamespace::default();
        uts.set_typ(LinuxNamespaceType::Uts);
        uts.set_path(Some("/proc/self/ns/uts".into()));
        namespaces.push(uts);
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        let text = serde_json::to_string(&spec).unwrap();
        assert!(parse_spec(&text).unwrap_err().contains("UTS namespace"));
    }
}
