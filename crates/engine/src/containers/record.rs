//! Container records on disk and the name index.
//!
//! `<root>/containers/<id>/container.json` is written atomically under an
//! exclusive lock on `<root>/containers/<id>/lock`. Names are claimed by
//! creating `<root>/containers/names/<name>` with O_EXCL, so two concurrent
//! `berth run --name x` cannot both win, without a global lock.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::RunOptions;

/// Lifecycle states as Docker names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started (or being started).
    Created,
    /// Its process runs under a monitor.
    Running,
    /// Its process ended.
    Exited,
    /// Being removed.
    Removing,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Removing => "removing",
        })
    }
}

/// The changing part of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Current status.
    pub status: Status,
    /// Host pid of the container's init while running.
    pub pid: i32,
    /// Pid of its monitor while running.
    pub monitor_pid: i32,
    /// Start time (clock ticks) of the monitor, to detect pid reuse.
    pub monitor_start: u64,
    /// Exit code of the last run.
    pub exit_code: i32,
    /// Whether the OOM killer struck during the last run.
    pub oom_killed: bool,
    /// RFC 3339 start time of the last run.
    pub started_at: Option<String>,
    /// RFC 3339 end time of the last run.
    pub finished_at: Option<String>,
    /// Why the last start failed, if it did.
    pub error: Option<String>,
}

/// Everything berth remembers about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex chars.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// Image id (config digest).
    pub image_id: String,
    /// Name of the image's top layer snapshot (the container's parent snapshot).
    pub image_top: Option<String>,
    /// The container's own writable snapshot key.
    pub snapshot: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// The options it was created with.
    pub options: RunOptions,
    /// `--rm`.
    pub auto_remove: bool,
    /// Labels (`-l`).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The command it runs (for `ps`).
    pub command: Vec<String>,
    /// Seconds `stop` waits before SIGKILL.
    pub stop_timeout: u64,
    /// Signal `stop` sends first.
    pub stop_signal: String,
    /// Runtime state.
    pub state: State,
}

/// The container directories under a state root.
#[derive(Debug, Clone)]
pub struct RecordStore {
    dir: PathBuf,
}

impl RecordStore {
    /// Open (creating) `<root>/containers`.
    pub fn open(root: &Path) -> Result<RecordStore> {
        let dir = root.join("containers");
        std::fs::create_dir_all(dir.join("names"))
            .map_err(Error::io(format!("create {}", dir.display())))?;
        Ok(RecordStore { dir })
    }

    /// Directory of one container.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Claim `name` for `id`; fails with a conflict if another container has it.
    pub fn claim_name(&self, name: &str, id: &str) -> Result<()> {
        let path = self.dir.join("names").join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => f
                .write_all(id.as_bytes())
                .map_err(Error::io(format!("write {}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                Err(Error::Conflict(format!(
                    "the container name \"/{name}\" is already in use by container \"{owner}\": remove or rename that container to reuse the name"
                )))
            }
            Err(e) => Err(Error::io(format!("create {}", path.display()))(e)),
        }
    }

    /// Release a name.
    pub fn release_name(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join("names").join(name));
    }

    /// Id owning `name`, if any.
    pub fn id_of_name(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join("names").join(name)).ok()
    }

    /// Lock one container's record exclusively (released when the file drops).
    pub fn lock(&self, id: &str) -> Result<File> {
        let path = self.dir(id).join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|_| Error::NoSuchContainer(id.to_string()))?;
        file.lock()
            .map_err(Error::io(format!("lock {}", path.display())))?;
        Ok(file)
    }

    /// Write a record atomically (the caller holds its lock, or owns a new container).
    pub fn save(&self, record: &ContainerRecord) -> Result<()> {
        let dir = self.dir(&record.id);
        let tmp = dir.join("container.json.tmp");
        let data = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Invalid(format!("encode container record: {e}")))?;
        let mut f = File::create(&tmp).map_err(Error::io(format!("create {}", tmp.display())))?;
        f.write_all(&data)
            .and_then(|_| f.sync_all())
            .map_err(Error::io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join("container.json"))
            .map_err(Error::io(format!("rename {}", tmp.display())))
    }

    /// Read a record.
    pub fn load(&self, id: &str) -> Result<ContainerRecord> {
        let path = self.dir(id).join("container.json");
        let data = std::fs::read(&path).map_err(|_| Error::NoSuchContainer(id.to_string()))?;
        serde_json::from_slice(&data)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// Ids of every container with a record.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .map_err(Error::io(format!("read {}", self.dir.display())))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && entry.path().join("container.json").exists() {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// Resolve a full id, a unique id prefix, or a name.
    pub fn resolve(&self, name_or_id: &str) -> Result<String> {
        let wanted = name_or_id.trim_start_matches('/');
        if let Some(id) = self.id_of_name(wanted) {
            if self.dir(&id).join("container.json").exists() {
                return Ok(id);
            }
        }
        if !wanted.is_empty() && wanted.chars().all(|c| c.is_ascii_hexdigit()) {
            let matches: Vec<String> = self
                .ids()?
                .into_iter()
                .filter(|id| id.starts_with(wanted))
                .collect();
            match matches.len() {
                1 => return Ok(matches.into_iter().next().unwrap_or_default()),
                0 => {}
                n => {
                    return Err(Error::Invalid(format!(
                        "container id prefix {wanted} is ambiguous: it matches {n} containers"
                    )))
                }
            }
        }
        Err(Error::NoSuchContainer(name_or_id.to_string()))
    }
}
