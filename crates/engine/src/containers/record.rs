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
    /// Restarts the monitor made under the restart policy since the last
    /// `start` (Docker's `RestartCount`).
    #[serde(default)]
    pub restart_count: u32,
    /// Set by `stop`, `kill` (with SIGKILL or the stop signal) and `rm -f`
    /// before they signal: the monitor must not restart the container. A
    /// `start` clears it.
    #[serde(default)]
    pub stop_requested: bool,
    /// The monitor waits out its backoff before a restart (Docker's `Restarting`).
    #[serde(default)]
    pub restarting: bool,
    /// The monitor (pid, start time) that claimed the container to start it
    /// and has not yet recorded it running or failed; `rm` waits it out. A
    /// claim whose monitor is gone counts for nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting: Option<(i32, u64)>,
    /// The healthcheck's results, once a run with one started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::Health>,
}

/// `--restart`: what the monitor does when the container's process ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (`no`, the default).
    #[default]
    No,
    /// Restart after a non-zero exit, at most `max_retries` times (0: no limit).
    OnFailure {
        /// `on-failure:N`.
        max_retries: u32,
    },
    /// Restart whatever the exit code, unless stopped through berth.
    Always,
    /// As `always` (berth has no daemon whose restart would tell them apart).
    UnlessStopped,
}

impl RestartPolicy {
    /// Parse Docker's syntax: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub fn parse(s: &str) -> Result<RestartPolicy> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure { max_retries: 0 },
            _ => {
                return Err(Error::Invalid(format!(
                    "invalid restart policy {s:?}: use no, always, unless-stopped or on-failure[:max-retries]"
                )))
            }
        };
        match (policy, count) {
            (_, None) => Ok(policy),
            (RestartPolicy::OnFailure { .. }, Some(c)) => match c.parse::<u32>() {
                Ok(n) => Ok(RestartPolicy::OnFailure { max_retries: n }),
                Err(_) => Err(Error::Invalid(format!(
                    "invalid restart policy {s:?}: the maximum retry count must be a number >= 0"
                ))),
            },
            (_, Some(_)) => Err(Error::Invalid(format!(
                "invalid restart policy {s:?}: a maximum retry count can only be used with on-failure"
            ))),
        }
    }

    /// Docker's `HostConfig.RestartPolicy.Name` (`no` for none).
    pub fn name(&self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// Docker's `HostConfig.RestartPolicy.MaximumRetryCount`.
    pub fn max_retries(&self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => *max_retries,
            _ => 0,
        }
    }

    /// Whether a run that ended with `exit_code`, after `restarts` restarts,
    /// is restarted (a stop through berth is checked by the caller).
    pub fn should_restart(&self, exit_code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && (*max_retries == 0 || restarts < *max_retries)
            }
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::OnFailure { max_retries } if *max_retries > 0 => {
                write!(f, "on-failure:{max_retries}")
            }
            other => f.write_str(other.name()),
        }
    }
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
    /// `--restart`.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Volumes, binds and tmpfs mounts (`-v`, `--mount`, `--volumes-from`,
    /// the image's `VOLUME`s), anonymous volumes already named.
    #[serde(default)]
    pub mounts: Vec<berth_volumes::MountSpec>,
    /// Networks joined with `network connect` (besides `--network`),
    /// attached again at each start.
    #[serde(default)]
    pub connected: Vec<super::network::ConnectedNetwork>,
    /// The healthcheck (image's, `--health-*` over it); None without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<super::health::HealthConfig>,
    /// The image's SHELL, for a `CMD-SHELL` healthcheck (empty: `/bin/sh -c`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shell: Vec<String>,
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
                // A name a killed `create` claimed for a container that never got a
                // record: take it over (once).
                if owner != id
                    && owner.len() == 64
                    && owner.bytes().all(|b| b.is_ascii_hexdigit())
                    && !self.dir(&owner).join("container.json").exists()
                    && self.lock_is_free(&owner)
                    && std::fs::read_to_string(&path).is_ok_and(|o| o == owner)
                {
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_dir_all(self.dir(&owner));
                    if let Ok(mut f) = OpenOptions::new().write(true).create_new(true).open(&path) {
                        return f
                            .write_all(id.as_bytes())
                            .map_err(Error::io(format!("write {}", path.display())));
                    }
                }
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
    /// The lock file is not created here (see [`RecordStore::lock_new`]), so
    /// a lock taken while `rm` deletes the directory cannot put a file back in it.
    pub fn lock(&self, id: &str) -> Result<File> {
        self.lock_file(id, false)
    }

    /// [`RecordStore::lock`] of a container being created, making its lock file.
    pub fn lock_new(&self, id: &str) -> Result<File> {
        self.lock_file(id, true)
    }

    fn lock_file(&self, id: &str, create: bool) -> Result<File> {
        let path = self.dir(id).join("lock");
        let file = OpenOptions::new()
            .create(create)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|_| Error::NoSuchContainer(id.to_string()))?;
        file.lock()
            .map_err(Error::io(format!("lock {}", path.display())))?;
        Ok(file)
    }

    /// Whether nobody holds the lock of container `id` (true also when it has no lock
    /// file): a container directory without a record and a free lock is what a killed
    /// `create` left.
    pub fn lock_is_free(&self, id: &str) -> bool {
        match File::open(self.dir(id).join("lock")) {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        }
    }

    /// Names in the name index with the id each points to.
    pub fn names(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("names"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.push((name, id));
        }
        out.sort();
        out
    }

    /// Write a record atomically and durably (fsync before the rename); the caller
    /// holds its lock, or owns a new container.
    pub fn save(&self, record: &ContainerRecord) -> Result<()> {
        self.write(record, true)
    }

    /// Write a record atomically without waiting for the disk: for states that mean
    /// nothing after a reboot (a running process's pid) or a record about to be
    /// removed. A killed process loses nothing either way (the page cache stays).
    pub fn save_volatile(&self, record: &ContainerRecord) -> Result<()> {
        self.write(record, false)
    }

    fn write(&self, record: &ContainerRecord, durable: bool) -> Result<()> {
        let dir = self.dir(&record.id);
        let tmp = dir.join("container.json.tmp");
        let data = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::Invalid(format!("encode container record: {e}")))?;
        let mut f = File::create(&tmp).map_err(Error::io(format!("create {}", tmp.display())))?;
        f.write_all(&data)
            .and_then(|_| if durable { f.sync_all() } else { Ok(()) })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_claimed_by_a_dead_create_is_taken_over_but_a_live_one_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let store = RecordStore::open(tmp.path()).unwrap();
        let dead = "a".repeat(64);
        let live = "b".repeat(64);
        let new = "c".repeat(64);
        for id in [&dead, &live, &new] {
            std::fs::create_dir_all(store.dir(id)).unwrap();
        }
        store.claim_name("dead", &dead).unwrap();
        store.claim_name("live", &live).unwrap();
        let _creating = store.lock_new(&live).unwrap();
        assert!(
            store.claim_name("live", &new).is_err(),
            "a create in progress"
        );
        store.claim_name("dead", &new).unwrap();
        assert_eq!(store.id_of_name("dead").as_deref(), Some(new.as_str()));
        assert!(!store.dir(&dead).exists());
    }

    #[test]
    fn restart_policies_parse_as_docker() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("always").unwrap(),
            RestartPolicy::Always
        );
        assert_eq!(
            RestartPolicy::parse("unless-stopped").unwrap(),
            RestartPolicy::UnlessStopped
        );
        assert_eq!(
            RestartPolicy::parse("on-failure").unwrap(),
            RestartPolicy::OnFailure { max_retries: 0 }
        );
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap(),
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        for bad in ["sometimes", "always:2", "on-failure:x", "on-failure:-1"] {
            assert!(RestartPolicy::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap().to_string(),
            "on-failure:3"
        );
    }

    #[test]
    fn restart_decisions() {
        let p = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(p.should_restart(1, 0));
        assert!(p.should_restart(1, 1));
        assert!(!p.should_restart(1, 2));
        assert!(!p.should_restart(0, 0));
        assert!(RestartPolicy::OnFailure { max_retries: 0 }.should_restart(1, 1000));
        assert!(RestartPolicy::Always.should_restart(0, 5));
        assert!(!RestartPolicy::No.should_restart(1, 0));
    }

    #[test]
    fn old_records_load_with_defaults() {
        let state: State = serde_json::from_str(
            r#"{"status":"exited","pid":0,"monitor_pid":0,"monitor_start":0,"exit_code":0,
                "oom_killed":false,"started_at":null,"finished_at":null,"error":null}"#,
        )
        .unwrap();
        assert_eq!(state.restart_count, 0);
        assert!(!state.stop_requested);
        let json = serde_json::to_string(&RestartPolicy::OnFailure { max_retries: 2 }).unwrap();
        assert_eq!(json, r#"{"name":"on-failure","max_retries":2}"#);
    }
}
