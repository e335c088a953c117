//! Turning `berth run`/`create` options plus an image's config into the OCI
//! runtime spec handed to berth's runtime, with Docker's semantics.
//!
//! [`build_spec`] is the whole translation: command and arguments, environment,
//! working directory, user and groups (resolved from the container's own
//! `/etc/passwd` and `/etc/group`), capabilities, privileged mode, seccomp,
//! namespaces, cgroup resources, rlimits, sysctls, mounts, `--init` and the
//! stop signal. [`parse_bytes`] and [`parse_signal`] are the value parsers it
//! uses, exposed for the CLI's own validation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxCpu, LinuxMemory, LinuxNamespace,
    LinuxNamespaceType, LinuxPids, LinuxResources, LinuxSeccomp, Mount, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType, Root, Spec, User,
};
use serde::{Deserialize, Serialize};

/// The PATH a container gets when its image sets none (Docker's and runc's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `--init` puts the init helper inside the container.
pub const INIT_DESTINATION: &str = "/sbin/berth-init";

/// The annotation carrying the stop signal (`--stop-signal` or the image's `StopSignal`).
pub const STOP_SIGNAL_ANNOTATION: &str = "org.opencontainers.image.stopSignal";

/// Docker's default `/dev/shm` size: 64 MiB.
const DEFAULT_SHM_SIZE: i64 = 64 * 1024 * 1024;

/// Docker's smallest accepted `--memory`: 6 MiB.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The CFS period used for `--cpus`, in microseconds (Docker's).
const CPU_PERIOD: u64 = 100_000;

/// Largest file read from the container's rootfs (`/etc/passwd`, `/etc/group`).
const MAX_ROOTFS_FILE: u64 = 16 * 1024 * 1024;

/// Errors turning options and image config into a spec. Each names the bad
/// value and what is expected instead.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the image nor the options give a command to run.
    #[error("no command specified")]
    NoCommand,
    /// A flag's value does not parse or is out of range.
    #[error("invalid {flag} {value:?}: {expected}")]
    Invalid {
        /// The flag (e.g. `--memory`) or kind of value (e.g. `size`).
        flag: String,
        /// The value as given.
        value: String,
        /// What is expected instead.
        expected: String,
    },
    /// A user name that the container's `/etc/passwd` does not have.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A group name that the container's `/etc/group` does not have.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// Two options that cannot be used together.
    #[error("conflicting options: {0}")]
    Conflict(String),
    /// `--init` was asked for but the engine found no init helper.
    #[error("--init needs berth's init helper, which was not found next to the berth binary")]
    InitMissing,
    /// A file could not be read (the container's passwd/group, a seccomp profile).
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `--security-opt seccomp=PATH` profile is not valid.
    #[error("invalid seccomp profile {path}: {reason}")]
    Seccomp {
        /// The profile file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A flag value that does not parse, with what is expected instead.
pub(crate) fn invalid(flag: &str, value: &str, expected: &str) -> SpecError {
    SpecError::Invalid {
        flag: flag.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// What `berth run`/`create` flags ask for (already parsed by the CLI; plain
/// data, serde-serialisable so the engine can store it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunOptions {
    /// `--entrypoint`: `Some(vec![])` resets it to none (as `--entrypoint ""`).
    /// Any `--entrypoint` also drops the image's Cmd, as Docker does.
    pub entrypoint: Option<Vec<String>>,
    /// The arguments after the image name (empty: the image's Cmd).
    pub cmd: Vec<String>,
    /// `-e KEY=VAL`, or `-e KEY` (taken from the host environment if set there, else dropped).
    pub env: Vec<String>,
    /// `-w`: the working directory.
    pub workdir: Option<String>,
    /// `-u user[:group]`, names or numbers.
    pub user: Option<String>,
    /// `-h`: the hostname.
    pub hostname: Option<String>,
    /// `-t`: allocate a terminal.
    pub tty: bool,
    /// `-i`: keep stdin open (used by the engine, not in the spec).
    pub stdin_open: bool,
    /// `--memory`, e.g. `64m`.
    pub memory: Option<String>,
    /// `--memory-swap`: memory plus swap (`-1`: unlimited swap).
    pub memory_swap: Option<String>,
    /// `--cpus`, e.g. `1.5` (quota 150000 per 100000 period).
    pub cpus: Option<String>,
    /// `--pids-limit` (0 or less: unlimited).
    pub pids_limit: Option<i64>,
    /// `--cap-add`: names with or without `CAP_`, case-insensitive, or `ALL`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`: names with or without `CAP_`, case-insensitive, or `ALL`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--read-only`: a read-only root filesystem.
    pub read_only: bool,
    /// `--security-opt seccomp=...`: a profile path or `unconfined`.
    pub seccomp: Option<String>,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--network`.
    pub network: NetworkMode,
    /// `--ip`: a static address on the network (bridge modes only).
    #[serde(default)]
    pub ip: Option<String>,
    /// `--mac-address`.
    #[serde(default)]
    pub mac_address: Option<String>,
    /// `--network-alias`: more names the container's peers resolve it by.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// `-p`/`--publish` (and `-P`, resolved at create): Docker's
    /// `[hostip:][hostport:]containerport[/proto]`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// `--init`: run berth's init helper as pid 1.
    pub init: bool,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `-l KEY=VAL` (kept in the engine's records, not in the spec).
    pub labels: Vec<String>,
    /// `--sysctl KEY=VAL`.
    pub sysctls: Vec<String>,
    /// `--ulimit NAME=SOFT[:HARD]`, e.g. `nofile=1024:2048`.
    pub ulimits: Vec<String>,
    /// `--shm-size` (default 64m).
    pub shm_size: Option<String>,
    /// `--tmpfs /path[:options]`.
    pub tmpfs: Vec<String>,
    /// Volume and bind mounts the engine already resolved; appended as given.
    pub binds: Vec<Mount>,
    /// `--add-host HOST:IP`: more `/etc/hosts` lines (`IP` may be
    /// `host-gateway`: the gateway of the container's bridge network).
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// `--dns`: the nameservers of `/etc/resolv.conf`, instead of the host's.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--dns-search`: its search domains.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--dns-option`: its options.
    #[serde(default)]
    pub dns_options: Vec<String>,
    /// `--expose PORT[/PROTO]`: exposed besides the image's ports (`-P`
    /// publishes them).
    #[serde(default)]
    pub expose: Vec<String>,
    /// `--pid host`: the host's pid namespace instead of a new one.
    #[serde(default)]
    pub pid: Option<String>,
    /// `--ipc host|private|shareable`: `host` shares the host's IPC
    /// namespace and `/dev/shm`.
    #[serde(default)]
    pub ipc: Option<String>,
    /// `--uts host`: the host's UTS namespace (and hostname).
    #[serde(default)]
    pub uts: Option<String>,
    /// `--device HOST[:CONTAINER][:PERMS]`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// `--device-cgroup-rule 'TYPE MAJOR:MINOR PERMS'`.
    #[serde(default)]
    pub device_cgroup_rules: Vec<String>,
    /// `--health-*` and `--no-healthcheck` (test `["NONE"]`): set fields
    /// override the image's healthcheck.
    #[serde(default)]
    pub healthcheck: crate::containers::health::HealthConfig,
}

impl RunOptions {
    /// Whether `--pid host`.
    pub fn host_pid(&self) -> bool {
        self.pid.as_deref() == Some("host")
    }

    /// Whether `--ipc host`.
    pub fn host_ipc(&self) -> bool {
        self.ipc.as_deref() == Some("host")
    }

    /// Whether `--uts host`.
    pub fn host_uts(&self) -> bool {
        self.uts.as_deref() == Some("host")
    }
}

/// Split `--add-host HOST:IP` (or `HOST=IP`; an IPv6 address may be in
/// brackets) into the name and the address text (an IP or `host-gateway`).
pub fn parse_extra_host(spec: &str) -> Result<(String, String), SpecError> {
    let bad = |why: &str| invalid("--add-host", spec, why);
    let (host, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(|| bad("use HOST:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("the host name is empty or has spaces"));
    }
    if ip != HOST_GATEWAY && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad("the address is not an IP address or host-gateway"));
    }
    Ok((host.to_string(), ip.to_string()))
}

/// `--add-host NAME:host-gateway`: the address of the container's gateway.
pub const HOST_GATEWAY: &str = "host-gateway";

/// The network namespace a container gets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub enum NetworkMode {
    /// A new, empty network namespace (loopback only).
    #[default]
    None,
    /// The host's network namespace (and, by default, the host's hostname).
    Host,
    /// Join this network namespace path (e.g. `/proc/PID/ns/net`).
    Join(String),
    /// A new network namespace that the engine attaches to this berth
    /// network (`bridge` or a user-defined one) once it exists; for the
    /// spec it is the same as [`NetworkMode::None`].
    Bridge(String),
}

/// Everything [`build_spec`] needs besides the options.
pub struct SpecInputs<'a> {
    /// The image's configuration (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal).
    pub image: &'a oci_spec::image::ImageConfiguration,
    /// The mounted container rootfs: `root.path` of the spec, and where
    /// `/etc/passwd` and `/etc/group` are read to resolve user and group names.
    pub rootfs: &'a Path,
    /// The container id; the hostname defaults to its first 12 characters.
    pub container_id: &'a str,
    /// Looks up a host environment variable (for `-e KEY` without a value).
    pub host_env: &'a dyn Fn(&str) -> Option<String>,
    /// The init helper on the host, bound at [`INIT_DESTINATION`] for `--init`.
    pub init_path: Option<&'a Path>,
    /// `linux.cgroupsPath`, e.g. `berth/<id>`.
    pub cgroups_path: Option<String>,
    /// Mounts the engine adds (e.g. binds of /etc/hosts, /etc/resolv.conf, /etc/hostname).
    pub extra_mounts: Vec<Mount>,
}

/// Build the OCI runtime spec for a container, with Docker's semantics:
///
/// - args: the entrypoint (`--entrypoint` overrides the image's) followed by
///   the command (arguments given override the image's Cmd; an
///   `--entrypoint` also drops the image's Cmd); [`SpecError::NoCommand`] if
///   that is empty. `--init` prepends `/sbin/berth-init --` and binds the
///   helper there read-only.
/// - env: the image's Env, then `PATH` if missing, `HOSTNAME`, `TERM=xterm`
///   with a tty, then `-e` values (a later value wins per key), and `HOME`
///   from the user's passwd entry (or `/`) if still unset, as runc does.
/// - cwd: `-w`, else the image's WorkingDir, else `/`.
/// - user: `-u`, else the image's User, resolved against the rootfs's
///   `/etc/passwd` and `/etc/group` (see [`SpecError::UnknownUser`]).
/// - capabilities: Docker's default set adjusted by `--cap-add`/`--cap-drop`
///   (`ALL` allowed); a non-root user gets empty effective and permitted sets.
/// - privileged: every capability the host can grant, no seccomp, no masked or
///   read-only paths, `/sys` and the cgroup mount read-write.
/// - seccomp: berth's default profile (re-allowing the syscalls Docker's
///   profile re-allows for added capabilities), none when privileged or
///   `unconfined`, or the given profile file.
/// - namespaces: new pid, ipc, uts, mount and cgroup; the network per
///   [`NetworkMode`].
/// - resources: memory and swap (swap defaults to twice the memory), cpus,
///   pids, the `/dev/shm` size; `--ulimit` as rlimits (none otherwise: the
///   host's are inherited), `--sysctl` (namespaced ones only).
/// - mounts: the defaults, then `--tmpfs`, then `extra_mounts`, then `binds`;
///   a later mount replaces an earlier one at the same destination.
/// - annotations: the stop signal, if any.
pub fn build_spec(opts: &RunOptions, inputs: &SpecInputs<'_>) -> Result<Spec, SpecError> {
    let empty_config = oci_spec::image::Config::default();
    let image = inputs.image.config().as_ref().unwrap_or(&empty_config);

    // Command.
    let mut args = compose_args(opts, image)?;
    let init_mount = if opts.init {
        let path = inputs.init_path.ok_or(SpecError::InitMissing)?;
        let mut with_init = vec![INIT_DESTINATION.to_string(), "--".to_string()];
        with_init.append(&mut args);
        args = with_init;
        Some(bind_mount(
            path,
            INIT_DESTINATION,
            &["bind", "ro", "nosuid", "nodev"],
        ))
    } else {
        None
    };

    // Hostname.
    if opts.hostname.is_some() && matches!(opts.network, NetworkMode::Join(_)) {
        return Err(SpecError::Conflict(
            "--hostname cannot be used with --network container:...".into(),
        ));
    }
    validate_namespaces_and_dns(opts)?;
    let hostname = match (&opts.hostname, &opts.network) {
        (Some(h), _) => {
            validate_hostname(h)?;
            h.clone()
        }
        (None, _) if opts.host_uts() => {
            host_hostname().unwrap_or_else(|| inputs.container_id.chars().take(12).collect())
        }
        (None, NetworkMode::Host) => {
            host_hostname().unwrap_or_else(|| inputs.container_id.chars().take(12).collect())
        }
        (None, _) => inputs.container_id.chars().take(12).collect(),
    };

    // User.
    let user_spec = opts
        .user
        .clone()
        .or_else(|| image.user().clone())
        .filter(|u| !u.is_empty());
    let resolved = resolve_exec_user(user_spec.as_deref(), inputs.rootfs)?;

    // Environment.
    let env = compose_env(opts, image, &hostname, &resolved.home, inputs.host_env)?;

    // Working directory.
    let cwd = opts
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| image.working_dir().clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(invalid(
            "--workdir",
            &cwd,
            "the working directory must be an absolute path",
        ));
    }

    // Capabilities.
    let caps = if opts.privileged {
        all_capabilities()
    } else {
        tweak_capabilities(&opts.cap_add, &opts.cap_drop)?
    };
    let root_user = resolved.uid == 0;
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(if root_user {
        caps.clone()
    } else {
        Capabilities::new()
    }));
    capabilities.set_permitted(Some(if root_user {
        caps.clone()
    } else {
        Capabilities::new()
    }));
    capabilities.set_inheritable(Some(Capabilities::new()));
    capabilities.set_ambient(Some(Capabilities::new()));

    // Rlimits.
    let rlimits = parse_ulimits(&opts.ulimits)?;

    // Resources.
    let mut resources = build_resources(opts)?;
    let (device_nodes, device_rules) = crate::devices::devices_and_rules(
        opts.privileged,
        &opts.devices,
        &opts.device_cgroup_rules,
    )?;
    resources.set_devices(Some(device_rules));
    let shm_size = match &opts.shm_size {
        Some(s) => {
            let n = parse_bytes(s).map_err(|_| {
                invalid(
                    "--shm-size",
                    s,
                    "use a number with an optional b, k, m or g suffix",
                )
            })?;
            if n <= 0 {
                return Err(invalid("--shm-size", s, "the size must be greater than 0"));
            }
            n
        }
        None => DEFAULT_SHM_SIZE,
    };

    // Sysctls.
    let sysctl = build_sysctls(&opts.sysctls, &opts.network)?;

    // Stop signal.
    if let Some(sig) = &opts.stop_signal {
        parse_signal(sig).map_err(|_| {
            invalid(
                "--stop-signal",
                sig,
                "use a signal name such as SIGTERM or a number",
            )
        })?;
    }
    let stop_signal = opts
        .stop_signal
        .clone()
        .or_else(|| image.stop_signal().clone())
        .filter(|s| !s.is_empty());

    // Seccomp.
    let seccomp = build_seccomp(opts, &caps)?;

    // Mounts.
    let tmpfs = opts
        .tmpfs
        .iter()
        .map(|t| parse_tmpfs(t))
        .collect::<Result<Vec<_>, _>>()?;
    for m in inputs.extra_mounts.iter().chain(&opts.binds) {
        if !m.destination().is_absolute() {
            return Err(invalid(
                "mount destination",
                &m.destination().display().to_string(),
                "the destination must be an absolute path",
            ));
        }
    }

    // Assemble.
    let mut spec = berth_runtime::spec::default_spec();
    // In the host's UTS namespace the hostname is the host's, not to be set.
    spec.set_hostname((!opts.host_uts()).then_some(hostname));
    let mut root = Root::default();
    root.set_path(inputs.rootfs.to_path_buf());
    root.set_readonly(Some(opts.read_only));
    spec.set_root(Some(root));

    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(opts.tty));
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    let mut user = User::default();
    user.set_uid(resolved.uid);
    user.set_gid(resolved.gid);
    user.set_additional_gids(
        (!resolved.additional_gids.is_empty()).then_some(resolved.additional_gids),
    );
    process.set_user(user);
    process.set_capabilities(Some(capabilities));
    process.set_rlimits((!rlimits.is_empty()).then_some(rlimits));
    process.set_no_new_privileges(Some(opts.no_new_privileges));
    spec.set_process(Some(process));

    let mut mounts = default_mounts(&spec, opts.privileged, shm_size);
    if opts.host_ipc() {
        // The host's IPC namespace comes with the host's /dev/shm.
        mounts.retain(|m| m.destination() != Path::new("/dev/shm"));
        mounts.push(bind_mount(
            Path::new("/dev/shm"),
            "/dev/shm",
            &["rbind", "nosuid", "nodev", "noexec"],
        ));
    }
    let mut user_mounts: Vec<Mount> = tmpfs;
    user_mounts.extend(inputs.extra_mounts.iter().cloned());
    user_mounts.extend(opts.binds.iter().cloned());
    user_mounts.extend(init_mount);
    // A later mount at a destination replaces every earlier one there.
    let mut seen = HashSet::new();
    let mut deduped = Vec::new();
    for m in user_mounts.into_iter().rev() {
        if seen.insert(normalize(m.destination())) {
            deduped.push(m);
        }
    }
    deduped.reverse();
    mounts.retain(|m| !seen.contains(&normalize(m.destination())));
    // Parents before children, as Docker sorts them (stable, so order is kept otherwise).
    deduped.sort_by_key(|m| normalize(m.destination()).components().count());
    mounts.extend(deduped);
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = Vec::new();
    for (typ, host) in [
        (LinuxNamespaceType::Pid, opts.host_pid()),
        (LinuxNamespaceType::Ipc, opts.host_ipc()),
        (LinuxNamespaceType::Uts, opts.host_uts()),
        (LinuxNamespaceType::Mount, false),
        (LinuxNamespaceType::Cgroup, false),
    ] {
        if host {
            continue;
        }
        let mut ns = LinuxNamespace::default();
        ns.set_typ(typ);
        namespaces.push(ns);
    }
    match &opts.network {
        NetworkMode::None | NetworkMode::Bridge(_) => {
            let mut ns = LinuxNamespace::default();
            ns.set_typ(LinuxNamespaceType::Network);
            namespaces.push(ns);
        }
        NetworkMode::Host => {}
        NetworkMode::Join(path) => {
            if path.is_empty() || !path.starts_with('/') {
                return Err(invalid(
                    "network namespace path",
                    path,
                    "use an absolute path such as /proc/PID/ns/net",
                ));
            }
            let mut ns = LinuxNamespace::default();
            ns.set_typ(LinuxNamespaceType::Network);
            ns.set_path(Some(PathBuf::from(path)));
            namespaces.push(ns);
        }
    }
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources));
    linux.set_devices((!device_nodes.is_empty()).then_some(device_nodes));
    linux.set_cgroups_path(inputs.cgroups_path.as_ref().map(PathBuf::from));
    linux.set_sysctl((!sysctl.is_empty()).then(|| sysctl.into_iter().collect()));
    linux.set_seccomp(seccomp);
    if opts.privileged {
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    }
    spec.set_linux(Some(linux));

    let mut annotations = HashMap::new();
    if let Some(sig) = stop_signal {
        annotations.insert(STOP_SIGNAL_ANNOTATION.to_string(), sig);
    }
    spec.set_annotations((!annotations.is_empty()).then_some(annotations));
    Ok(spec)
}

/// Check the options that do not depend on the image or the rootfs (sizes,
/// cpus, capabilities, ulimits, sysctls, tmpfs, env keys, hostname, workdir,
/// network path, stop signal, seccomp profile), so `berth create` can refuse
/// bad flags before doing any work. [`build_spec`] checks them again.
pub fn validate(opts: &RunOptions) -> Result<(), SpecError> {
    build_resources(opts)?;
    crate::devices::devices_and_rules(opts.privileged, &opts.devices, &opts.device_cgroup_rules)?;
    if let Some(s) = &opts.shm_size {
        let n = parse_bytes(s).map_err(|_| {
            invalid(
                "--shm-size",
                s,
                "use a number with an optional b, k, m or g suffix",
            )
        })?;
        if n <= 0 {
            return Err(invalid("--shm-size", s, "the size must be greater than 0"));
        }
    }
    let caps = if opts.privileged {
        all_capabilities()
    } else {
        tweak_capabilities(&opts.cap_add, &opts.cap_drop)?
    };
    parse_ulimits(&opts.ulimits)?;
    build_sysctls(&opts.sysctls, &opts.network)?;
    for t in &opts.tmpfs {
        parse_tmpfs(t)?;
    }
    for e in &opts.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        check_env_key(key, e)?;
    }
    if let Some(h) = &opts.hostname {
        if matches!(opts.network, NetworkMode::Join(_)) {
            return Err(SpecError::Conflict(
                "--hostname cannot be used with --network container:...".into(),
            ));
        }
        validate_hostname(h)?;
    }
    if let Some(w) = opts.workdir.as_deref().filter(|w| !w.is_empty()) {
        if !w.starts_with('/') {
            return Err(invalid(
                "--workdir",
                w,
                "the working directory must be an absolute path",
            ));
        }
    }
    if let NetworkMode::Join(path) = &opts.network {
        // An absolute netns path, or a container's name (the engine
        // resolves `container:NAME` to its netns at start).
        if path.is_empty() {
            return Err(invalid(
                "network namespace path",
                path,
                "use an absolute path such as /proc/PID/ns/net or container:NAME",
            ));
        }
    }
    if let Some(sig) = &opts.stop_signal {
        parse_signal(sig).map_err(|_| {
            invalid(
                "--stop-signal",
                sig,
                "use a signal name such as SIGTERM or a number",
            )
        })?;
    }
    if let Some(u) = &opts.user {
        let (user, group) = u.split_once(':').unwrap_or((u.as_str(), ""));
        parse_id(user, "--user", u)?;
        parse_id(group, "--user", u)?;
    }
    build_seccomp(opts, &caps)?;
    validate_namespaces_and_dns(opts)?;
    for m in &opts.binds {
        if !m.destination().is_absolute() {
            return Err(invalid(
                "mount destination",
                &m.destination().display().to_string(),
                "the destination must be an absolute path",
            ));
        }
    }
    Ok(())
}

/// `--expose` values with ranges (`8000-8010[/udp]`) spelled out as single
/// `PORT/PROTO` entries, as Docker stores them; bad values are refused.
pub fn expand_expose(flags: &[String]) -> Result<Vec<String>, SpecError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for f in flags {
        let bad = || invalid("--expose", f, "use PORT[-PORT][/tcp|udp|sctp]");
        let (ports, proto) = f.split_once('/').unwrap_or((f.as_str(), "tcp"));
        if !matches!(proto, "tcp" | "udp" | "sctp") {
            return Err(bad());
        }
        let port = |s: &str| s.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(bad);
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(ports)?, port(ports)?),
        };
        if first > last {
            return Err(bad());
        }
        for n in first..=last {
            if seen.insert((n, proto)) {
                out.push(format!("{n}/{proto}"));
            }
        }
    }
    Ok(out)
}

/// `--pid`, `--ipc`, `--uts`, `--add-host`, `--dns*` and `--expose`.
fn validate_namespaces_and_dns(opts: &RunOptions) -> Result<(), SpecError> {
    let one_of = |flag: &str, value: &Option<String>, allowed: &[&str]| match value {
        Some(v) if !allowed.contains(&v.as_str()) => {
            Err(invalid(flag, v, &format!("use {}", allowed.join(" or "))))
        }
        _ => Ok(()),
    };
    one_of("--pid", &opts.pid, &["host"])?;
    one_of("--ipc", &opts.ipc, &["host", "private", "shareable"])?;
    one_of("--uts", &opts.uts, &["host"])?;
    if opts.host_uts() && opts.hostname.is_some() {
        return Err(SpecError::Conflict(
            "--hostname cannot be used with --uts host".into(),
        ));
    }
    for h in &opts.extra_hosts {
        parse_extra_host(h)?;
    }
    for d in &opts.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid("--dns", d, "use an IP address"));
        }
    }
    let dns_set =
        !(opts.dns.is_empty() && opts.dns_search.is_empty() && opts.dns_options.is_empty());
    if dns_set && matches!(opts.network, NetworkMode::Host | NetworkMode::Join(_)) {
        return Err(SpecError::Conflict(
            "--dns, --dns-search and --dns-option cannot be used with --network host or container:...".into(),
        ));
    }
    expand_expose(&opts.expose)?;
    Ok(())
}

/// Resolve `user[:group]` (names or numbers) against the container's
/// `/etc/passwd` and `/etc/group` under `rootfs`, as `-u` does, returning
/// `(uid, gid)`; e.g. for `berth exec -u`. Errors as [`build_spec`]'s.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), SpecError> {
    let r = resolve_exec_user(Some(user), rootfs)?;
    Ok((r.uid, r.gid))
}

/// Entrypoint plus command, as Docker composes them.
fn compose_args(
    opts: &RunOptions,
    image: &oci_spec::image::Config,
) -> Result<Vec<String>, SpecError> {
    // `--entrypoint ""` arrives as Some([]) or Some([""]): both mean "none".
    let entrypoint: Vec<String> = match &opts.entrypoint {
        Some(e) if e.iter().all(|s| s.is_empty()) => Vec::new(),
        Some(e) => e.clone(),
        None => image.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = if !opts.cmd.is_empty() {
        opts.cmd.clone()
    } else if opts.entrypoint.is_some() {
        Vec::new()
    } else {
        image.cmd().clone().unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// An ordered environment where a later value replaces an earlier one in place.
#[derive(Default)]
struct Env {
    entries: Vec<(String, String)>,
}

impl Env {
    fn set(&mut self, key: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _)| k == key)
    }

    fn into_vec(self) -> Vec<String> {
        self.entries
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// `base` with `entries` laid over it (both `KEY=VALUE`; others are left
/// out): a later value replaces an earlier one of its key in place, new keys
/// go last.
pub(crate) fn overlay_env(base: &[String], entries: &[String]) -> Vec<String> {
    let mut env = Env::default();
    for (k, v) in base.iter().chain(entries).filter_map(|e| e.split_once('=')) {
        env.set(k, v);
    }
    env.into_vec()
}

fn compose_env(
    opts: &RunOptions,
    image: &oci_spec::image::Config,
    hostname: &str,
    home: &str,
    host_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SpecError> {
    let mut env = Env::default();
    for entry in image.env().iter().flatten() {
        // Image entries are KEY=VAL; anything else is not an environment entry.
        if let Some((k, v)) = entry.split_once('=') {
            if !k.is_empty() {
                env.set(k, v);
            }
        }
    }
    if !env.has("PATH") {
        env.set("PATH", DEFAULT_PATH);
    }
    env.set("HOSTNAME", hostname);
    if opts.tty {
        env.set("TERM", "xterm");
    }
    for entry in &opts.env {
        match entry.split_once('=') {
            Some((k, v)) => {
                check_env_key(k, entry)?;
                env.set(k, v);
            }
            None => {
                check_env_key(entry, entry)?;
                if let Some(v) = host_env(entry) {
                    env.set(entry, &v);
                }
            }
        }
    }
    if !env.has("HOME") {
        env.set("HOME", home);
    }
    Ok(env.into_vec())
}

fn check_env_key(key: &str, entry: &str) -> Result<(), SpecError> {
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains('\0') {
        return Err(invalid(
            "-e",
            entry,
            "use KEY=VALUE or KEY (a name without spaces)",
        ));
    }
    Ok(())
}

fn validate_hostname(h: &str) -> Result<(), SpecError> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "--hostname",
            h,
            "use at most 64 letters, digits, '-', '_' or '.'",
        ))
    }
}

fn host_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A user resolved against the container's passwd and group files.
#[derive(Debug, PartialEq)]
struct ResolvedUser {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
    home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3)?.trim().parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_id(s: &str, flag: &str, whole: &str) -> Result<Option<u32>, SpecError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match s.parse::<u32>() {
        Ok(n) if n <= i32::MAX as u32 => Ok(Some(n)),
        _ => Err(invalid(
            flag,
            whole,
            "uids and gids must be in range 0-2147483647",
        )),
    }
}

/// Resolve `user[:group]` as runc's `GetExecUser` does.
fn resolve_exec_user(spec: Option<&str>, rootfs: &Path) -> Result<ResolvedUser, SpecError> {
    let spec = spec.unwrap_or("");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let flag = "--user";

    let (uid, mut gid, home, name) = if user_part.is_empty() {
        // Default user root; still look it up for its home and groups.
        match passwd.iter().find(|p| p.uid == 0) {
            Some(p) => (0, p.gid, p.home.clone(), Some(p.name.clone())),
            None => (0, 0, "/".to_string(), None),
        }
    } else if let Some(uid) = parse_id(user_part, flag, spec)? {
        match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, p.home.clone(), Some(p.name.clone())),
            None => (uid, 0, "/".to_string(), None),
        }
    } else {
        match passwd.iter().find(|p| p.name == user_part) {
            Some(p) => (p.uid, p.gid, p.home.clone(), Some(p.name.clone())),
            None => return Err(SpecError::UnknownUser(user_part.to_string())),
        }
    };
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };

    let mut additional_gids = Vec::new();
    let explicit_group = group_part.filter(|g| !g.is_empty());
    if let Some(g) = explicit_group {
        if let Some(n) = parse_id(g, flag, spec)? {
            gid = n;
        } else {
            let groups = read_in_root(rootfs, "etc/group")?
                .map(|t| parse_group(&t))
                .unwrap_or_default();
            gid = groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| SpecError::UnknownGroup(g.to_string()))?;
        }
    } else if let Some(name) = &name {
        // Supplementary groups only in the implicit form, as runc.
        let groups = read_in_root(rootfs, "etc/group")?
            .map(|t| parse_group(&t))
            .unwrap_or_default();
        for e in groups {
            if e.members.iter().any(|m| m == name) && !additional_gids.contains(&e.gid) {
                additional_gids.push(e.gid);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Read a regular file at `rel` inside `root`, resolving symlinks as if
/// `root` were `/` (an image's `/etc/passwd -> /host/file` link never leaves
/// the rootfs). `Ok(None)` if it does not exist or is not a regular file.
fn read_in_root(root: &Path, rel: &str) -> Result<Option<String>, SpecError> {
    let Some(path) = resolve_in_root(root, Path::new(rel)) else {
        return Ok(None);
    };
    let read_err = |source| SpecError::Read {
        path: path.clone(),
        source,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if meta.len() > MAX_ROOTFS_FILE {
        return Err(read_err(std::io::Error::other(format!(
            "larger than {MAX_ROOTFS_FILE} bytes"
        ))));
    }
    let bytes = std::fs::read(&path).map_err(read_err)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Resolve `rel` under `root` following symlinks within `root`; `None` on a
/// loop, too many links, or a missing intermediate component.
pub(crate) fn resolve_in_root(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return None;
                }
                let target = std::fs::read_link(&candidate).ok()?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(s) => pending.push(s.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => resolved.push(part),
            Err(_) => {
                if pending.is_empty() {
                    resolved.push(part);
                } else {
                    return None;
                }
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Some(out)
}

/// Every capability name with its number (capabilities(7)).
const ALL_CAPS: &[(&str, u32)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

/// Docker's default capability set.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(format!("CAP_{name}"))).ok()
}

/// Normalise a `--cap-add`/`--cap-drop` value to its bare upper-case name
/// (`ALL` stays `ALL`).
fn normalize_cap(raw: &str, flag: &str) -> Result<String, SpecError> {
    let upper = raw.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" || ALL_CAPS.iter().any(|(n, _)| *n == bare) {
        Ok(bare.to_string())
    } else {
        Err(invalid(
            flag,
            raw,
            "unknown capability; use a name from capabilities(7) such as NET_ADMIN, with or without CAP_, or ALL",
        ))
    }
}

/// The capability numbers in this process's bounding set (what the host can
/// grant), or `None` if it cannot be read.
fn host_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
    u64::from_str_radix(line.trim_start_matches("CapBnd:").trim(), 16).ok()
}

/// Every capability the host can grant (as Docker's `GetAllCapabilities`,
/// which lists those the running kernel knows).
fn all_capabilities() -> Capabilities {
    let bounding = host_bounding_set();
    ALL_CAPS
        .iter()
        .filter(|(_, n)| bounding.is_none_or(|b| b & (1u64 << n) != 0))
        .filter_map(|(name, _)| capability(name))
        .collect()
}

/// Docker's `TweakCapabilities`.
fn tweak_capabilities(add: &[String], drop: &[String]) -> Result<Capabilities, SpecError> {
    let add = add
        .iter()
        .map(|c| normalize_cap(c, "--cap-add"))
        .collect::<Result<Vec<_>, _>>()?;
    let drop = drop
        .iter()
        .map(|c| normalize_cap(c, "--cap-drop"))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = if add.iter().any(|c| c == "ALL") {
        let all = all_capabilities();
        ALL_CAPS
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| !drop.contains(n))
            .filter(|n| capability(n).is_some_and(|c| all.contains(&c)))
            .collect()
    } else if drop.iter().any(|c| c == "ALL") {
        add
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|n| n.to_string())
            .filter(|n| !drop.contains(n))
            .chain(add)
            .collect()
    };
    Ok(names.iter().filter_map(|n| capability(n)).collect())
}

/// The default profile's syscalls that Docker's profile re-allows when the
/// container holds a capability.
const CAP_SYSCALLS: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
            "clone",
            "clone3",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "migrate_pages",
            "move_pages",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
    (Capability::DacReadSearch, &["open_by_handle_at"]),
];

/// berth's default profile, with the syscalls the capabilities unlock removed
/// from its deny rules.
fn default_seccomp(caps: &Capabilities) -> LinuxSeccomp {
    let mut profile = berth_runtime::seccomp::default_profile();
    let allowed: HashSet<&str> = CAP_SYSCALLS
        .iter()
        .filter(|(c, _)| caps.contains(c))
        .flat_map(|(_, names)| names.iter().copied())
        .collect();
    if allowed.is_empty() {
        return profile;
    }
    let rules = profile
        .syscalls()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|mut rule| {
            let names: Vec<String> = rule
                .names()
                .iter()
                .filter(|n| !allowed.contains(n.as_str()))
                .cloned()
                .collect();
            if names.is_empty() {
                return None;
            }
            rule.set_names(names);
            Some(rule)
        })
        .collect();
    profile.set_syscalls(Some(rules));
    profile
}

fn build_seccomp(
    opts: &RunOptions,
    caps: &Capabilities,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if opts.privileged {
        return Ok(None);
    }
    match opts.seccomp.as_deref() {
        None | Some("") => Ok(Some(default_seccomp(caps))),
        Some("unconfined") => Ok(None),
        Some(path) => load_seccomp_profile(Path::new(path), caps).map(Some),
    }
}

/// Read a seccomp profile in OCI `LinuxSeccomp` or Docker's format (which
/// adds `archMap`, `architectures` and per-rule `includes`/`excludes`).
fn load_seccomp_profile(path: &Path, caps: &Capabilities) -> Result<LinuxSeccomp, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| SpecError::Seccomp {
        path: path.to_path_buf(),
        reason,
    };
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| bad("the profile must be a JSON object".into()))?;
    if !obj.contains_key("defaultAction") {
        return Err(bad("missing \"defaultAction\"".into()));
    }
    // Architectures are not used by berth's filters (native ABI only).
    obj.remove("architectures");
    obj.remove("archMap");
    if let Some(syscalls) = obj.get_mut("syscalls").and_then(|s| s.as_array_mut()) {
        let arch = std::env::consts::ARCH;
        syscalls.retain(|rule| rule_applies(rule, caps, arch));
        for rule in syscalls.iter_mut() {
            if let Some(r) = rule.as_object_mut() {
                r.remove("includes");
                r.remove("excludes");
                r.remove("comment");
                // Docker's older format: a single "name".
                if let Some(name) = r.remove("name") {
                    if !r.contains_key("names") {
                        r.insert("names".into(), serde_json::Value::Array(vec![name]));
                    }
                }
            }
        }
    }
    let profile: LinuxSeccomp = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    berth_runtime::seccomp::compile(&profile).map_err(|e| bad(e.to_string()))?;
    Ok(profile)
}

/// Whether a Docker profile rule's `includes`/`excludes` conditions hold for
/// these capabilities on this architecture (`minKernel` is not checked).
fn rule_applies(rule: &serde_json::Value, caps: &Capabilities, arch: &str) -> bool {
    let docker_arch = match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    let has_cap = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| normalize_cap(s, "").ok())
            .and_then(|n| capability(&n))
            .is_some_and(|c| caps.contains(&c))
    };
    let list = |cond: &serde_json::Value, key: &str| -> Vec<serde_json::Value> {
        cond.get(key)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    if let Some(inc) = rule.get("includes") {
        let arches = list(inc, "arches");
        if !arches.is_empty() && !arches.iter().any(|a| a.as_str() == Some(docker_arch)) {
            return false;
        }
        if !list(inc, "caps").iter().all(has_cap) {
            return false;
        }
    }
    if let Some(exc) = rule.get("excludes") {
        if list(exc, "arches")
            .iter()
            .any(|a| a.as_str() == Some(docker_arch))
        {
            return false;
        }
        if list(exc, "caps").iter().any(has_cap) {
            return false;
        }
    }
    true
}

/// The cgroup limits of `--memory`, `--memory-swap` (twice the memory unless
/// given), `--cpus` and `--pids-limit`, checked together.
pub fn build_resources(opts: &RunOptions) -> Result<LinuxResources, SpecError> {
    let mut resources = LinuxResources::default();
    let size_hint = "use a number with an optional b, k, m or g suffix";

    let memory = match opts.memory.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => {
            let n = parse_bytes(s).map_err(|_| invalid("--memory", s, size_hint))?;
            if n != 0 && n < MIN_MEMORY {
                return Err(invalid("--memory", s, "the minimum memory limit is 6m"));
            }
            (n > 0).then_some(n)
        }
        None => None,
    };
    let swap = match opts.memory_swap.as_deref().filter(|s| !s.is_empty()) {
        Some("-1") => Some(-1),
        Some(s) => {
            let n = parse_bytes(s).map_err(|_| {
                invalid(
                    "--memory-swap",
                    s,
                    "use -1 (unlimited) or a number with an optional b, k, m or g suffix",
                )
            })?;
            if n == 0 {
                None
            } else {
                match memory {
                    None => {
                        return Err(SpecError::Conflict(
                            "--memory-swap needs --memory as well".into(),
                        ))
                    }
                    Some(m) if n < m => {
                        return Err(invalid(
                            "--memory-swap",
                            s,
                            "memory plus swap must be at least --memory",
                        ))
                    }
                    Some(_) => Some(n),
                }
            }
        }
        None => None,
    };
    if let Some(m) = memory {
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(m));
        mem.set_swap(Some(swap.unwrap_or(m.saturating_mul(2))));
        resources.set_memory(Some(mem));
    }

    if let Some(s) = opts.cpus.as_deref().filter(|s| !s.is_empty()) {
        let expected = "use a positive number of CPUs such as 0.5 or 2";
        let cpus: f64 = s
            .trim()
            .parse()
            .map_err(|_| invalid("--cpus", s, expected))?;
        if !cpus.is_finite() || cpus < 0.0 {
            return Err(invalid("--cpus", s, expected));
        }
        let quota = (cpus * CPU_PERIOD as f64).round() as i64;
        if cpus > 0.0 {
            if quota < 1000 {
                return Err(invalid("--cpus", s, "the minimum is 0.01"));
            }
            let mut cpu = LinuxCpu::default();
            cpu.set_quota(Some(quota));
            cpu.set_period(Some(CPU_PERIOD));
            resources.set_cpu(Some(cpu));
        }
    }

    if let Some(n) = opts.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(if n > 0 { n } else { -1 });
        resources.set_pids(Some(pids));
    }
    Ok(resources)
}

/// Parse a size as Docker's `RAMInBytes` does ([`berth_volumes::parse_bytes`]:
/// "64m", "1g", "512k", "1024" bytes, "1.5GiB").
pub fn parse_bytes(s: &str) -> Result<i64, SpecError> {
    berth_volumes::parse_bytes(s)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                "size",
                s,
                "use a number with an optional b, k, m or g suffix",
            )
        })
}

/// Linux signal names and numbers (x86 and arm numbering).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// The signal number for a name or number: "SIGTERM", "TERM", "term", "15",
/// "SIGRTMIN+3", "RTMAX-1" — for `--stop-signal` and `kill -s` validation.
pub fn parse_signal(s: &str) -> Result<i32, SpecError> {
    let err = || {
        invalid(
            "signal",
            s,
            "use a signal name such as SIGTERM or TERM, or a number from 1 to 64",
        )
    };
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(err())
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((_, n)) = SIGNALS.iter().find(|(k, _)| *k == name) {
        return Ok(*n);
    }
    let rt = |base: i32, rest: &str, sign: i32| -> Result<i32, SpecError> {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.parse().map_err(|_| err())?
        };
        let n = base + sign * off;
        if (SIGRTMIN..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(err())
        }
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return match rest.strip_prefix('+') {
            Some(off) => rt(SIGRTMIN, off, 1),
            None if rest.is_empty() => rt(SIGRTMIN, "", 1),
            None => Err(err()),
        };
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return match rest.strip_prefix('-') {
            Some(off) => rt(SIGRTMAX, off, -1),
            None if rest.is_empty() => rt(SIGRTMAX, "", 1),
            None => Err(err()),
        };
    }
    Err(err())
}

fn rlimit_type(name: &str) -> Option<PosixRlimitType> {
    Some(match name {
        "as" => PosixRlimitType::RlimitAs,
        "core" => PosixRlimitType::RlimitCore,
        "cpu" => PosixRlimitType::RlimitCpu,
        "data" => PosixRlimitType::RlimitData,
        "fsize" => PosixRlimitType::RlimitFsize,
        "locks" => PosixRlimitType::RlimitLocks,
        "memlock" => PosixRlimitType::RlimitMemlock,
        "msgqueue" => PosixRlimitType::RlimitMsgqueue,
        "nice" => PosixRlimitType::RlimitNice,
        "nofile" => PosixRlimitType::RlimitNofile,
        "nproc" => PosixRlimitType::RlimitNproc,
        "rss" => PosixRlimitType::RlimitRss,
        "rtprio" => PosixRlimitType::RlimitRtprio,
        "rttime" => PosixRlimitType::RlimitRttime,
        "sigpending" => PosixRlimitType::RlimitSigpending,
        "stack" => PosixRlimitType::RlimitStack,
        _ => return None,
    })
}

/// `--ulimit NAME=SOFT[:HARD]` values (a later one for the same name wins;
/// `-1` or `unlimited` is no limit).
fn parse_ulimits(values: &[String]) -> Result<Vec<PosixRlimit>, SpecError> {
    let mut out: Vec<PosixRlimit> = Vec::new();
    for v in values {
        let expected = "use NAME=SOFT[:HARD] with NAME one of as, core, cpu, data, fsize, locks, \
                        memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack";
        let (name, limits) = v
            .split_once('=')
            .ok_or_else(|| invalid("--ulimit", v, expected))?;
        let typ = rlimit_type(&name.trim().to_ascii_lowercase())
            .ok_or_else(|| invalid("--ulimit", v, expected))?;
        let num = |s: &str| -> Result<u64, SpecError> {
            match s.trim() {
                "-1" | "unlimited" => Ok(u64::MAX),
                t => t
                    .parse::<u64>()
                    .map_err(|_| invalid("--ulimit", v, "limits must be numbers, -1 or unlimited")),
            }
        };
        let (soft, hard) = match limits.split_once(':') {
            Some((s, h)) => (num(s)?, num(h)?),
            None => {
                let n = num(limits)?;
                (n, n)
            }
        };
        if soft > hard {
            return Err(invalid(
                "--ulimit",
                v,
                "the soft limit must be less than or equal to the hard limit",
            ));
        }
        let rl = PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
            .map_err(|e| invalid("--ulimit", v, &e.to_string()))?;
        out.retain(|r| r.typ() != typ);
        out.push(rl);
    }
    Ok(out)
}

/// IPC sysctls that are namespaced (Docker's list).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// `--sysctl` values, validated as Docker does, plus Docker's defaults for a
/// container with its own network namespace.
fn build_sysctls(
    values: &[String],
    network: &NetworkMode,
) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    for v in values {
        let (k, val) = v
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| invalid("--sysctl", v, "use KEY=VALUE, e.g. net.ipv4.ip_forward=1"))?;
        let key = k.trim().replace('/', ".");
        if key.starts_with("net.") {
            match network {
                NetworkMode::Host => {
                    return Err(invalid(
                        "--sysctl",
                        v,
                        "net.* sysctls cannot be set with --network host",
                    ))
                }
                NetworkMode::Join(_) => {
                    return Err(invalid(
                        "--sysctl",
                        v,
                        "net.* sysctls cannot be set in a network namespace joined from another container",
                    ))
                }
                NetworkMode::None | NetworkMode::Bridge(_) => {}
            }
        } else if !(IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.")) {
            return Err(invalid(
                "--sysctl",
                v,
                "only namespaced sysctls can be set: net.*, fs.mqueue.* and kernel.{msgmax,msgmnb,msgmni,sem,shmall,shmmax,shmmni,shm_rmid_forced}",
            ));
        }
        out.insert(key, val.to_string());
    }
    if matches!(network, NetworkMode::None | NetworkMode::Bridge(_)) {
        out.entry("net.ipv4.ip_unprivileged_port_start".into())
            .or_insert_with(|| "0".into());
        out.entry("net.ipv4.ping_group_range".into())
            .or_insert_with(|| "0 2147483647".into());
    }
    Ok(out)
}

/// Options `--tmpfs` accepts (besides `size=`, `mode=`, `uid=`, `gid=`, `nr_inodes=`,
/// `nr_blocks=`, `mpol=`).
const TMPFS_FLAGS: &[&str] = &[
    "rw",
    "ro",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "sync",
    "async",
    "dirsync",
    "mand",
    "nomand",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];
const TMPFS_KEYS: &[&str] = &[
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

/// `--tmpfs /path[:opts]`: a tmpfs with `nosuid,nodev,noexec` plus the given
/// options (a given `exec`, `suid` or `dev` replaces its default `no` form).
fn parse_tmpfs(value: &str) -> Result<Mount, SpecError> {
    let (dest, opts) = match value.split_once(':') {
        Some((d, o)) => (d, o),
        None => (value, ""),
    };
    if !dest.starts_with('/') || normalize(Path::new(dest)) == Path::new("/") {
        return Err(invalid(
            "--tmpfs",
            value,
            "use an absolute path other than / with optional options, e.g. /run:size=64m,mode=1777",
        ));
    }
    let mut options: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
    for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let known = TMPFS_FLAGS.contains(&o)
            || o.split_once('=')
                .is_some_and(|(k, v)| TMPFS_KEYS.contains(&k) && !v.is_empty());
        if !known {
            return Err(invalid(
                "--tmpfs",
                value,
                &format!("unknown tmpfs option {o:?}; use e.g. size=64m, mode=1777, exec, ro"),
            ));
        }
        // The option replaces its opposite and any earlier value of the same key.
        let opposite = match o {
            "exec" | "suid" | "dev" | "atime" | "diratime" | "mand" => format!("no{o}"),
            _ if o.starts_with("no") && TMPFS_FLAGS.contains(&o) => o[2..].to_string(),
            "rw" => "ro".into(),
            "ro" => "rw".into(),
            _ => String::new(),
        };
        let key = o.split_once('=').map(|(k, _)| format!("{k}="));
        options.retain(|x| {
            *x != opposite && *x != o && key.as_ref().is_none_or(|k| !x.starts_with(k.as_str()))
        });
        options.push(o.to_string());
    }
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some("tmpfs".into()));
    m.set_source(Some(PathBuf::from("tmpfs")));
    m.set_options(Some(options));
    Ok(m)
}

/// A bind mount of `source` on `dest` with `options`.
pub(crate) fn bind_mount(source: &Path, dest: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some("bind".into()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// The default mounts, with the `/dev/shm` size and, when privileged, `/sys`
/// and the cgroup mount read-write.
fn default_mounts(spec: &Spec, privileged: bool, shm_size: i64) -> Vec<Mount> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mut mounts {
        let dest = m.destination().clone();
        let mut options = m.options().clone().unwrap_or_default();
        if dest == Path::new("/dev/shm") {
            options.retain(|o| !o.starts_with("size="));
            options.push(format!("size={shm_size}"));
        }
        if privileged && (dest == Path::new("/sys") || dest == Path::new("/sys/fs/cgroup")) {
            for o in &mut options {
                if o == "ro" {
                    *o = "rw".into();
                }
            }
        }
        m.set_options(Some(options));
    }
    mounts
}

/// A path with `.` and trailing slashes removed, for comparing destinations.
fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlay_env_replaces_in_place_and_appends() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            super::overlay_env(&v(&["A=1", "B=2", "junk"]), &v(&["B=3", "C=", "A=x=y"])),
            v(&["A=x=y", "B=3", "C="])
        );
    }

    #[test]
    fn expose_ranges_are_spelled_out() {
        let flags: Vec<String> = ["80", "7000-7002/udp", "80/tcp"].map(String::from).to_vec();
        assert_eq!(
            expand_expose(&flags).unwrap(),
            ["80/tcp", "7000/udp", "7001/udp", "7002/udp"]
        );
        for bad in ["0", "70000", "9-3", "80/icmp", "a-b", "1-"] {
            assert!(expand_expose(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
    use super::*;
    use oci_spec::image::{Config, ImageConfiguration};

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfiguration {
        let mut config = Config::default();
        config.set_entrypoint(entrypoint.map(|e| e.iter().map(|s| s.to_string()).collect()));
        config.set_cmd(cmd.map(|c| c.iter().map(|s| s.to_string()).collect()));
        let mut img = ImageConfiguration::default();
        img.set_config(Some(config));
        img
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    struct Fixture {
        dir: tempfile::TempDir,
        image: ImageConfiguration,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("etc")).unwrap();
            std::fs::write(
                dir.path().join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\n\
                 daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                 alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
                 nohome:x:1001:1001::::\n",
            )
            .unwrap();
            std::fs::write(
                dir.path().join("etc/group"),
                "root:x:0:\nwheel:x:10:root,alice\nalice:x:1000:\naudio:x:29:bob,alice\nstaff:x:50:\n",
            )
            .unwrap();
            Fixture {
                dir,
                image: image(None, Some(&["sh"])),
            }
        }

        fn inputs(&self) -> SpecInputs<'_> {
            SpecInputs {
                image: &self.image,
                rootfs: self.dir.path(),
                container_id: "0123456789abcdef0123",
                host_env: &no_env,
                init_path: None,
                cgroups_path: Some("berth/0123456789abcdef0123".into()),
                extra_mounts: Vec::new(),
            }
        }

        fn build(&self, opts: &RunOptions) -> Result<Spec, SpecError> {
            build_checked(opts, &self.inputs())
        }
    }

    /// Build, then serialise and parse back with the runtime's checker.
    fn build_checked(opts: &RunOptions, inputs: &SpecInputs<'_>) -> Result<Spec, SpecError> {
        let spec = build_spec(opts, inputs)?;
        let text = serde_json::to_string(&spec).unwrap();
        let back = berth_runtime::spec::parse_spec(&text).expect("runtime accepts the spec");
        assert_eq!(back, spec);
        Ok(spec)
    }

    fn args(spec: &Spec) -> Vec<String> {
        spec.process().as_ref().unwrap().args().clone().unwrap()
    }

    fn env(spec: &Spec) -> Vec<String> {
        spec.process().as_ref().unwrap().env().clone().unwrap()
    }

    fn caps(spec: &Spec) -> LinuxCapabilities {
        spec.process()
            .as_ref()
            .unwrap()
            .capabilities()
            .clone()
            .unwrap()
    }

    fn mount<'s>(spec: &'s Spec, dest: &str) -> Option<&'s Mount> {
        spec.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new(dest))
    }

    #[test]
    fn command_composition_table() {
        type Row<'a> = (
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            &'a [&'a str],
            Option<&'a [&'a str]>,
        );
        let rows: &[Row] = &[
            // image entrypoint, image cmd, --entrypoint, args, expected
            (None, Some(&["sh"]), None, &[], Some(&["sh"])),
            (
                None,
                Some(&["sh"]),
                None,
                &["echo", "hi"],
                Some(&["echo", "hi"]),
            ),
            (Some(&["/ep"]), Some(&["a"]), None, &[], Some(&["/ep", "a"])),
            (
                Some(&["/ep"]),
                Some(&["a"]),
                None,
                &["b"],
                Some(&["/ep", "b"]),
            ),
            (Some(&["/ep"]), None, None, &[], Some(&["/ep"])),
            (
                Some(&["/ep"]),
                Some(&["a"]),
                Some(&["/new"]),
                &[],
                Some(&["/new"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["a"]),
                Some(&["/new"]),
                &["x"],
                Some(&["/new", "x"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["a"]),
                Some(&[]),
                &["ls"],
                Some(&["ls"]),
            ),
            (
                Some(&["/ep"]),
                Some(&["a"]),
                Some(&[""]),
                &["ls"],
                Some(&["ls"]),
            ),
            (Some(&["/ep"]), Some(&["a"]), Some(&[]), &[], None),
            (None, None, None, &[], None),
            (None, Some(&[]), None, &[], None),
        ];
        let fx = Fixture::new();
        for (i, (ep, cmd, flag, given, expected)) in rows.iter().enumerate() {
            let img = image(*ep, *cmd);
            let mut inputs = fx.inputs();
            inputs.image = &img;
            let opts = RunOptions {
                entrypoint: flag.map(strings),
                cmd: strings(given),
                ..Default::default()
            };
            match (build_checked(&opts, &inputs), expected) {
                (Ok(spec), Some(e)) => assert_eq!(args(&spec), strings(e), "row {i}"),
                (Err(SpecError::NoCommand), None) => {}
                (other, _) => panic!("row {i}: unexpected {other:?}"),
            }
        }
        assert_eq!(SpecError::NoCommand.to_string(), "no command specified");
    }

    #[test]
    fn env_merge() {
        let fx = Fixture::new();
        let mut img = image(None, Some(&["sh"]));
        let mut config = img.config().clone().unwrap();
        config.set_env(Some(strings(&["A=1", "B=image", "HOME=/img"])));
        img.set_config(Some(config));
        let host = |k: &str| (k == "FROM_HOST").then(|| "h".to_string());
        let mut inputs = fx.inputs();
        inputs.image = &img;
        inputs.host_env = &host;
        let opts = RunOptions {
            tty: true,
            env: strings(&["B=flag", "C=3", "FROM_HOST", "MISSING", "A=", "B=last"]),
            ..Default::default()
        };
        let spec = build_checked(&opts, &inputs).unwrap();
        assert_eq!(
            env(&spec),
            strings(&[
                "A=",
                "B=last",
                "HOME=/img",
                &format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=0123456789ab",
                "TERM=xterm",
                "C=3",
                "FROM_HOST=h",
            ])
        );

        // No tty: no TERM; HOME from passwd; image PATH kept.
        let mut config = img.config().clone().unwrap();
        config.set_env(Some(strings(&["PATH=/bin"])));
        img.set_config(Some(config));
        let mut inputs = fx.inputs();
        inputs.image = &img;
        let opts = RunOptions {
            user: Some("alice".into()),
            hostname: Some("web".into()),
            ..Default::default()
        };
        let spec = build_checked(&opts, &inputs).unwrap();
        assert_eq!(
            env(&spec),
            strings(&["PATH=/bin", "HOSTNAME=web", "HOME=/home/alice"])
        );
        assert_eq!(spec.hostname().as_deref(), Some("web"));

        let bad = RunOptions {
            env: strings(&["=x"]),
            ..Default::default()
        };
        let err = fx.build(&bad).unwrap_err().to_string();
        assert!(err.contains("invalid -e \"=x\""), "{err}");
    }

    #[test]
    fn user_resolution() {
        let fx = Fixture::new();
        let root = fx.dir.path();
        let r = |u: &str| resolve_exec_user(Some(u), root);
        assert_eq!(
            r("").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![10],
                home: "/root".into()
            }
        );
        assert_eq!(
            r("alice").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10, 29],
                home: "/home/alice".into()
            }
        );
        // Numeric uid in passwd: same as by name.
        assert_eq!(r("1000").unwrap(), r("alice").unwrap());
        // Explicit group: no supplementary groups.
        assert_eq!(
            r("alice:staff").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 50,
                additional_gids: vec![],
                home: "/home/alice".into()
            }
        );
        assert_eq!(r("alice:77").unwrap().gid, 77);
        // Unknown uid: gid 0, home /.
        assert_eq!(
            r("4242").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![],
                home: "/".into()
            }
        );
        assert_eq!(r("4242:4343").unwrap().gid, 4343);
        assert_eq!(r("nohome").unwrap().home, "/");
        assert_eq!(
            r("bob").unwrap_err().to_string(),
            "unable to find user bob: no matching entries in passwd file"
        );
        assert_eq!(
            r("alice:nogroup").unwrap_err().to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(r("99999999999").unwrap_err().to_string().contains("range"));

        // The spec carries it; image USER is used without -u.
        let mut img = image(None, Some(&["id"]));
        let mut config = img.config().clone().unwrap();
        config.set_user(Some("daemon".into()));
        img.set_config(Some(config));
        let mut inputs = fx.inputs();
        inputs.image = &img;
        let spec = build_checked(&RunOptions::default(), &inputs).unwrap();
        let user = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (1, 1));
        let spec = build_checked(
            &RunOptions {
                user: Some("alice".into()),
                ..Default::default()
            },
            &inputs,
        )
        .unwrap();
        let user = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (1000, 1000));
        assert_eq!(user.additional_gids().clone(), Some(vec![10, 29]));
    }

    #[test]
    fn passwd_symlink_stays_in_rootfs() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:7:7::/evil:/bin/sh\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::create_dir_all(root.path().join("real")).unwrap();
        std::fs::write(
            root.path().join("real/passwd"),
            "inside:x:5:6::/in:/bin/sh\n",
        )
        .unwrap();
        // An absolute link is resolved inside the rootfs, never on the host.
        std::os::unix::fs::symlink(
            outside.path().join("passwd"),
            root.path().join("etc/passwd"),
        )
        .unwrap();
        assert!(matches!(
            resolve_exec_user(Some("evil"), root.path()),
            Err(SpecError::UnknownUser(_))
        ));
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("../../../../real/passwd", root.path().join("etc/passwd"))
            .unwrap();
        let u = resolve_exec_user(Some("inside"), root.path()).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (5, 6, "/in"));
        // No passwd at all: numbers work, names do not.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_exec_user(Some("12:34"), empty.path()).unwrap().gid,
            34
        );
        assert!(resolve_exec_user(Some("x"), empty.path()).is_err());
    }

    fn cap_set(names: &[&str]) -> Capabilities {
        names.iter().map(|n| capability(n).unwrap()).collect()
    }

    #[test]
    fn capabilities_add_drop_all_unknown() {
        let fx = Fixture::new();
        let spec = fx.build(&RunOptions::default()).unwrap();
        let c = caps(&spec);
        assert_eq!(c.bounding().clone().unwrap(), cap_set(DEFAULT_CAPS));
        assert_eq!(c.effective().clone().unwrap(), cap_set(DEFAULT_CAPS));
        assert_eq!(c.permitted().clone().unwrap(), cap_set(DEFAULT_CAPS));
        assert!(c.inheritable().clone().unwrap().is_empty());
        assert!(c.ambient().clone().unwrap().is_empty());

        let opts = RunOptions {
            cap_add: strings(&["net_admin", "CAP_SYS_TIME"]),
            cap_drop: strings(&["cap_chown", "Net_Raw"]),
            ..Default::default()
        };
        let b = caps(&fx.build(&opts).unwrap()).bounding().clone().unwrap();
        assert!(b.contains(&Capability::NetAdmin) && b.contains(&Capability::SysTime));
        assert!(!b.contains(&Capability::Chown) && !b.contains(&Capability::NetRaw));
        assert_eq!(b.len(), DEFAULT_CAPS.len());

        let opts = RunOptions {
            cap_drop: strings(&["ALL"]),
            cap_add: strings(&["kill"]),
            ..Default::default()
        };
        let b = caps(&fx.build(&opts).unwrap()).bounding().clone().unwrap();
        assert_eq!(b, cap_set(&["KILL"]));

        let opts = RunOptions {
            cap_add: strings(&["all"]),
            cap_drop: strings(&["SYS_ADMIN"]),
            ..Default::default()
        };
        let b = caps(&fx.build(&opts).unwrap()).bounding().clone().unwrap();
        assert!(!b.contains(&Capability::SysAdmin));
        assert!(b.contains(&Capability::NetAdmin));
        assert_eq!(b.len(), all_capabilities().len() - 1);

        let opts = RunOptions {
            cap_add: strings(&["FLY"]),
            ..Default::default()
        };
        let err = fx.build(&opts).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid --cap-add \"FLY\": unknown capability"),
            "{err}"
        );

        // A non-root user keeps the bounding set but no effective or permitted caps.
        let opts = RunOptions {
            user: Some("1000".into()),
            ..Default::default()
        };
        let c = caps(&fx.build(&opts).unwrap());
        assert_eq!(c.bounding().clone().unwrap(), cap_set(DEFAULT_CAPS));
        assert!(c.effective().clone().unwrap().is_empty());
        assert!(c.permitted().clone().unwrap().is_empty());
    }

    #[test]
    fn default_security() {
        let fx = Fixture::new();
        let spec = fx.build(&RunOptions::default()).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.seccomp().as_ref(),
            Some(&berth_runtime::seccomp::default_profile())
        );
        assert!(!linux.masked_paths().clone().unwrap().is_empty());
        assert!(!linux.readonly_paths().clone().unwrap().is_empty());
        assert!(mount(&spec, "/sys")
            .unwrap()
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".into()));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(false));
        assert_eq!(process.terminal(), Some(false));
        assert_eq!(process.rlimits(), &None);
        assert_eq!(process.cwd(), Path::new("/"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        assert_eq!(spec.root().as_ref().unwrap().path(), fx.dir.path());
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("berth/0123456789abcdef0123"))
        );
        assert!(mount(&spec, "/tmp").is_none());

        let opts = RunOptions {
            no_new_privileges: true,
            tty: true,
            workdir: Some("/srv".into()),
            ..Default::default()
        };
        let spec = fx.build(&opts).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(process.cwd(), Path::new("/srv"));
        let err = fx
            .build(&RunOptions {
                workdir: Some("rel".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[test]
    fn privileged() {
        let fx = Fixture::new();
        let opts = RunOptions {
            privileged: true,
            seccomp: Some("/does/not/matter.json".into()),
            ..Default::default()
        };
        let spec = fx.build(&opts).unwrap();
        let c = caps(&spec);
        assert!(c
            .bounding()
            .clone()
            .unwrap()
            .contains(&Capability::SysAdmin));
        assert_eq!(c.effective(), c.bounding());
        assert!(c.bounding().clone().unwrap().len() > DEFAULT_CAPS.len());
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().is_none_or(|p| p.is_empty()));
        assert!(linux.readonly_paths().as_ref().is_none_or(|p| p.is_empty()));
        for dest in ["/sys", "/sys/fs/cgroup"] {
            let o = mount(&spec, dest).unwrap().options().clone().unwrap();
            assert!(
                o.contains(&"rw".into()) && !o.contains(&"ro".into()),
                "{dest}: {o:?}"
            );
        }
    }

    #[test]
    fn parse_bytes_values() {
        for (s, n) in [
            ("1024", 1024),
            ("0", 0),
            ("512k", 512 * 1024),
            ("64m", 64 << 20),
            ("64M", 64 << 20),
            ("64mb", 64 << 20),
            ("64MiB", 64 << 20),
            ("1g", 1 << 30),
            ("1.5g", 3 << 29),
            ("2t", 2 << 40),
            ("100b", 100),
            ("64 m", 64 << 20),
        ] {
            assert_eq!(parse_bytes(s).unwrap(), n, "{s}");
        }
        for s in ["", "12x", "-1", "m", "1.2.3", "1bb", "64mbb", ".", "1kk"] {
            assert!(parse_bytes(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn memory_cpus_pids() {
        let fx = Fixture::new();
        let opts = RunOptions {
            memory: Some("64m".into()),
            cpus: Some("1.5".into()),
            pids_limit: Some(100),
            ..Default::default()
        };
        let spec = fx.build(&opts).unwrap();
        let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        let m = r.memory().unwrap();
        assert_eq!((m.limit(), m.swap()), (Some(64 << 20), Some(128 << 20)));
        let c = r.cpu().clone().unwrap();
        assert_eq!((c.quota(), c.period()), (Some(150_000), Some(100_000)));
        assert_eq!(r.pids().unwrap().limit(), 100);

        let swap = |s: &str| {
            let opts = RunOptions {
                memory: Some("64m".into()),
                memory_swap: Some(s.into()),
                ..Default::default()
            };
            fx.build(&opts).map(|spec| {
                spec.linux()
                    .clone()
                    .unwrap()
                    .resources()
                    .clone()
                    .unwrap()
                    .memory()
                    .unwrap()
                    .swap()
            })
        };
        assert_eq!(swap("-1").unwrap(), Some(-1));
        assert_eq!(swap("100m").unwrap(), Some(100 << 20));
        assert!(swap("32m")
            .unwrap_err()
            .to_string()
            .contains("at least --memory"));

        let err = |o: RunOptions| fx.build(&o).unwrap_err().to_string();
        assert_eq!(
            err(RunOptions {
                memory: Some("12x".into()),
                ..Default::default()
            }),
            "invalid --memory \"12x\": use a number with an optional b, k, m or g suffix"
        );
        assert!(err(RunOptions {
            memory: Some("1k".into()),
            ..Default::default()
        })
        .contains("6m"));
        assert!(err(RunOptions {
            memory_swap: Some("1g".into()),
            ..Default::default()
        })
        .contains("--memory-swap needs --memory"));
        assert!(err(RunOptions {
            cpus: Some("abc".into()),
            ..Default::default()
        })
        .starts_with("invalid --cpus \"abc\""));
        assert!(err(RunOptions {
            cpus: Some("-1".into()),
            ..Default::default()
        })
        .starts_with("invalid --cpus \"-1\""));
        assert!(err(RunOptions {
            cpus: Some("0.001".into()),
            ..Default::default()
        })
        .contains("0.01"));

        let spec = fx
            .build(&RunOptions {
                pids_limit: Some(0),
                cpus: Some("0.5".into()),
                ..Default::default()
            })
            .unwrap();
        let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(r.pids().unwrap().limit(), -1);
        assert_eq!(r.cpu().clone().unwrap().quota(), Some(50_000));
        assert!(r.memory().is_none());
    }

    #[test]
    fn shm_size() {
        let fx = Fixture::new();
        let shm = |o: &RunOptions| {
            let spec = fx.build(o).unwrap();
            mount(&spec, "/dev/shm").unwrap().options().clone().unwrap()
        };
        let default = shm(&RunOptions::default());
        assert!(
            default.contains(&format!("size={}", 64 << 20)),
            "{default:?}"
        );
        let big = shm(&RunOptions {
            shm_size: Some("1g".into()),
            ..Default::default()
        });
        assert!(big.contains(&format!("size={}", 1 << 30)));
        assert_eq!(big.iter().filter(|o| o.starts_with("size=")).count(), 1);
        let err = fx
            .build(&RunOptions {
                shm_size: Some("big".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid --shm-size \"big\""));
    }

    #[test]
    fn ulimits() {
        let rl = parse_ulimits(&strings(&[
            "nofile=1024:2048",
            "nproc=100",
            "core=-1",
            "NOFILE=10:20",
        ]))
        .unwrap();
        let find = |t| rl.iter().find(|r| r.typ() == t).unwrap();
        assert_eq!(rl.len(), 3);
        assert_eq!(
            (
                find(PosixRlimitType::RlimitNofile).soft(),
                find(PosixRlimitType::RlimitNofile).hard()
            ),
            (10, 20)
        );
        assert_eq!(
            (
                find(PosixRlimitType::RlimitNproc).soft(),
                find(PosixRlimitType::RlimitNproc).hard()
            ),
            (100, 100)
        );
        assert_eq!(find(PosixRlimitType::RlimitCore).hard(), u64::MAX);
        for bad in ["nofile", "files=1", "nofile=2:1", "nofile=a:b", "nofile="] {
            let err = parse_ulimits(&strings(&[bad])).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid --ulimit {bad:?}")),
                "{err}"
            );
        }
        let fx = Fixture::new();
        let spec = fx
            .build(&RunOptions {
                ulimits: strings(&["nofile=100:200"]),
                ..Default::default()
            })
            .unwrap();
        let rl = spec.process().as_ref().unwrap().rlimits().clone().unwrap();
        assert_eq!(rl.len(), 1);
        assert_eq!(
            (rl[0].typ(), rl[0].soft(), rl[0].hard()),
            (PosixRlimitType::RlimitNofile, 100, 200)
        );
    }

    #[test]
    fn sysctls() {
        let fx = Fixture::new();
        let spec = fx
            .build(&RunOptions {
                sysctls: strings(&[
                    "net.ipv4.ip_forward=1",
                    "kernel.shmmax=100",
                    "fs.mqueue.msg_max=20",
                ]),
                ..Default::default()
            })
            .unwrap();
        let s = spec.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert_eq!(s["net.ipv4.ip_forward"], "1");
        assert_eq!(s["kernel.shmmax"], "100");
        assert_eq!(s["fs.mqueue.msg_max"], "20");
        assert_eq!(s["net.ipv4.ping_group_range"], "0 2147483647");
        let err = |v: &str, network: NetworkMode| {
            fx.build(&RunOptions {
                sysctls: strings(&[v]),
                network,
                ..Default::default()
            })
            .unwrap_err()
            .to_string()
        };
        assert!(err("kernel.hostname=x", NetworkMode::None).contains("namespaced"));
        assert!(err("vm.swappiness=1", NetworkMode::None).contains("namespaced"));
        assert!(err("nokey", NetworkMode::None).contains("KEY=VALUE"));
        assert!(err("net.ipv4.ip_forward=1", NetworkMode::Host).contains("--network host"));
        // Host networking gets none of Docker's per-netns defaults.
        let spec = fx
            .build(&RunOptions {
                network: NetworkMode::Host,
                ..Default::default()
            })
            .unwrap();
        assert!(spec.linux().as_ref().unwrap().sysctl().is_none());
    }

    #[test]
    fn tmpfs_mounts() {
        let m = parse_tmpfs("/run").unwrap();
        assert_eq!(m.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            m.options().clone().unwrap(),
            strings(&["nosuid", "nodev", "noexec"])
        );
        let m = parse_tmpfs("/cache:size=64m,mode=1777,exec,size=32m").unwrap();
        assert_eq!(
            m.options().clone().unwrap(),
            strings(&["nosuid", "nodev", "mode=1777", "exec", "size=32m"])
        );
        for bad in ["relative", "/", "/x:bogus", "/x:size="] {
            let err = parse_tmpfs(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid --tmpfs {bad:?}")),
                "{err}"
            );
        }
        let fx = Fixture::new();
        let spec = fx
            .build(&RunOptions {
                tmpfs: strings(&["/run:size=1m", "/dev/shm:size=2m"]),
                ..Default::default()
            })
            .unwrap();
        assert!(mount(&spec, "/run").is_some());
        let shm: Vec<_> = spec
            .mounts()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|m| m.destination() == Path::new("/dev/shm"))
            .collect();
        assert_eq!(shm.len(), 1);
        assert!(shm[0]
            .options()
            .clone()
            .unwrap()
            .contains(&"size=2m".into()));
    }

    #[test]
    fn mounts_order_and_override() {
        let fx = Fixture::new();
        let hosts = bind_mount(Path::new("/tmp/h1"), "/etc/hosts", &["rbind", "ro"]);
        let mut inputs = fx.inputs();
        inputs.extra_mounts = vec![
            hosts,
            bind_mount(Path::new("/tmp/r"), "/etc/resolv.conf", &["rbind"]),
        ];
        let opts = RunOptions {
            binds: vec![
                bind_mount(Path::new("/data/sub"), "/data/sub", &["rbind"]),
                bind_mount(Path::new("/data"), "/data/", &["rbind"]),
                bind_mount(Path::new("/tmp/h2"), "/etc/hosts", &["rbind"]),
            ],
            ..Default::default()
        };
        let spec = build_checked(&opts, &inputs).unwrap();
        let dests: Vec<String> = spec
            .mounts()
            .clone()
            .unwrap()
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(dests.iter().filter(|d| *d == "/etc/hosts").count(), 1);
        assert_eq!(
            mount(&spec, "/etc/hosts").unwrap().source().as_deref(),
            Some(Path::new("/tmp/h2"))
        );
        let pos = |d: &str| dests.iter().position(|x| x == d).unwrap();
        assert!(pos("/proc") < pos("/data/"));
        assert!(pos("/data/") < pos("/data/sub"), "{dests:?}");
        // Defaults first, in their order.
        assert_eq!(&dests[..2], &["/proc".to_string(), "/dev".to_string()]);

        let mut inputs = fx.inputs();
        inputs.extra_mounts = vec![bind_mount(Path::new("/x"), "relative", &["rbind"])];
        assert!(build_checked(&RunOptions::default(), &inputs).is_err());
    }

    fn namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .into_iter()
            .map(|n| (n.typ(), n.path().clone()))
            .collect()
    }

    #[test]
    fn network_modes() {
        let fx = Fixture::new();
        let base = [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Cgroup,
        ];
        let spec = fx.build(&RunOptions::default()).unwrap();
        let ns = namespaces(&spec);
        assert!(ns.contains(&(LinuxNamespaceType::Network, None)));
        assert!(base.iter().all(|t| ns.contains(&(*t, None))));
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));

        let spec = fx
            .build(&RunOptions {
                network: NetworkMode::Host,
                ..Default::default()
            })
            .unwrap();
        let ns = namespaces(&spec);
        assert!(ns.iter().all(|(t, _)| *t != LinuxNamespaceType::Network));
        assert!(ns.contains(&(LinuxNamespaceType::Uts, None)));
        assert_eq!(spec.hostname(), &host_hostname());
        assert!(mount(&spec, "/sys").is_some());

        let join = NetworkMode::Join("/proc/1234/ns/net".into());
        let spec = fx
            .build(&RunOptions {
                network: join.clone(),
                ..Default::default()
            })
            .unwrap();
        assert!(namespaces(&spec).contains(&(
            LinuxNamespaceType::Network,
            Some(PathBuf::from("/proc/1234/ns/net"))
        )));
        let err = fx
            .build(&RunOptions {
                network: join,
                hostname: Some("x".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, SpecError::Conflict(_)));
        let err = fx
            .build(&RunOptions {
                network: NetworkMode::Join("rel".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("absolute"));
    }

    #[test]
    fn init_prepend() {
        let fx = Fixture::new();
        let init = Path::new("/usr/libexec/berth/berth-init");
        let mut inputs = fx.inputs();
        inputs.init_path = Some(init);
        let opts = RunOptions {
            init: true,
            cmd: strings(&["sleep", "1"]),
            ..Default::default()
        };
        let spec = build_checked(&opts, &inputs).unwrap();
        assert_eq!(
            args(&spec),
            strings(&["/sbin/berth-init", "--", "sleep", "1"])
        );
        let m = mount(&spec, INIT_DESTINATION).unwrap();
        assert_eq!(m.source().as_deref(), Some(init));
        assert_eq!(m.typ().as_deref(), Some("bind"));
        assert!(m.options().clone().unwrap().contains(&"ro".into()));
        // Without the helper: a clear error.
        assert!(matches!(fx.build(&opts), Err(SpecError::InitMissing)));
        // Without a command, --init does not invent one.
        let mut img_inputs = fx.inputs();
        let empty = image(None, None);
        img_inputs.image = &empty;
        img_inputs.init_path = Some(init);
        assert!(matches!(
            build_spec(
                &RunOptions {
                    init: true,
                    ..Default::default()
                },
                &img_inputs
            ),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn read_only_root() {
        let fx = Fixture::new();
        let spec = fx
            .build(&RunOptions {
                read_only: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert!(mount(&spec, "/tmp").is_none());
    }

    #[test]
    fn stop_signal_annotation() {
        let fx = Fixture::new();
        let spec = fx.build(&RunOptions::default()).unwrap();
        assert!(spec.annotations().as_ref().is_none_or(|a| a.is_empty()));
        let mut img = image(None, Some(&["sh"]));
        let mut config = img.config().clone().unwrap();
        config.set_stop_signal(Some("SIGQUIT".into()));
        img.set_config(Some(config));
        let mut inputs = fx.inputs();
        inputs.image = &img;
        let spec = build_checked(&RunOptions::default(), &inputs).unwrap();
        assert_eq!(
            spec.annotations().clone().unwrap()[STOP_SIGNAL_ANNOTATION],
            "SIGQUIT"
        );
        let spec = build_checked(
            &RunOptions {
                stop_signal: Some("SIGUSR1".into()),
                ..Default::default()
            },
            &inputs,
        )
        .unwrap();
        assert_eq!(
            spec.annotations().clone().unwrap()[STOP_SIGNAL_ANNOTATION],
            "SIGUSR1"
        );
        let err = fx
            .build(&RunOptions {
                stop_signal: Some("SIGFOO".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("invalid --stop-signal \"SIGFOO\""));
    }

    #[test]
    fn signals() {
        for (s, n) in [
            ("SIGTERM", 15),
            ("TERM", 15),
            ("term", 15),
            ("15", 15),
            ("SIGKILL", 9),
            ("hup", 1),
            ("SIGRTMIN", 34),
            ("SIGRTMIN+3", 37),
            ("RTMAX-1", 63),
            ("64", 64),
        ] {
            assert_eq!(parse_signal(s).unwrap(), n, "{s}");
        }
        for s in [
            "",
            "0",
            "65",
            "-9",
            "SIGFOO",
            "RTMIN+40",
            "RTMAX-40",
            "SIGRTMINX",
        ] {
            assert!(parse_signal(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn seccomp_profiles() {
        let fx = Fixture::new();
        let spec = fx
            .build(&RunOptions {
                seccomp: Some("unconfined".into()),
                ..Default::default()
            })
            .unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());

        let dir = tempfile::tempdir().unwrap();
        // Docker's format: architectures, archMap and capability conditions.
        let docker = dir.path().join("docker.json");
        std::fs::write(
            &docker,
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "defaultErrnoRet": 1,
              "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
              "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
              "syscalls": [
                {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "", "includes": {}, "excludes": {}},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_CHOWN"]}},
                {"name": "getpid", "action": "SCMP_ACT_ALLOW"}
              ]
            }"#,
        )
        .unwrap();
        let opts = RunOptions {
            seccomp: Some(docker.display().to_string()),
            ..Default::default()
        };
        let spec = fx.build(&opts).unwrap();
        let profile = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        let names: Vec<String> = profile
            .syscalls()
            .clone()
            .unwrap()
            .iter()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, strings(&["read", "write", "exit_group", "getpid"]));
        assert!(profile.architectures().is_none());
        let opts = RunOptions {
            cap_add: strings(&["SYS_ADMIN"]),
            ..opts
        };
        let profile = fx
            .build(&opts)
            .unwrap()
            .linux()
            .clone()
            .unwrap()
            .seccomp()
            .clone()
            .unwrap();
        assert!(profile
            .syscalls()
            .clone()
            .unwrap()
            .iter()
            .any(|s| s.names() == &strings(&["mount"])));

        // Bad path, bad JSON, wrong shape, unsupported action.
        let missing = RunOptions {
            seccomp: Some("/nonexistent/profile.json".into()),
            ..Default::default()
        };
        let err = fx.build(&missing).unwrap_err().to_string();
        assert!(err.starts_with("read /nonexistent/profile.json:"), "{err}");
        for (name, text, needle) in [
            ("bad.json", "{\"defaultAction\": ", "line 1"),
            ("array.json", "[]", "JSON object"),
            ("noaction.json", "{\"syscalls\": []}", "defaultAction"),
            ("action.json", "{\"defaultAction\": \"SCMP_ACT_MAYBE\"}", "SCMP_ACT_MAYBE"),
            ("notify.json", "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_NOTIFY\"}]}", "NOTIFY"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let opts = RunOptions { seccomp: Some(path.display().to_string()), ..Default::default() };
            let err = fx.build(&opts).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid seccomp profile {}:", path.display())), "{err}");
            assert!(err.contains(needle), "{name}: {err}");
        }
    }

    #[test]
    fn default_seccomp_follows_capabilities() {
        let fx = Fixture::new();
        let denied = |spec: &Spec| -> Vec<String> {
            spec.linux()
                .as_ref()
                .unwrap()
                .seccomp()
                .clone()
                .unwrap()
                .syscalls()
                .clone()
                .unwrap()
                .iter()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        let plain = denied(&fx.build(&RunOptions::default()).unwrap());
        assert!(plain.contains(&"mount".to_string()) && plain.contains(&"clone".to_string()));
        let admin = denied(
            &fx.build(&RunOptions {
                cap_add: strings(&["SYS_ADMIN"]),
                ..Default::default()
            })
            .unwrap(),
        );
        assert!(!admin.contains(&"mount".to_string()));
        assert!(!admin.contains(&"clone".to_string()));
        assert!(admin.contains(&"reboot".to_string()));
    }

    #[test]
    fn validate_without_image() {
        assert!(validate(&RunOptions::default()).is_ok());
        let ok = RunOptions {
            memory: Some("64m".into()),
            cpus: Some("2".into()),
            cap_add: strings(&["NET_ADMIN"]),
            tmpfs: strings(&["/run"]),
            ulimits: strings(&["nofile=10:20"]),
            ..Default::default()
        };
        assert!(validate(&ok).is_ok());
        for bad in [
            RunOptions {
                memory: Some("12x".into()),
                ..Default::default()
            },
            RunOptions {
                cap_drop: strings(&["nope"]),
                ..Default::default()
            },
            RunOptions {
                tmpfs: strings(&["rel"]),
                ..Default::default()
            },
            RunOptions {
                ulimits: strings(&["nofile=2:1"]),
                ..Default::default()
            },
            RunOptions {
                sysctls: strings(&["vm.x=1"]),
                ..Default::default()
            },
            RunOptions {
                stop_signal: Some("NOPE".into()),
                ..Default::default()
            },
            RunOptions {
                user: Some("99999999999".into()),
                ..Default::default()
            },
            RunOptions {
                seccomp: Some("/nonexistent.json".into()),
                ..Default::default()
            },
            RunOptions {
                shm_size: Some("0".into()),
                ..Default::default()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
        let fx = Fixture::new();
        assert_eq!(resolve_user(fx.dir.path(), "alice").unwrap(), (1000, 1000));
        assert_eq!(
            resolve_user(fx.dir.path(), "alice:staff").unwrap(),
            (1000, 50)
        );
        assert!(resolve_user(fx.dir.path(), "nobody").is_err());
    }

    #[test]
    fn run_options_serde_round_trip() {
        let opts = RunOptions {
            entrypoint: Some(vec![]),
            cmd: strings(&["a"]),
            network: NetworkMode::Join("/proc/1/ns/net".into()),
            binds: vec![bind_mount(Path::new("/a"), "/b", &["rbind"])],
            ..Default::default()
        };
        let text = serde_json::to_string(&opts).unwrap();
        assert_eq!(serde_json::from_str::<RunOptions>(&text).unwrap(), opts);
    }
}
