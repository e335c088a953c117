//! Container state on disk: one directory per container under the runtime root.
//!
//! `<root>/<id>/state.json` holds the [`Record`]; `<root>/<id>/config.json` a
//! copy of the spec; `<root>/<id>/start.sock` exists while the container is
//! created but not started (its init waits on it). The status is derived
//! from these and from the init process, never stored, so it cannot go stale.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SysContext};

/// The runtime-spec's container statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The container is being created.
    Creating,
    /// Created: init waits for `start`.
    Created,
    /// The user process runs.
    Running,
    /// The process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        };
        f.pad(s)
    }
}

/// What the runtime remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init.
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot, to detect pid reuse.
    pub pid_start: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Where the container's cgroup was created.
    pub cgroup: crate::cgroups::CgroupLocation,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// The state the runtime-spec's `state` operation reports (plus runc's extra fields).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Version of the runtime spec.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Current status.
    pub status: Status,
    /// Host pid of init (0 once stopped).
    pub pid: i32,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Annotations of the spec.
    pub annotations: HashMap<String, String>,
}

/// Check a container id: non-empty, at most 1024 chars of `[A-Za-z0-9_.-]`, not `.`/`..`.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

/// The directory of one container under the runtime root.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    /// `<root>/<id>`.
    pub path: PathBuf,
}

impl ContainerDir {
    /// The directory for `id` under `root` (not created).
    pub fn new(root: &Path, id: &str) -> Result<Self> {
        check_id(id)?;
        Ok(ContainerDir {
            path: root.join(id),
        })
    }

    /// Create the directory; fails with [`Error::Exists`] if another container has it.
    pub fn create(&self, id: &str) -> Result<()> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)
                .ctx(|| format!("create runtime root {}", parent.display()))?;
        }
        // Private (as runc's): the saved spec holds the process's environment,
        // which may carry secrets (a build's `RUN --mount=type=secret,env=`).
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Exists(id.to_string()))
            }
            Err(e) => Err(e).ctx(|| format!("create {}", self.path.display())),
        }
    }

    /// Path of the state record.
    pub fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }

    /// Path of the saved spec.
    pub fn config_file(&self) -> PathBuf {
        self.path.join("config.json")
    }

    /// Path of the socket init waits on until `start`.
    pub fn start_socket(&self) -> PathBuf {
        self.path.join("start.sock")
    }

    /// Write the record atomically (temp file, fsync, rename).
    pub fn save(&self, record: &Record) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Io {
            context: "encode state".into(),
            source: e.into(),
        })?;
        write_atomic(&self.state_file(), &json)
    }

    /// Read the record, if the container has finished being created.
    pub fn load(&self, id: &str) -> Result<Option<Record>> {
        if !self.path.is_dir() {
            return Err(Error::NotFound(id.to_string()));
        }
        match std::fs::read(self.state_file()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Io {
                    context: format!("read {}", self.state_file().display()),
                    source: e.into(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx(|| format!("read {}", self.state_file().display())),
        }
    }

    /// Remove the whole directory.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).ctx(|| format!("remove {}", self.path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Write `data` to `path` atomically: temp file in the same dir, then rename.
///
/// Not fsynced, as runc does not: runtime state (state.json, pid files) describes
/// processes, which do not outlive a reboot, and lives under a run directory that is
/// normally tmpfs; a killed process loses nothing (the page cache stays). Each
/// fsync would cost a container start milliseconds on a real disk.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
    f.write_all(data)
        .ctx(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("rename {}", path.display()))
}

/// Start time (field 22 of /proc/PID/stat) and state letter of a process, if it exists.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces or ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Whether the init recorded in `record` is still alive (not a zombie, not a reused pid).
pub fn init_alive(record: &Record) -> bool {
    match proc_stat(record.pid) {
        Some((start, state)) => start == record.pid_start && state != 'Z' && state != 'X',
        None => false,
    }
}

/// RFC 3339 timestamp of now, in UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-1.2_x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_process_stat() {
        let (start, state) = proc_stat(std::process::id() as i32).unwrap();
        assert!(start > 0);
        assert!(state == 'R' || state == 'S');
    }

    #[test]
    fn record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = ContainerDir::new(dir.path(), "c1").unwrap();
        c.create("c1").unwrap();
        assert!(matches!(c.create("c1"), Err(Error::Exists(_))));
        assert!(c.load("c1").unwrap().is_none());
        let rec = Record {
            id: "c1".into(),
            pid: 1,
            pid_start: 2,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            cgroup: serde_json::from_str(r#"{"v2":true,"path":"/x","dirs":[]}"#).unwrap(),
            annotations: HashMap::new(),
        };
        c.save(&rec).unwrap();
        assert_eq!(c.load("c1").unwrap().unwrap().pid_start, 2);
        c.remove().unwrap();
        assert!(matches!(c.load("c1"), Err(Error::NotFound(_))));
    }
}
