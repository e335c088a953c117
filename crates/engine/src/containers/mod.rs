//! Containers: records, lifecycle and the monitor that runs each one.
//!
//! A container is a record under `<root>/containers/<id>/`, a writable
//! snapshot on its image's top layer, and, while it runs, a monitor process
//! (`berth __monitor`) that is the parent of its init. Every `berth` command
//! reads the records, reconciles the ones whose monitor died (the container is
//! killed, its mounts and cgroup freed, and it is marked exited) and acts.

pub mod check;
pub mod commit;
pub mod dns;
pub mod health;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod ops;
pub mod record;
pub mod update;
pub mod volumes;

pub use berth_monitor::attach;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_runtime::Runtime;
use berth_volumes::{MountSpec, VolumeStore};
use nix::sys::signal::Signal;
use oci_spec::runtime::Process;

use crate::error::{Error, Result};
use crate::images::Images;
use crate::spec::{self, NetworkMode, RunOptions, SpecInputs};
use record::{ContainerRecord, RecordStore, RestartPolicy, State, Status};

/// The init helper of `--init` (crates/engine/init/berth-init.c, built static by build.rs).
static INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-init"));

/// Where one container's files live.
pub struct Paths {
    /// `<root>/containers/<id>`: record, log, hostname, hosts, resolv.conf.
    pub dir: PathBuf,
    /// Mount point of the container's root filesystem.
    pub rootfs: PathBuf,
    /// `<run-root>/containers/<id>`: bundle and attach socket.
    pub run_dir: PathBuf,
    /// The OCI bundle given to the runtime.
    pub bundle: PathBuf,
    /// The monitor's attach socket.
    pub attach_socket: PathBuf,
    /// The json-file log.
    pub log: PathBuf,
}

/// What `create` needs besides the run options.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// Image name or id.
    pub image: String,
    /// `--name`.
    pub name: Option<String>,
    /// Flags.
    pub options: RunOptions,
    /// `--rm`.
    pub auto_remove: bool,
    /// `-l KEY=VALUE`.
    pub labels: Vec<String>,
    /// `--stop-timeout` (default 10).
    pub stop_timeout: Option<u64>,
    /// `--restart`.
    pub restart: RestartPolicy,
    /// `-v` and `--mount`, parsed (see [`berth_volumes::parse_volume_flag`]).
    pub mounts: Vec<MountSpec>,
    /// `--volumes-from CONTAINER[:ro|rw]`.
    pub volumes_from: Vec<String>,
    /// `-P`: publish every port the image EXPOSEs on a random host port.
    pub publish_all: bool,
}

/// The container half of the engine.
pub struct Containers {
    root: PathBuf,
    run_root: PathBuf,
    store: RecordStore,
    runtime: Runtime,
    images: Images,
    volumes: VolumeStore,
    networks: berth_netns_bridge::NetworkStore,
    config: network::EngineConfig,
}

/// The files berth binds into every container. Where the image has none,
/// the runtime creates an empty one as the mount point, which `diff`,
/// `commit` and `export` leave out.
pub(crate) const ETC_FILES: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

/// RFC 3339 now, nanoseconds, UTC.
pub fn now() -> String {
    berth_monitor::json_log::rfc3339_nanos(std::time::SystemTime::now())
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut f = std::fs::File::open("/dev/urandom").map_err(Error::io("open /dev/urandom"))?;
    std::io::Read::read_exact(&mut f, &mut bytes).map_err(Error::io("read /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nifty", "proud", "quirky", "sharp", "tender", "upbeat", "vivid", "witty", "zealous", "bold",
];
const NOUNS: &[&str] = &[
    "albatross",
    "beacon",
    "capstan",
    "dinghy",
    "estuary",
    "ferry",
    "galley",
    "harbor",
    "island",
    "jetty",
    "keel",
    "lighthouse",
    "mooring",
    "nautilus",
    "oar",
    "pier",
    "quay",
    "rudder",
    "schooner",
    "tugboat",
];

fn check_name(name: &str) -> Result<()> {
    let ok = name.len() > 1
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// Refuse a container that `rm` is removing.
pub(super) fn not_being_removed(record: &ContainerRecord) -> Result<()> {
    if record.state.status == Status::Removing {
        return Err(Error::Conflict(format!(
            "container {} is being removed",
            record.name
        )));
    }
    Ok(())
}

/// Whether a monitor that is still alive has claimed `record` to start it.
fn start_under_way(record: &ContainerRecord) -> bool {
    record
        .state
        .starting
        .is_some_and(|(pid, start)| pid_alive(pid, start))
}

/// How long `rm` waits for a start under way to finish.
const START_WAIT: Duration = Duration::from_secs(60);

/// Whether the process `pid` that started at `start` (clock ticks) still runs.
pub(super) fn pid_alive(pid: i32, start: u64) -> bool {
    match berth_runtime::state::proc_stat(pid) {
        Some((s, state)) => s == start && state != 'Z' && state != 'X',
        None => false,
    }
}

impl Containers {
    /// Open the container state under `root` and `run_root`.
    pub fn open(root: &Path, run_root: &Path) -> Result<Containers> {
        let config = network::EngineConfig::load(root)?;
        Ok(Containers {
            networks: berth_netns_bridge::NetworkStore::open_with(
                root.join("networks"),
                config.names(),
            )?,
            config,
            root: root.to_path_buf(),
            run_root: run_root.to_path_buf(),
            store: RecordStore::open(root)?,
            runtime: Runtime::new(run_root.join("runtime")),
            images: Images::open(root)?,
            volumes: VolumeStore::open(&root.join("volumes"))?,
        })
    }

    /// Files of container `id`.
    pub fn paths(&self, id: &str) -> Paths {
        let dir = self.root.join("containers").join(id);
        let run_dir = self.run_root.join("containers").join(id);
        Paths {
            rootfs: dir.join("rootfs"),
            log: dir.join(format!("{id}-json.log")),
            bundle: run_dir.join("bundle"),
            attach_socket: run_dir.join("attach.sock"),
            dir,
            run_dir,
        }
    }

    /// Change a record under its lock; returns the new record.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        self.update_with(id, true, change)
    }

    /// Change a record under its lock, durably (fsync) or not (see
    /// [`record::ContainerStore::save_volatile`]); returns the new record.
    pub(crate) fn update_with(
        &self,
        id: &str,
        durable: bool,
        change: impl FnOnce(&mut ContainerRecord),
    ) -> Result<ContainerRecord> {
        let _lock = self.store.lock(id)?;
        let mut record = self.store.load(id)?;
        change(&mut record);
        if durable {
            self.store.save(&record)?;
        } else {
            self.store.save_volatile(&record)?;
        }
        Ok(record)
    }

    /// Resolve a name or (prefix of an) id.
    pub fn resolve(&self, name_or_id: &str) -> Result<String> {
        self.store.resolve(name_or_id)
    }

    /// A record, reconciled: a running container whose monitor is gone is
    /// killed, its runtime state, cgroup and mount freed, and it is marked exited.
    pub fn get(&self, name_or_id: &str) -> Result<ContainerRecord> {
        let id = self.resolve(name_or_id)?;
        let record = self.store.load(&id)?;
        if record.state.status == Status::Running
            && !pid_alive(record.state.monitor_pid, record.state.monitor_start)
        {
            let _lock = self.store.lock(&id)?;
            let mut record = self.store.load(&id)?;
            if record.state.status == Status::Running
                && !pid_alive(record.state.monitor_pid, record.state.monitor_start)
            {
                let _ = self.runtime.delete(&id, true);
                self.detach_networks(&id);
                self.unmount_rootfs(&id);
                let _ = std::fs::remove_dir_all(self.paths(&id).run_dir);
                record.state.status = Status::Exited;
                record.state.exit_code = 137;
                record.state.pid = 0;
                record.state.monitor_pid = 0;
                record.state.finished_at = Some(now());
                record.state.error =
                    Some("the container's monitor died; the container was stopped".into());
                self.store.save(&record)?;
            }
            return Ok(record);
        }
        Ok(record)
    }

    /// Every container (reconciled), newest first.
    pub fn list(&self) -> Result<Vec<ContainerRecord>> {
        let mut out = Vec::new();
        for id in self.store.ids()? {
            if let Ok(r) = self.get(&id) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created));
        Ok(out)
    }

    /// Create a container (not started).
    pub fn create(&self, req: &CreateRequest) -> Result<ContainerRecord> {
        spec::validate(&req.options)?;
        if req.auto_remove && req.restart != RestartPolicy::No {
            return Err(Error::Invalid(
                "Conflicting options: --restart and --rm".into(),
            ));
        }
        let matches = self.images.find(&req.image).map_err(|e| match e {
            Error::NoSuchImage(_) => Error::NoSuchImage(format!(
                "{}: not found locally; pull it first with `berth pull {}`",
                req.image, req.image
            )),
            other => other,
        })?;
        let (_, image) = matches
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoSuchImage(req.image.clone()))?;
        let planned = self.plan_mounts(req, &image.config)?;
        let mut options = req.options.clone();
        options.publish =
            self.check_network_options(&req.options, req.publish_all, &image.config)?;
        self.images.unpack(&image)?;
        let id = random_id()?;
        let dir = self.paths(&id).dir;
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        // Held until the record is saved: `system check` and a later claim of the same
        // name tell a create in progress from one that was killed by this lock.
        let _creating = self.store.lock_new(&id)?;
        let name = match &req.name {
            Some(n) => {
                let n = n.trim_start_matches('/').to_string();
                check_name(&n)?;
                if let Err(e) = self.store.claim_name(&n, &id) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
                n
            }
            None => self.generate_name(&id)?,
        };
        let mut created_volumes = Vec::new();
        let result = (|| {
            let mounts = self.materialize_mounts(planned, &mut created_volumes)?;
            let snapshot = format!("container-{id}");
            let parent = self.images.top_snapshot(&image);
            self.images
                .snapshotter()
                .prepare(&snapshot, parent.as_deref())?;
            let config = image.config.config().clone().unwrap_or_default();
            let mut command: Vec<String> = match &req.options.entrypoint {
                Some(e) => e.clone(),
                None => config.entrypoint().clone().unwrap_or_default(),
            };
            if !req.options.cmd.is_empty() {
                command.extend(req.options.cmd.iter().cloned());
            } else if req.options.entrypoint.is_none() {
                command.extend(config.cmd().clone().unwrap_or_default());
            }
            let mut labels = std::collections::BTreeMap::new();
            for l in &req.labels {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                labels.insert(k.to_string(), v.to_string());
            }
            let stop_signal = req
                .options
                .stop_signal
                .clone()
                .or_else(|| config.stop_signal().clone())
                .unwrap_or_else(|| "SIGTERM".into());
            // Healthcheck and Shell: the OCI config type drops them.
            let raw = self.images.raw_config(&image);
            let image_health = raw
                .as_ref()
                .and_then(|c| serde_json::from_value(c["Healthcheck"].clone()).ok());
            let shell: Vec<String> = raw
                .as_ref()
                .and_then(|c| serde_json::from_value(c["Shell"].clone()).ok())
                .unwrap_or_default();
            let record = ContainerRecord {
                id: id.clone(),
                name: name.clone(),
                image: req.image.clone(),
                image_id: image.config_digest.to_string(),
                image_top: parent,
                snapshot,
                created: now(),
                options: options.clone(),
                auto_remove: req.auto_remove,
                labels,
                command,
                stop_timeout: req.stop_timeout.unwrap_or(10),
                stop_signal,
                restart_policy: req.restart,
                mounts,
                connected: Vec::new(),
                healthcheck: health::HealthConfig::merge(image_health, &req.options.healthcheck),
                shell,
                state: State {
                    status: Status::Created,
                    pid: 0,
                    monitor_pid: 0,
                    monitor_start: 0,
                    exit_code: 0,
                    oom_killed: false,
                    started_at: None,
                    finished_at: None,
                    error: None,
                    restart_count: 0,
                    stop_requested: false,
                    restarting: false,
                    starting: None,
                    health: None,
                },
            };
            self.store.save(&record)?;
            Ok(record)
        })();
        if result.is_err() {
            for v in &created_volumes {
                let _ = self.volumes.remove(v, &[]);
            }
            let _ = self.images.snapshotter().remove(&format!("container-{id}"));
            self.store.release_name(&name);
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn generate_name(&self, id: &str) -> Result<String> {
        let seed = u64::from_str_radix(&id[..12], 16).unwrap_or(0);
        for attempt in 0..400u64 {
            let n = seed.wrapping_add(attempt.wrapping_mul(7919));
            let mut name = format!(
                "{}_{}",
                ADJECTIVES[(n % ADJECTIVES.len() as u64) as usize],
                NOUNS[((n / 31) % NOUNS.len() as u64) as usize]
            );
            if attempt >= 20 {
                name.push_str(&format!("{}", attempt));
            }
            if self.store.claim_name(&name, id).is_ok() {
                return Ok(name);
            }
        }
        Err(Error::Invalid(
            "could not generate a free container name".into(),
        ))
    }

    /// Mount the rootfs and write the bundle (called by the monitor).
    fn prepare_start(&self, record: &ContainerRecord) -> Result<PathBuf> {
        let paths = self.paths(&record.id);
        std::fs::create_dir_all(&paths.rootfs)
            .map_err(Error::io(format!("create {}", paths.rootfs.display())))?;
        std::fs::create_dir_all(&paths.bundle)
            .map_err(Error::io(format!("create {}", paths.bundle.display())))?;
        let mut mounts = self.images.snapshotter().mounts(&record.snapshot)?;
        if record.auto_remove {
            // A --rm container's layer is thrown away: no syncs for it, not even the
            // one unmounting an overlay costs (a sync of the whole upper filesystem).
            for m in mounts.iter_mut().filter(|m| m.typ == "overlay") {
                m.options.push("volatile".into());
            }
        }
        berth_snapshotter::mount_all(&mounts, &paths.rootfs)?;
        let result = (|| {
            let matches = self.images.find(&record.image_id)?;
            let (_, image) = matches
                .into_iter()
                .next()
                .ok_or_else(|| Error::NoSuchImage(record.image_id.clone()))?;
            let mut options = record.options.clone();
            if let NetworkMode::Join(target) = &options.network {
                // `container:NAME` is stored by name; join its current netns.
                if !target.starts_with('/') {
                    let other = self.get(target)?;
                    if other.state.status != Status::Running {
                        return Err(Error::Conflict(format!(
                            "cannot join the network of container {target}: it is not running"
                        )));
                    }
                    options.network =
                        NetworkMode::Join(format!("/proc/{}/ns/net", other.state.pid));
                }
            }
            let extra_mounts = self.write_etc_files(record, &paths)?;
            // After the rootfs mount (copy-up reads the image through it),
            // before the runtime mounts the volumes over it.
            options
                .binds
                .extend(self.volume_mounts(record, &paths.rootfs)?);
            let host_env = |_: &str| None;
            let init_path = if options.init {
                Some(self.init_helper()?)
            } else {
                None
            };
            let inputs = SpecInputs {
                image: &image.config,
                rootfs: &paths.rootfs,
                container_id: &record.id,
                host_env: &host_env,
                init_path: init_path.as_deref(),
                cgroups_path: Some(format!("berth/{}", record.id)),
                extra_mounts,
            };
            let mut spec = spec::build_spec(&options, &inputs)?;
            let mut root = spec.root().clone().unwrap_or_default();
            root.set_path(paths.rootfs.clone());
            spec.set_root(Some(root));
            let json = serde_json::to_vec_pretty(&spec)
                .map_err(|e| Error::Invalid(format!("encode spec: {e}")))?;
            std::fs::write(paths.bundle.join("config.json"), json)
                .map_err(Error::io("write bundle config.json"))?;
            Ok(paths.bundle.clone())
        })();
        if result.is_err() {
            self.unmount_rootfs(&record.id);
        }
        result
    }

    /// `<root>/berth-init`, the init helper of `--init`: written (mode 0755,
    /// atomically) when missing or different from the one built into berth.
    fn init_helper(&self) -> Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join("berth-init");
        if std::fs::read(&path).is_ok_and(|c| c == INIT_BINARY) {
            return Ok(path);
        }
        let tmp = self
            .root
            .join(format!(".berth-init.{}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(INIT_BINARY)?;
                // The mode given to open is masked by the umask.
                f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
                f.sync_all()
            })
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("write {}", path.display()))(e));
        }
        Ok(path)
    }

    /// Mark a container as stopped by the user, so its monitor does not
    /// restart it (see [`RestartPolicy`]).
    fn request_stop(&self, id: &str) -> Result<()> {
        self.update(id, |r| r.state.stop_requested = true)?;
        Ok(())
    }

    /// The resolv.conf a container gets without the embedded DNS: the host's
    /// (see [`network::resolv_conf`]) with its `--dns*` flags.
    pub(crate) fn plain_resolv_conf(&self, record: &ContainerRecord) -> String {
        network::with_dns_flags(
            &network::resolv_conf(matches!(record.options.network, NetworkMode::Host)),
            &record.options,
        )
    }

    /// /etc/hostname, /etc/hosts and /etc/resolv.conf for the container, as
    /// bind mounts (over [`ETC_FILES`]).
    fn write_etc_files(
        &self,
        record: &ContainerRecord,
        paths: &Paths,
    ) -> Result<Vec<oci_spec::runtime::Mount>> {
        let host_hostname =
            matches!(record.options.network, NetworkMode::Host) || record.options.host_uts();
        let hostname = match &record.options.hostname {
            Some(h) => h.clone(),
            None if host_hostname => nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            None => record.id[..12].to_string(),
        };
        let hosts = match record.options.network {
            NetworkMode::Host => {
                std::fs::read_to_string("/etc/hosts").unwrap_or_default()
                    + &network::extra_hosts_lines(&record.options, None)
            }
            NetworkMode::Bridge(_) => self.hosts_content(record),
            _ => {
                network::BASE_HOSTS.to_string() + &network::extra_hosts_lines(&record.options, None)
            }
        };
        let resolv = if dns::uses_embedded_dns(record) {
            dns::embedded_resolv_conf(&self.plain_resolv_conf(record))
        } else {
            self.plain_resolv_conf(record)
        };
        let mut mounts = Vec::new();
        for ((file, content), dest) in [
            ("hostname", format!("{hostname}\n")),
            ("hosts", hosts),
            ("resolv.conf", resolv),
        ]
        .into_iter()
        .zip(ETC_FILES)
        {
            let path = paths.dir.join(file);
            std::fs::write(&path, content)
                .map_err(Error::io(format!("write {}", path.display())))?;
            mounts.push(crate::spec::bind_mount(&path, dest, &["rbind", "rprivate"]));
        }
        Ok(mounts)
    }

    /// Unmount the container's rootfs if mounted, and let go of its
    /// volumes (a driver mount without users left is unmounted).
    fn unmount_rootfs(&self, id: &str) {
        self.volumes.release(id);
        let rootfs = self.paths(id).rootfs;
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| {
                m.lines()
                    .any(|l| l.split_whitespace().nth(4) == rootfs.to_str())
            })
            .unwrap_or(false);
        if mounted {
            let _ = berth_snapshotter::unmount(&rootfs);
        }
    }

    /// Remove a stopped container's files: snapshot, name, directories;
    /// with `volumes`, its anonymous volumes no other container uses.
    fn remove_files(&self, record: &ContainerRecord, volumes: bool) -> Result<()> {
        self.detach_networks(&record.id);
        self.unmount_rootfs(&record.id);
        match self.images.snapshotter().remove(&record.snapshot) {
            Ok(()) | Err(berth_snapshotter::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let paths = self.paths(&record.id);
        let _ = std::fs::remove_dir_all(&paths.run_dir);
        // The record goes before the name: a kill in between leaves a name that points
        // to no container (taken over by the next claim), never a container that can
        // no longer be named.
        std::fs::remove_dir_all(&paths.dir)
            .map_err(Error::io(format!("remove {}", paths.dir.display())))?;
        self.store.release_name(&record.name);
        if volumes {
            self.remove_anonymous_volumes(record);
        }
        Ok(())
    }

    /// Spawn `berth ARGS` (an internal command) as a helper that outlives
    /// what spawned it (the health checker, the DNS server): in a session of
    /// its own, stdin and stdout on /dev/null, stderr appended to `log`, and no
    /// other descriptor (a monitor holds its report pipe and attach sockets,
    /// which a helper must not keep open).
    pub(crate) fn spawn_helper(&self, args: &[&str], log: &Path) -> Result<()> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        let mut cmd = self.berth_command()?;
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: setsid, close_range and fcntl are async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                // Marked close-on-exec rather than closed: std's pipe that
                // reports a failed exec must stay open until the exec.
                const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
                if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) < 0 {
                    // Before Linux 5.11: set the flag one by one.
                    for fd in 3..1024 {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(Error::io(format!("start berth {}", args.join(" "))))?;
        Ok(())
    }

    /// This berth binary on this state (`--root`, `--run-root`), to run one
    /// of its internal commands.
    pub(crate) fn berth_command(&self) -> Result<Command> {
        let exe = std::env::current_exe().map_err(Error::io("find the berth binary"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run_root);
        Ok(cmd)
    }

    fn monitor_command(&self, id: &str, wait_attach: bool) -> Result<Command> {
        let mut cmd = self.berth_command()?;
        cmd.arg("__monitor").arg(id);
        if wait_attach {
            cmd.arg("--wait-attach");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(cmd)
    }

    /// Spawn the monitor of `id`; returns the reader of its fd-3 report.
    fn spawn_monitor(&self, id: &str, wait_attach: bool) -> Result<BufReader<std::fs::File>> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::Invalid(format!("pipe: {e}")))?;
        let mut cmd = self.monitor_command(id, wait_attach)?;
        let write_fd = std::os::fd::AsRawFd::as_raw_fd(&write);
        // SAFETY: between fork and exec only async-signal-safe calls (setsid, dup2).
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if libc::dup2(write_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .map_err(Error::io("start the container monitor"))?;
        drop(write);
        Ok(BufReader::new(std::fs::File::from(read)))
    }

    fn read_report(reader: &mut BufReader<std::fs::File>) -> Result<String> {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(Error::io("read the monitor's report"))?;
        let line = line.trim_end().to_string();
        if let Some(rest) = line.strip_prefix("err ") {
            let (code, msg) = rest.split_once(' ').unwrap_or(("125", rest));
            return Err(Error::StartFailed {
                code: code.parse().unwrap_or(125),
                message: msg.to_string(),
            });
        }
        if line.is_empty() {
            return Err(Error::StartFailed {
                code: 125,
                message: "the container monitor exited without a report".into(),
            });
        }
        Ok(line)
    }

    /// Claim container `id` for the calling monitor to start, under its lock:
    /// refused while it runs, is being removed or another monitor starts it.
    /// [`monitor`] clears the claim when it records the start or its failure.
    pub(crate) fn claim_start(&self, id: &str) -> Result<ContainerRecord> {
        // Reconciles a record left running by a monitor that is gone.
        self.get(id)?;
        let _lock = self.store.lock(id)?;
        let mut record = self.store.load(id)?;
        if start_under_way(&record) {
            return Err(Error::Conflict(format!(
                "container {} is already being started",
                record.name
            )));
        }
        self.check_startable(&record)?;
        let me = std::process::id() as i32;
        let start = berth_runtime::state::proc_stat(me).map_or(0, |s| s.0);
        record.state.starting = Some((me, start));
        // Not fsynced: after a reboot the claim's pid means nothing.
        self.store.save_volatile(&record)?;
        Ok(record)
    }

    fn check_startable(&self, record: &ContainerRecord) -> Result<()> {
        if record.state.status == Status::Running {
            return Err(Error::Conflict(format!(
                "container {} is already running",
                record.name
            )));
        }
        not_being_removed(record)
    }

    /// Start a container in the background; returns its init pid. A running
    /// container is left as it is (Docker's `start` succeeds on one too).
    pub fn start(&self, name_or_id: &str) -> Result<i32> {
        let record = self.get(name_or_id)?;
        if record.state.status == Status::Running {
            return Ok(record.state.pid);
        }
        self.check_startable(&record)?;
        let mut report = self.spawn_monitor(&record.id, false)?;
        let line = Self::read_report(&mut report)?;
        Ok(line
            .strip_prefix("ok ")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0))
    }

    /// Start a container with a client attached from the first byte of
    /// output; returns the attach stream (frames, see [`attach`]).
    /// A running container is attached to as it is.
    pub fn start_attached(&self, name_or_id: &str) -> Result<std::os::unix::net::UnixStream> {
        let record = self.get(name_or_id)?;
        if record.state.status == Status::Running {
            return self.attach(&record.id);
        }
        self.check_startable(&record)?;
        let mut report = self.spawn_monitor(&record.id, true)?;
        let line = Self::read_report(&mut report)?;
        if line != "attach" {
            return Err(Error::Invalid(format!(
                "unexpected monitor report {line:?}"
            )));
        }
        let socket = self.paths(&record.id).attach_socket;
        berth_runtime::socket::connect(&socket)
            .map_err(Error::io(format!("attach to {}", socket.display())))
    }

    /// Attach to a running container's output (and input).
    pub fn attach(&self, name_or_id: &str) -> Result<std::os::unix::net::UnixStream> {
        let record = self.get(name_or_id)?;
        if record.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "container {} is not running: start it with `berth start -a`",
                record.name
            )));
        }
        let socket = self.paths(&record.id).attach_socket;
        berth_runtime::socket::connect(&socket)
            .map_err(Error::io(format!("attach to {}", socket.display())))
    }

    fn wait_not_running(&self, id: &str, timeout: Duration) -> Result<Option<ContainerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let record = self.get(id)?;
            if record.state.status != Status::Running {
                return Ok(Some(record));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (a few seconds at most) until the monitor of `running` (a record
    /// read while the container ran) is gone: after recording the exit it
    /// still deletes the veth pairs, so `stop` and `rm -f` return with them gone.
    fn wait_monitor_gone(&self, running: &ContainerRecord) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(running.state.monitor_pid, running.state.monitor_start)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stop: the stop signal, then SIGKILL after `timeout` seconds (default: the container's).
    pub fn stop(&self, name_or_id: &str, timeout: Option<u64>) -> Result<ContainerRecord> {
        let record = self.get(name_or_id)?;
        if record.state.status != Status::Running {
            return Ok(record);
        }
        let signal = parse_signal(&record.stop_signal)?;
        self.request_stop(&record.id)?;
        let _ = self.runtime.kill(&record.id, signal, false);
        // A frozen container cannot act on the signal: thaw it, as Docker does.
        self.thaw_if_paused(&record);
        let timeout = Duration::from_secs(timeout.unwrap_or(record.stop_timeout));
        if let Some(r) = self.wait_not_running(&record.id, timeout)? {
            self.wait_monitor_gone(&record);
            return Ok(r);
        }
        let _ = self.runtime.kill(&record.id, Signal::SIGKILL, true);
        let stopped = self
            .wait_not_running(&record.id, Duration::from_secs(15))?
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "container {} did not stop after SIGKILL",
                    record.name
                ))
            })?;
        self.wait_monitor_gone(&record);
        Ok(stopped)
    }

    /// Send a signal to a running container's init.
    pub fn kill(&self, name_or_id: &str, signal: &str) -> Result<()> {
        let record = self.get(name_or_id)?;
        if record.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                record.name
            )));
        }
        let signal = parse_signal(signal)?;
        // As Docker: SIGKILL or the stop signal ends the container for good;
        // other signals leave the restart policy in force.
        let ends =
            signal == Signal::SIGKILL || parse_signal(&record.stop_signal).ok() == Some(signal);
        if ends {
            self.request_stop(&record.id)?;
        }
        let result = match self.runtime.kill(&record.id, signal, false) {
            // Between two runs of a restart policy: the mark alone stops it.
            Err(_) if ends && record.state.restarting => Ok(()),
            other => Ok(other?),
        };
        if ends {
            self.thaw_if_paused(&record);
        }
        result
    }

    fn thaw_if_paused(&self, record: &ContainerRecord) {
        if self.is_paused(record) {
            let _ = self.runtime.resume(&record.id);
        }
    }

    /// Remove a container; a running one only with `force` (it is killed).
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<String> {
        self.remove_with_volumes(name_or_id, force, false)
    }

    /// `rm [-f] [-v]`: as [`Containers::remove`]; with `volumes` its
    /// anonymous volumes go too (never named ones).
    pub fn remove_with_volumes(
        &self,
        name_or_id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<String> {
        let id = self.resolve(name_or_id)?;
        let deadline = Instant::now() + START_WAIT;
        let record = loop {
            let record = self.get(&id)?;
            if record.state.status == Status::Running {
                if !force {
                    return Err(Error::Conflict(format!(
                        "cannot remove container {}: it is running; stop it first or use --force",
                        record.name
                    )));
                }
                self.request_stop(&record.id)?;
                let _ = self.runtime.kill(&record.id, Signal::SIGKILL, true);
                self.wait_not_running(&record.id, Duration::from_secs(15))?;
                self.wait_monitor_gone(&record);
            }
            // Marked under the lock, unless it runs again or a start is under
            // way: a start mounts and runs what the removal would delete, so it
            // is waited out (then a running container is killed as above).
            let marked = {
                let _lock = self.store.lock(&id)?;
                let mut record = self.store.load(&id)?;
                let busy = record.state.status == Status::Running || start_under_way(&record);
                if !busy {
                    record.state.status = Status::Removing;
                    self.store.save(&record)?;
                }
                (!busy).then_some(record)
            };
            match marked {
                Some(record) => break record,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                None => {
                    return Err(Error::Conflict(format!(
                        "cannot remove container {}: it is still being started",
                        record.name
                    )))
                }
            }
        };
        // A monitor finishing a --rm may have removed it meanwhile.
        if self.paths(&record.id).dir.exists() {
            self.remove_files(&record, volumes)?;
        }
        Ok(record.id)
    }

    /// Wait for a container to stop; returns its exit code.
    pub fn wait(&self, name_or_id: &str) -> Result<i32> {
        let id = self.resolve(name_or_id)?;
        loop {
            match self.get(&id) {
                Ok(r) if r.state.status == Status::Running => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(r) => return Ok(r.state.exit_code),
                // Removed (--rm) after it ended.
                Err(Error::NoSuchContainer(_)) => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Run a process in a running container (the caller's stdio; `detach` returns at once).
    pub fn exec(&self, name_or_id: &str, args: Vec<String>, opts: &ExecRequest) -> Result<i32> {
        let record = self.get(name_or_id)?;
        if record.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "container {} is not running",
                record.name
            )));
        }
        if self.is_paused(&record) {
            return Err(Error::Conflict(format!(
                "container {} is paused: unpause it first",
                record.name
            )));
        }
        let bundle = self.paths(&record.id).bundle.join("config.json");
        let text = std::fs::read_to_string(&bundle)
            .map_err(Error::io(format!("read {}", bundle.display())))?;
        let spec = berth_runtime::spec::parse_spec(&text).map_err(Error::Invalid)?;
        let mut process: Process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(args));
        process.set_terminal(Some(opts.tty));
        let mut env = process.env().clone().unwrap_or_default();
        env.extend(opts.env.iter().cloned());
        process.set_env(Some(env));
        if let Some(w) = &opts.workdir {
            process.set_cwd(PathBuf::from(w));
        }
        if let Some(u) = &opts.user {
            let (uid, gid) = spec::resolve_user(&self.paths(&record.id).rootfs, u)?;
            process.user_mut().set_uid(uid);
            process.user_mut().set_gid(gid);
            process.user_mut().set_additional_gids(None);
        }
        let exit = self.runtime.exec(
            &record.id,
            process,
            &berth_runtime::ExecOptions {
                console_socket: None,
                pid_file: opts.pid_file.clone(),
                detach: opts.detach,
                preserve_fds: 0,
            },
        )?;
        Ok(exit.map(|e| e.code).unwrap_or(0))
    }

    /// Remove every container that is not running; returns their ids.
    pub fn prune(&self, filter: &crate::prune::PruneFilter) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for record in self.list()? {
            if record.state.status != Status::Running
                && filter.allows(Some(&record.created), &record.labels)
                && self.remove(&record.id, false).is_ok()
            {
                removed.push(record.id);
            }
        }
        Ok(removed)
    }

    /// Ids (config digests) of the images that containers use.
    pub fn images_in_use(&self) -> Result<std::collections::BTreeSet<String>> {
        let mut ids = std::collections::BTreeSet::new();
        for id in self.store.ids()? {
            if let Ok(r) = self.store.load(&id) {
                ids.insert(r.image_id);
            }
        }
        Ok(ids)
    }

    /// The image half, for commands that need both.
    pub fn images(&self) -> &Images {
        &self.images
    }
}

/// `exec` flags.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// `-t`.
    pub tty: bool,
    /// `-d`.
    pub detach: bool,
    /// `-e`.
    pub env: Vec<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// Where to write the host pid of the exec'd process once it runs
    /// (healthchecks use it to kill a check that times out).
    pub pid_file: Option<PathBuf>,
}

/// A signal by name or number.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let n = spec::parse_signal(s)?;
    Signal::try_from(n).map_err(|_| Error::Invalid(format!("invalid signal {s:?}")))
}
