//! Container commands: run, create, start, stop, kill, restart, rm, ps, logs,
//! exec, inspect, wait, container prune. Docker's names, flags and output.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use crate::format::{json_line, Templated};
use crate::table::Table;
use anyhow::{bail, Context};
use berth_engine::containers::attach::{read_frame, write_frame, Kind};
use berth_engine::containers::health::{HealthConfig, HealthStatus};
use berth_engine::containers::record::{ContainerRecord, RestartPolicy, Status};
use berth_engine::containers::{logs, Containers, CreateRequest, ExecRequest};
use berth_engine::images::Images;
use berth_image_store::reference::Reference;

use crate::image_cmd::ImageGlobals;
use berth_engine::spec::{NetworkMode, RunOptions};
use clap::Args;

/// The resource limits of `run`, `create` and `update`.
#[derive(Args, Debug, Clone)]
pub struct ResourceFlags {
    /// Memory limit (e.g. 64m; 0: none).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Memory plus swap limit (-1: unlimited swap).
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// CPUs (e.g. 1.5; 0: no limit).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Most processes (0 or less: no limit).
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
}

/// `run` and `create` flags.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Assign a name.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from here).
    #[arg(short, long)]
    env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    user: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Container hostname.
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Set a label (KEY=VALUE).
    #[arg(short, long = "label")]
    labels: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    interactive: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Network: bridge (default), none, host, container:NAME or a network's name.
    #[arg(long, alias = "net", default_value = "bridge")]
    network: String,
    /// Static IPv4 address on the network.
    #[arg(long)]
    ip: Option<String>,
    /// MAC address of the container's interface.
    #[arg(long)]
    mac_address: Option<String>,
    /// Another name the container is known by on its (user-defined) network.
    #[arg(long = "network-alias", alias = "net-alias")]
    network_alias: Vec<String>,
    /// Publish a port: [hostip:][hostport:]containerport[/tcp|udp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every exposed port on a random host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    #[command(flatten)]
    resources: ResourceFlags,
    /// Add a capability.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Give extended privileges.
    #[arg(long)]
    privileged: bool,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Security options: seccomp=PROFILE.json|unconfined, no-new-privileges.
    #[arg(long)]
    security_opt: Vec<String>,
    /// Signal to stop the container.
    #[arg(long)]
    stop_signal: Option<String>,
    /// Add a host device (HOST[:CONTAINER][:PERMS], PERMS of r, w, m).
    #[arg(long)]
    device: Vec<String>,
    /// Allow a device in the cgroup ('TYPE MAJOR:MINOR PERMS', e.g. 'c 42:* rmw').
    #[arg(long)]
    device_cgroup_rule: Vec<String>,
    /// Command to run to check health (through /bin/sh -c).
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between health checks (ms|s|m|h; default 30s).
    #[arg(long)]
    health_interval: Option<String>,
    /// Longest a health check may run (default 30s).
    #[arg(long)]
    health_timeout: Option<String>,
    /// Failures in a row that make the container unhealthy (default 3).
    #[arg(long)]
    health_retries: Option<u32>,
    /// Time after start in which failing checks do not count.
    #[arg(long)]
    health_start_period: Option<String>,
    /// Time between health checks during the start period (default 5s).
    #[arg(long)]
    health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK.
    #[arg(long)]
    no_healthcheck: bool,
    /// Seconds to wait before killing the container on stop.
    #[arg(long)]
    stop_timeout: Option<u64>,
    /// Kernel parameter (KEY=VALUE).
    #[arg(long)]
    sysctl: Vec<String>,
    /// Resource limit (e.g. nofile=1024:2048).
    #[arg(long)]
    ulimit: Vec<String>,
    /// Size of /dev/shm.
    #[arg(long)]
    shm_size: Option<String>,
    /// Mount a tmpfs (PATH[:OPTIONS]).
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Bind mount a volume or host path ([NAME|/HOST/PATH:]/PATH[:ro|rw]).
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Attach a filesystem mount (type=volume|bind|tmpfs,source=,target=,...).
    #[arg(long)]
    mount: Vec<String>,
    /// Mount the volumes of another container (CONTAINER[:ro|rw]).
    #[arg(long)]
    volumes_from: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped.
    #[arg(long, default_value = "no")]
    restart: String,
    /// Add a line to /etc/hosts (HOST:IP; IP may be host-gateway).
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// A DNS server for /etc/resolv.conf (instead of the host's).
    #[arg(long)]
    dns: Vec<String>,
    /// A DNS search domain ("." for none).
    #[arg(long = "dns-search")]
    dns_search: Vec<String>,
    /// A DNS resolver option.
    #[arg(long = "dns-option")]
    dns_option: Vec<String>,
    /// Expose a port (PORT[/PROTO]) besides the image's; -P publishes it.
    #[arg(long)]
    expose: Vec<String>,
    /// PID namespace: host shares the host's.
    #[arg(long)]
    pid: Option<String>,
    /// IPC namespace: host shares the host's (and its /dev/shm); private, shareable.
    #[arg(long)]
    ipc: Option<String>,
    /// UTS namespace: host shares the host's (and its hostname).
    #[arg(long)]
    uts: Option<String>,
    /// Write the container id to this file (which must not exist).
    #[arg(long)]
    cidfile: Option<std::path::PathBuf>,
    /// Pull the image first: missing (when not here), always, or never.
    #[arg(long, default_value = "missing")]
    pull: String,
    /// Do not print the pull's progress and status.
    #[arg(short, long)]
    quiet: bool,
    /// Print help (-h is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Image name or id.
    image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `run`: `create` flags plus `-d`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Key sequence that detaches from a `-it` container (default ctrl-p,ctrl-q).
    #[arg(long, default_value = DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    #[command(flatten)]
    create: CreateArgs,
}

fn env_from_host(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                std::env::var(e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

fn request(args: &CreateArgs) -> anyhow::Result<CreateRequest> {
    let mut env = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read env file {}", file.display()))?;
        let lines: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        env.extend(env_from_host(&lines));
    }
    env.extend(env_from_host(&args.env));
    let network = match args.network.as_str() {
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        "" | "default" => NetworkMode::Bridge("bridge".into()),
        other => match other.strip_prefix("container:") {
            Some(target) if !target.is_empty() => NetworkMode::Join(target.to_string()),
            Some(_) => bail!("invalid --network {other:?}: use container:NAME"),
            None => NetworkMode::Bridge(other.to_string()),
        },
    };
    let mut seccomp = None;
    let mut no_new_privileges = false;
    for opt in &args.security_opt {
        if let Some(v) = opt
            .strip_prefix("seccomp=")
            .or_else(|| opt.strip_prefix("seccomp:"))
        {
            seccomp = Some(v.to_string());
        } else if opt == "no-new-privileges"
            || opt == "no-new-privileges:true"
            || opt == "no-new-privileges=true"
        {
            no_new_privileges = true;
        } else {
            bail!("invalid --security-opt {opt:?}: use seccomp=PROFILE.json|unconfined or no-new-privileges");
        }
    }
    let entrypoint = args.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        }
    });
    let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let mut mounts = Vec::new();
    for v in &args.volume {
        mounts.push(berth_engine::volumes::parse_volume_flag(v, &cwd)?);
    }
    for m in &args.mount {
        mounts.push(berth_engine::volumes::parse_mount_flag(m)?);
    }
    Ok(CreateRequest {
        mounts,
        volumes_from: args.volumes_from.clone(),
        publish_all: args.publish_all,
        image: args.image.clone(),
        name: args.name.clone(),
        auto_remove: args.rm,
        labels: args.labels.clone(),
        stop_timeout: args.stop_timeout,
        restart: RestartPolicy::parse(&args.restart)?,
        options: RunOptions {
            entrypoint,
            cmd: args.command.clone(),
            env,
            workdir: args.workdir.clone(),
            user: args.user.clone(),
            hostname: args.hostname.clone(),
            tty: args.tty,
            stdin_open: args.interactive,
            memory: args.resources.memory.clone(),
            memory_swap: args.resources.memory_swap.clone(),
            cpus: args.resources.cpus.clone(),
            pids_limit: args.resources.pids_limit,
            cap_add: args.cap_add.clone(),
            cap_drop: args.cap_drop.clone(),
            privileged: args.privileged,
            read_only: args.read_only,
            seccomp,
            no_new_privileges,
            network,
            ip: args.ip.clone(),
            mac_address: args.mac_address.clone(),
            network_aliases: args.network_alias.clone(),
            publish: args.publish.clone(),
            stop_signal: args.stop_signal.clone(),
            labels: args.labels.clone(),
            sysctls: args.sysctl.clone(),
            ulimits: args.ulimit.clone(),
            shm_size: args.shm_size.clone(),
            tmpfs: args.tmpfs.clone(),
            init: args.init,
            extra_hosts: args.add_host.clone(),
            dns: args.dns.clone(),
            dns_search: args.dns_search.clone(),
            dns_options: args.dns_option.clone(),
            expose: berth_engine::spec::expand_expose(&args.expose)?,
            pid: args.pid.clone(),
            ipc: args.ipc.clone(),
            uts: args.uts.clone(),
            healthcheck: health_flags(args)?,
            devices: args.device.clone(),
            device_cgroup_rules: args.device_cgroup_rule.clone(),
            ..Default::default()
        },
    })
}

/// The `--health-*` flags as a healthcheck to lay over the image's.
fn health_flags(args: &CreateArgs) -> anyhow::Result<HealthConfig> {
    let duration = |flag: &str, v: &Option<String>| -> anyhow::Result<u64> {
        let Some(v) = v else { return Ok(0) };
        let d = berth_engine::parse_duration(v)
            .with_context(|| format!("invalid --{flag} {v:?}: use a duration like 30s or 1m30s"))?;
        if !d.is_zero() && d < Duration::from_millis(1) {
            bail!("--{flag} must be at least 1ms");
        }
        Ok(d.as_nanos() as u64)
    };
    let mut test = Vec::new();
    if args.no_healthcheck {
        if args.health_cmd.is_some()
            || args.health_interval.is_some()
            || args.health_timeout.is_some()
            || args.health_retries.is_some()
            || args.health_start_period.is_some()
            || args.health_start_interval.is_some()
        {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        test = vec!["NONE".to_string()];
    } else if let Some(cmd) = args.health_cmd.as_ref().filter(|c| !c.is_empty()) {
        test = vec!["CMD-SHELL".to_string(), cmd.clone()];
    }
    Ok(HealthConfig {
        test,
        interval: duration("health-interval", &args.health_interval)?,
        timeout: duration("health-timeout", &args.health_timeout)?,
        start_period: duration("health-start-period", &args.health_start_period)?,
        start_interval: duration("health-start-interval", &args.health_start_interval)?,
        retries: args.health_retries.unwrap_or(0),
    })
}

/// `--pull` of `run` and `create`, as Docker's: `missing` pulls an image that
/// is not here (saying so on stderr), `always` pulls it anyway, `never`
/// leaves the engine to report it missing. Progress and status go to stderr.
fn pull_for_run(images: &Images, args: &CreateArgs, globals: &ImageGlobals) -> anyhow::Result<()> {
    let pull = match args.pull.as_str() {
        "never" => false,
        "always" => true,
        "missing" => {
            let missing = images.is_missing(&args.image)?;
            if missing && !args.quiet {
                let shown = Reference::parse(&args.image)
                    .map(|r| r.familiar())
                    .unwrap_or_else(|_| args.image.clone());
                eprintln!("Unable to find image '{shown}' locally");
            }
            missing
        }
        other => bail!("invalid --pull {other:?}: use missing, always or never"),
    };
    if pull {
        crate::image_cmd::pull_to_stderr(images, &args.image, args.quiet, globals)?;
    }
    Ok(())
}

/// `create`: prints the new container's id.
pub fn create(
    containers: &Containers,
    args: CreateArgs,
    globals: &ImageGlobals,
) -> anyhow::Result<i32> {
    let (_, record) = create_container(containers, &args, globals)?;
    println!("{}", record.id);
    Ok(0)
}

/// What `run` and `create` share: check the flags, pull per `--pull`, claim
/// the `--cidfile`, create the container and write its id there.
fn create_container(
    containers: &Containers,
    args: &CreateArgs,
    globals: &ImageGlobals,
) -> anyhow::Result<(CreateRequest, ContainerRecord)> {
    let req = request(args)?;
    berth_engine::spec::validate(&req.options)?;
    pull_for_run(containers.images(), args, globals)?;
    let cidfile = match &args.cidfile {
        Some(path) => Some((
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!(
                        "container id file {}: it must not exist (remove it if no container uses it)",
                        path.display()
                    )
                })?,
            path,
        )),
        None => None,
    };
    let record = match containers.create(&req) {
        Ok(r) => r,
        Err(e) => {
            if let Some((_, path)) = &cidfile {
                let _ = std::fs::remove_file(path);
            }
            return Err(e.into());
        }
    };
    if let Some((mut file, path)) = cidfile {
        file.write_all(record.id.as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok((req, record))
}

/// `run`: create and start; in the foreground, relay stdio and exit with the container's code.
pub fn run(containers: &Containers, args: RunArgs, globals: &ImageGlobals) -> anyhow::Result<i32> {
    let detach_keys = parse_detach_keys(&args.detach_keys)?;
    let (req, record) = create_container(containers, &args.create, globals)?;
    if args.detach {
        match containers.start(&record.id) {
            Ok(_) => {
                println!("{}", record.id);
                Ok(0)
            }
            Err(e) => {
                if req.auto_remove {
                    let _ = containers.remove(&record.id, true);
                }
                Err(e.into())
            }
        }
    } else {
        let stream = containers.start_attached(&record.id)?;
        relay(
            stream,
            req.options.tty,
            req.options.stdin_open,
            &detach_keys,
        )
    }
}

static FORWARD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn winsize() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into a valid winsize struct.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some((ws.ws_row, ws.ws_col))
}

static WINCH: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_winch(_: libc::c_int) {
    WINCH.store(1, Ordering::Relaxed);
}

/// Relay an attach stream to our stdio until the container exits (or the
/// user detaches with ctrl-p ctrl-q); returns the exit code.
fn relay(
    stream: UnixStream,
    tty: bool,
    interactive: bool,
    detach_keys: &[u8],
) -> anyhow::Result<i32> {
    let detach_keys = detach_keys.to_vec();
    use nix::sys::termios;
    let stdin_is_tty = std::io::stdin().is_terminal();
    let saved = if tty && stdin_is_tty {
        let orig = termios::tcgetattr(std::io::stdin().as_fd()).ok();
        if let Some(o) = &orig {
            let mut raw = o.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), termios::SetArg::TCSANOW, &raw);
        }
        orig
    } else {
        None
    };
    let restore = |saved: &Option<termios::Termios>| {
        if let Some(o) = saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), termios::SetArg::TCSANOW, o);
        }
    };
    // Signals reach the container, not us (Docker's --sig-proxy).
    if !tty {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(forward),
            nix::sys::signal::SaFlags::SA_RESTART,
            nix::sys::signal::SigSet::empty(),
        );
        for sig in [
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::Signal::SIGQUIT,
            nix::sys::signal::Signal::SIGUSR1,
            nix::sys::signal::Signal::SIGUSR2,
        ] {
            // SAFETY: the handler only calls kill(2).
            let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
        }
    }
    let mut writer = stream.try_clone()?;
    if tty {
        if let Some((rows, cols)) = winsize() {
            let mut p = rows.to_le_bytes().to_vec();
            p.extend_from_slice(&cols.to_le_bytes());
            write_frame(&mut writer, Kind::Resize, &p)?;
        }
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_winch),
            nix::sys::signal::SaFlags::SA_RESTART,
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGWINCH, &action) };
    }
    if interactive {
        let mut writer = stream.try_clone()?;
        let shutdown = stream.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin().lock();
            let mut matched = 0usize;
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = write_frame(&mut writer, Kind::CloseStdin, &[]);
                        return;
                    }
                    Ok(n) => n,
                };
                if tty && !detach_keys.is_empty() {
                    // The detach sequence (ctrl-p ctrl-q by default) ends the session.
                    for &b in &buf[..n] {
                        matched = if b == detach_keys[matched] {
                            matched + 1
                        } else {
                            usize::from(b == detach_keys[0])
                        };
                        if matched == detach_keys.len() {
                            let _ = shutdown.shutdown(std::net::Shutdown::Both);
                            return;
                        }
                    }
                }
                if WINCH.swap(0, Ordering::Relaxed) == 1 {
                    if let Some((rows, cols)) = winsize() {
                        let mut p = rows.to_le_bytes().to_vec();
                        p.extend_from_slice(&cols.to_le_bytes());
                        let _ = write_frame(&mut writer, Kind::Resize, &p);
                    }
                }
                if write_frame(&mut writer, Kind::Stdin, &buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
    let mut reader = stream;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let code = loop {
        match read_frame(&mut reader) {
            Ok(Some((Kind::Stdout, data))) => {
                let _ = stdout.write_all(&data);
                let _ = stdout.flush();
            }
            Ok(Some((Kind::Stderr, data))) => {
                let _ = stderr.write_all(&data);
            }
            Ok(Some((Kind::Started, data))) if data.len() == 4 => {
                FORWARD_PID.store(
                    i32::from_le_bytes([data[0], data[1], data[2], data[3]]),
                    Ordering::Relaxed,
                );
            }
            Ok(Some((Kind::Exited, data))) if data.len() >= 4 => {
                if data.get(4) == Some(&1) {
                    restore(&saved);
                    eprintln!("berth: the container was killed by the OOM killer");
                }
                break i32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            Ok(Some((Kind::Failed, data))) if data.len() >= 4 => {
                restore(&saved);
                let code = i32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                eprintln!("berth: {}", String::from_utf8_lossy(&data[4..]));
                return Ok(code);
            }
            Ok(Some(_)) => {}
            // The stream ended without an exit: we detached, or the monitor died.
            Ok(None) | Err(_) => break 0,
        }
    };
    FORWARD_PID.store(0, Ordering::Relaxed);
    restore(&saved);
    Ok(code)
}

/// `start [-a] [-i] NAME...`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach stdout/stderr and exit with the container's code.
    #[arg(short, long)]
    attach: bool,
    /// Key sequence that detaches (default ctrl-p,ctrl-q).
    #[arg(long, default_value = DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Attach stdin.
    #[arg(short, long)]
    interactive: bool,
    /// Containers.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `start`.
pub fn start(containers: &Containers, args: StartArgs) -> anyhow::Result<i32> {
    if args.attach || args.interactive {
        let keys = parse_detach_keys(&args.detach_keys)?;
        let record = containers.get(&args.containers[0])?;
        let stream = containers.start_attached(&record.id)?;
        return relay(
            stream,
            record.options.tty,
            args.interactive && record.options.stdin_open,
            &keys,
        );
    }
    Ok(crate::each_name(&args.containers, |c| {
        containers.start(c)?;
        Ok(c.to_string())
    }))
}

/// `attach NAME`.
pub fn attach(containers: &Containers, name: &str, detach_keys: &str) -> anyhow::Result<i32> {
    let keys = parse_detach_keys(detach_keys)?;
    let record = containers.get(name)?;
    let stream = containers.attach(&record.id)?;
    relay(stream, record.options.tty, record.options.stdin_open, &keys)
}

/// Docker's default detach sequence.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Parse Docker's `--detach-keys` format: comma-separated `ctrl-<c>` (c one of
/// `a-z @ [ \ ] ^ _`) or single characters; empty disables detaching.
fn parse_detach_keys(spec: &str) -> anyhow::Result<Vec<u8>> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|key| {
            let bad = || anyhow::anyhow!("invalid --detach-keys {spec:?}: {key:?} is not ctrl-<a-z@[\\]^_> or one character");
            match key.strip_prefix("ctrl-") {
                Some(c) if c.len() == 1 => {
                    let b = c.as_bytes()[0].to_ascii_lowercase();
                    match b {
                        b'a'..=b'z' => Ok(b - b'a' + 1),
                        b'@' => Ok(0),
                        b'[' | b'\\' | b']' | b'^' | b'_' => Ok(b - b'@'),
                        _ => Err(bad()),
                    }
                }
                None if key.len() == 1 => Ok(key.as_bytes()[0]),
                _ => Err(bad()),
            }
        })
        .collect()
}

/// `stop [-t N] NAME...`.
pub fn stop(
    containers: &Containers,
    timeout: Option<u64>,
    names: &[String],
) -> anyhow::Result<i32> {
    Ok(crate::each_name(names, |n| {
        containers.stop(n, timeout)?;
        Ok(n.to_string())
    }))
}

/// `restart [-t N] NAME...`.
pub fn restart(
    containers: &Containers,
    timeout: Option<u64>,
    names: &[String],
) -> anyhow::Result<i32> {
    Ok(crate::each_name(names, |n| {
        containers.stop(n, timeout)?;
        containers.start(n)?;
        Ok(n.to_string())
    }))
}

/// `kill [-s SIG] NAME...`.
pub fn kill(containers: &Containers, signal: &str, names: &[String]) -> anyhow::Result<i32> {
    Ok(crate::each_name(names, |n| {
        containers.kill(n, signal)?;
        Ok(n.to_string())
    }))
}

/// `rm [-f] [-v] NAME...`.
pub fn rm(
    containers: &Containers,
    force: bool,
    volumes: bool,
    names: &[String],
) -> anyhow::Result<i32> {
    Ok(crate::each_name(names, |n| {
        containers.remove_with_volumes(n, force, volumes)?;
        Ok(n.to_string())
    }))
}

/// `ps` flags.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running).
    #[arg(short, long)]
    all: bool,
    /// Only ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show the n last created containers.
    #[arg(short = 'n', long)]
    last: Option<usize>,
    /// Filter: status=, name=, label=, ancestor=, id=, exited=CODE, volume=NAME|PATH.
    #[arg(short, long)]
    filter: Vec<String>,
    /// Do not truncate.
    #[arg(long)]
    no_trunc: bool,
    /// Show each container's size (writable layer, and with its image).
    #[arg(short, long)]
    size: bool,
    /// json, table, or a template like '{{.ID}}\t{{.Names}}' (fields: ID, Image,
    /// Command, CreatedAt, RunningFor, Status, State, Names, Ports, Labels,
    /// Mounts, Networks, Size).
    #[arg(long)]
    format: Option<String>,
}

fn status_text(r: &ContainerRecord) -> String {
    match r.state.status {
        Status::Running if r.state.restarting => format!(
            "Restarting ({}) {} ago",
            r.state.exit_code,
            crate::table::since(r.state.finished_at.as_deref())
        ),
        Status::Running => {
            let up = format!("Up {}", crate::table::since(r.state.started_at.as_deref()));
            match berth_engine::containers::health::current_health(r) {
                Some(h) if h.status == HealthStatus::Starting => format!("{up} (health: starting)"),
                Some(h) => format!("{up} ({})", h.status.as_str()),
                None => up,
            }
        }
        Status::Created => "Created".into(),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.state.exit_code,
            crate::table::since(r.state.finished_at.as_deref())
        ),
        Status::Removing => "Removal In Progress".into(),
    }
}

/// Whether container `r` passes `ps --filter key=value`; `created_of` gives
/// the creation time of a container named by `before=`/`since=`.
fn matches_filter(
    containers: &Containers,
    r: &ContainerRecord,
    key: &str,
    value: &str,
    created_of: &dyn Fn(&str) -> Option<std::time::SystemTime>,
) -> bool {
    match key {
        "status" => match value {
            "paused" | "running" => containers.state_name(r) == value,
            _ => r.state.status.to_string() == value,
        },
        "name" => r.name.contains(value),
        "id" => r.id.starts_with(value),
        "ancestor" => r.image == value || r.image_id.contains(value),
        "exited" => r.state.status == Status::Exited && value.parse() == Ok(r.state.exit_code),
        // Created before or after the named container.
        "before" | "since" => {
            let (mine, theirs) = (time_of(&r.created), created_of(value));
            match key {
                "before" => mine < theirs,
                _ => mine > theirs,
            }
        }
        // As Docker's: `none` for a container without a healthcheck.
        "health" => {
            berth_engine::containers::health::current_health(r)
                .map_or("none", |h| h.status.as_str())
                == value
        }
        "volume" => r
            .mounts
            .iter()
            .any(|m| m.source == value || m.target == value),
        _ => crate::filter::label_matches(&r.labels, value),
    }
}

fn time_of(rfc3339: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(rfc3339).ok()
}

/// `ps`.
pub fn ps(containers: &Containers, args: PsArgs) -> anyhow::Result<i32> {
    let mut rows = containers.list()?;
    let filters = crate::filter::Filters::parse(
        &args.filter,
        &[
            "status", "name", "id", "label", "ancestor", "exited", "volume", "before", "since",
            "health",
        ],
    )?;
    // before=/since= name a container: its creation time, looked up once.
    let mut times = std::collections::BTreeMap::new();
    for (key, value) in args.filter.iter().filter_map(|f| f.split_once('=')) {
        if matches!(key, "before" | "since") {
            times.insert(value.to_string(), time_of(&containers.get(value)?.created));
        }
    }
    let created_of = |v: &str| times.get(v).copied().flatten();
    filters.check("exited", |v| v.parse::<i32>().is_ok(), "an exit code")?;
    filters.check(
        "health",
        |v| matches!(v, "starting" | "healthy" | "unhealthy" | "none"),
        "starting, healthy, unhealthy or none",
    )?;
    // As Docker's: a status filter chooses among all containers.
    if !args.all && args.last.is_none() && !filters.has("status") {
        rows.retain(|r| r.state.status == Status::Running);
    }
    let mut kept = Vec::new();
    for r in rows {
        if filters.pass(|k, v| Ok(matches_filter(containers, &r, k, v, &created_of)))? {
            kept.push(r);
        }
    }
    let mut rows = kept;
    if let Some(n) = args.last {
        rows.truncate(n);
    }
    let mut out = std::io::stdout().lock();
    let mut header = vec![
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    if args.size {
        header.push("SIZE");
    }
    let mut table = Table::new(&header);
    // Sizes walk the container's files: only when asked for.
    let want_size = args.size || args.format.as_deref().is_some_and(|f| f.contains(".Size"));
    let mut templated = args
        .format
        .as_deref()
        .filter(|t| !args.quiet && !matches!(*t, "json" | "table"))
        .map(|t| {
            Templated::new(
                t,
                &[
                    "ID",
                    "Image",
                    "Command",
                    "CreatedAt",
                    "RunningFor",
                    "Status",
                    "State",
                    "Names",
                    "Ports",
                    "Labels",
                    "Mounts",
                    "Networks",
                    "Size",
                ],
                &[("ID", "CONTAINER ID")],
            )
        })
        .transpose()?;
    for r in rows.iter() {
        let id = if args.no_trunc {
            r.id.clone()
        } else {
            r.id[..12].to_string()
        };
        let mut command = r.command.join(" ");
        if !args.no_trunc && command.chars().count() > 20 {
            command = format!("{}…", command.chars().take(19).collect::<String>());
        }
        let status = match containers.is_paused(r) {
            true => format!("{} (Paused)", status_text(r)),
            false => status_text(r),
        };
        let size = if want_size {
            let (rw, virt) = containers.container_size(r);
            format!(
                "{} (virtual {})",
                crate::system_cmd::human_size(rw),
                crate::system_cmd::human_size(virt)
            )
        } else {
            String::new()
        };
        let running_for = format!("{} ago", crate::table::since(Some(&r.created)));
        let ports = ports_text(containers, &r.id);
        let mounts: Vec<String> = r
            .mounts
            .iter()
            .map(|m| match m.source.as_str() {
                "" => m.target.clone(),
                s => s.to_string(),
            })
            .collect();
        let networks: Vec<String> = match &r.options.network {
            NetworkMode::None => vec!["none".into()],
            NetworkMode::Host => vec!["host".into()],
            NetworkMode::Join(_) => Vec::new(),
            NetworkMode::Bridge(n) => std::iter::once(n.clone())
                .chain(r.connected.iter().map(|c| c.name.clone()))
                .collect(),
        };
        let fields = [
            ("ID", id.clone()),
            ("Image", r.image.clone()),
            ("Command", format!("\"{command}\"")),
            ("CreatedAt", r.created.clone()),
            ("RunningFor", running_for.clone()),
            ("Status", status.clone()),
            ("State", containers.state_name(r)),
            ("Names", r.name.clone()),
            ("Ports", ports.clone()),
            ("Labels", crate::filter::labels_text(&r.labels)),
            ("Mounts", mounts.join(",")),
            ("Networks", networks.join(",")),
            ("Size", size.clone()),
        ];
        if args.quiet {
            writeln!(out, "{id}")?;
            continue;
        }
        match args.format.as_deref() {
            Some("json") => writeln!(out, "{}", json_line(&fields))?,
            Some(_) if templated.is_some() => {
                if let Some(rows) = templated.as_mut() {
                    rows.row(&mut out, &fields)?;
                }
            }
            _ => {
                let mut row = vec![
                    id,
                    r.image.clone(),
                    format!("\"{command}\""),
                    running_for,
                    status,
                    ports,
                    r.name.clone(),
                ];
                if args.size {
                    row.push(size);
                }
                table.row(row)
            }
        }
    }
    if let Some(rows) = templated {
        rows.finish(&mut out)?;
    } else if !args.quiet && matches!(args.format.as_deref(), None | Some("table")) {
        table.write(&mut out)?;
    }
    Ok(0)
}

/// `logs` flags.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow the output.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<String>,
    /// Only lines since this time: a duration before now (10m), RFC 3339, a
    /// date or Unix seconds.
    #[arg(long)]
    since: Option<String>,
    /// Only lines before this time (the same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Container.
    container: String,
}

/// `logs`.
pub fn logs(containers: &Containers, args: LogsArgs) -> anyhow::Result<i32> {
    let record = containers.get(&args.container)?;
    let path = containers.paths(&record.id).log;
    let bound = |s: &Option<String>| {
        s.as_deref()
            .map(berth_engine::prune::parse_time)
            .transpose()
    };
    let (since, until) = (bound(&args.since)?, bound(&args.until)?);
    let in_window = |e: &logs::Entry| {
        let Ok(t) = humantime::parse_rfc3339_weak(&e.time) else {
            return true;
        };
        since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)
    };
    let (mut entries, mut offset) = logs::read_from(&path, 0)?;
    entries.retain(|e| in_window(e));
    if let Some(tail) = &args.tail {
        if tail != "all" {
            let n: usize = tail
                .parse()
                .with_context(|| format!("invalid --tail {tail:?}: use a number or all"))?;
            let skip = entries.len().saturating_sub(n);
            entries.drain(..skip);
        }
    }
    let print = |entries: &[logs::Entry]| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for e in entries {
            let line = if args.timestamps {
                format!("{} {}", e.time, e.log)
            } else {
                e.log.clone()
            };
            if e.stream == "stderr" {
                err.write_all(line.as_bytes())?;
            } else {
                out.write_all(line.as_bytes())?;
            }
        }
        out.flush()?;
        Ok(())
    };
    print(&entries)?;
    if args.follow {
        loop {
            let running = containers
                .get(&record.id)
                .map(|r| r.state.status == Status::Running)
                .unwrap_or(false);
            let (mut more, next) = logs::read_from(&path, offset)?;
            offset = next;
            more.retain(|e| in_window(e));
            print(&more)?;
            if !running {
                let (mut rest, _) = logs::read_from(&path, offset)?;
                rest.retain(|e| in_window(e));
                print(&rest)?;
                break;
            }
            if until.is_some_and(|u| std::time::SystemTime::now() >= u) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(0)
}

/// `exec` flags.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open (berth always passes stdin through).
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Environment variables.
    #[arg(short, long)]
    env: Vec<String>,
    /// User (name|uid[:group|gid]).
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Container.
    container: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

/// `exec`.
pub fn exec(containers: &Containers, args: ExecArgs) -> anyhow::Result<i32> {
    let req = ExecRequest {
        tty: args.tty,
        detach: args.detach,
        env: env_from_host(&args.env),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        pid_file: None,
    };
    match containers.exec(&args.container, args.command.clone(), &req) {
        Ok(code) => Ok(code),
        Err(e) if e.exit_code() == 126 || e.exit_code() == 127 => {
            eprintln!("berth: {e}");
            Ok(e.exit_code())
        }
        Err(e) => Err(e.into()),
    }
}

/// `inspect` of containers: Docker's shape.
pub fn inspect_json(containers: &Containers, r: &ContainerRecord) -> serde_json::Value {
    let paths = containers.paths(&r.id);
    serde_json::json!({
        "Id": r.id,
        "Created": r.created,
        "Path": r.command.first().cloned().unwrap_or_default(),
        "Args": r.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": containers.state_name(r),
            "Running": r.state.status == Status::Running,
            "Paused": containers.is_paused(r),
            "Restarting": r.state.restarting,
            "OOMKilled": r.state.oom_killed,
            "Dead": false,
            "Pid": r.state.pid,
            "ExitCode": r.state.exit_code,
            "Error": r.state.error.clone().unwrap_or_default(),
            "StartedAt": r.state.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": r.state.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "Health": berth_engine::containers::health::current_health(r),
        },
        "Image": r.image_id,
        "RestartCount": r.state.restart_count,
        "LogPath": paths.log,
        "ResolvConfPath": paths.dir.join("resolv.conf"),
        "HostnamePath": paths.dir.join("hostname"),
        "HostsPath": paths.dir.join("hosts"),
        "Name": format!("/{}", r.name),
        "Driver": "overlay2",
        "Platform": "linux",
        "Config": {
            "Hostname": r.options.hostname.clone().unwrap_or_else(|| r.id[..12].to_string()),
            "User": r.options.user.clone().unwrap_or_default(),
            "Tty": r.options.tty,
            "OpenStdin": r.options.stdin_open,
            "Env": r.options.env,
            "Cmd": r.options.cmd,
            "Image": r.image,
            "WorkingDir": r.options.workdir.clone().unwrap_or_default(),
            "Entrypoint": r.options.entrypoint,
            "Labels": r.labels,
            "StopSignal": r.stop_signal,
            "StopTimeout": r.stop_timeout,
            "Healthcheck": r.healthcheck,
            "Shell": (!r.shell.is_empty()).then_some(&r.shell),
        },
        "HostConfig": {
            "AutoRemove": r.auto_remove,
            "RestartPolicy": {
                "Name": r.restart_policy.name(),
                "MaximumRetryCount": r.restart_policy.max_retries(),
            },
            "Privileged": r.options.privileged,
            "ReadonlyRootfs": r.options.read_only,
            "CapAdd": r.options.cap_add,
            "CapDrop": r.options.cap_drop,
            "Memory": r.options.memory.as_deref().and_then(|m| berth_engine::spec::parse_bytes(m).ok()).unwrap_or(0),
            "NanoCpus": r.options.cpus.as_deref().and_then(|c| c.parse::<f64>().ok()).map(|c| (c * 1e9) as i64).unwrap_or(0),
            "PidsLimit": r.options.pids_limit,
            "NetworkMode": match &r.options.network { NetworkMode::None => "none".to_string(), NetworkMode::Host => "host".to_string(), NetworkMode::Join(t) => format!("container:{t}"), NetworkMode::Bridge(n) => n.clone() },
            "PortBindings": port_bindings(&r.options.publish),
            "ExtraHosts": r.options.extra_hosts,
            "Dns": r.options.dns,
            "DnsSearch": r.options.dns_search,
            "DnsOptions": r.options.dns_options,
            "PidMode": r.options.pid.clone().unwrap_or_default(),
            "IpcMode": r.options.ipc.clone().unwrap_or_else(|| "private".into()),
            "UTSMode": r.options.uts.clone().unwrap_or_default(),
            "Devices": r.options.devices.iter().filter_map(|d| berth_engine::devices::parse_device_flag(d).ok()).map(|d| serde_json::json!({
                "PathOnHost": d.host, "PathInContainer": d.container, "CgroupPermissions": d.perms,
            })).collect::<Vec<_>>(),
            "DeviceCgroupRules": r.options.device_cgroup_rules,
        },
        "Mounts": r.mounts.iter().map(|m| mount_json(containers, m)).collect::<Vec<_>>(),
        "NetworkSettings": network_settings(containers, r),
    })
}

/// Docker's `PORTS` column: `0.0.0.0:8080->80/tcp, ...`.
fn ports_text(containers: &Containers, id: &str) -> String {
    containers
        .ports_of(id)
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn port_bindings(publish: &[String]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for p in publish
        .iter()
        .filter_map(|s| berth_netns_bridge::parse_port_spec(s).ok())
    {
        let key = format!("{}/{}", p.container_port, p.proto);
        let entry = map.entry(key).or_insert_with(|| serde_json::json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(serde_json::json!({
                "HostIp": if p.host_ip.is_unspecified() { String::new() } else { p.host_ip.to_string() },
                "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() },
            }));
        }
    }
    serde_json::Value::Object(map)
}

/// inspect's `NetworkSettings`: one entry per attached network, and the
/// published ports as Docker shows them.
fn network_settings(containers: &Containers, r: &ContainerRecord) -> serde_json::Value {
    let mut networks = serde_json::Map::new();
    let mut ports = serde_json::Map::new();
    for (net, ep) in containers.endpoints_of(&r.id) {
        networks.insert(
            net.name.clone(),
            serde_json::json!({
                "NetworkID": net.id,
                "EndpointID": ep.host_veth,
                "Aliases": ep.aliases,
                "IPAddress": ep.ip.to_string(),
                "IPPrefixLen": net.subnet.prefix(),
                "Gateway": net.gateway.to_string(),
                "MacAddress": ep.mac,
            }),
        );
        for p in &ep.ports {
            let key = format!("{}/{}", p.container_port, p.proto);
            let entry = ports.entry(key).or_insert_with(|| serde_json::json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(serde_json::json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}));
            }
        }
    }
    let first = networks.values().next().cloned().unwrap_or_default();
    serde_json::json!({
        "Networks": networks,
        "Ports": ports,
        "IPAddress": first.get("IPAddress").cloned().unwrap_or_else(|| "".into()),
        "Gateway": first.get("Gateway").cloned().unwrap_or_else(|| "".into()),
        "MacAddress": first.get("MacAddress").cloned().unwrap_or_else(|| "".into()),
    })
}

/// `port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub fn port(containers: &Containers, name: &str, private: Option<&str>) -> anyhow::Result<i32> {
    let r = containers.get(name)?;
    let ports = containers.ports_of(&r.id);
    if let Some(want) = private {
        let (num, proto) = want.split_once('/').unwrap_or((want, "tcp"));
        let matching: Vec<_> = ports
            .iter()
            .filter(|p| p.container_port.to_string() == num && p.proto.to_string() == proto)
            .collect();
        if matching.is_empty() {
            bail!("no public port '{num}/{proto}' published for {}", r.name);
        }
        for p in matching {
            println!("{}:{}", p.host_ip, p.host_port);
        }
        return Ok(0);
    }
    for p in ports {
        println!(
            "{}/{} -> {}:{}",
            p.container_port, p.proto, p.host_ip, p.host_port
        );
    }
    Ok(0)
}

/// One entry of inspect's `Mounts`, in Docker's shape.
fn mount_json(containers: &Containers, m: &berth_engine::volumes::MountSpec) -> serde_json::Value {
    use berth_engine::volumes::MountKind;
    let mut v = serde_json::json!({
        "Type": m.kind.as_str(),
        "Source": match m.kind {
            MountKind::Volume => containers.volumes().mountpoint(&m.source).to_string_lossy().into_owned(),
            MountKind::Bind => m.source.clone(),
            MountKind::Tmpfs => String::new(),
        },
        "Destination": m.target,
        "Mode": m.mode,
        "RW": !m.readonly,
        "Propagation": m.propagation_name(),
    });
    if m.kind == MountKind::Volume {
        v["Name"] = serde_json::Value::from(m.source.clone());
        v["Driver"] = serde_json::Value::from("local");
    }
    v
}

/// `wait NAME...`: print each exit code.
pub fn wait(containers: &Containers, names: &[String]) -> anyhow::Result<i32> {
    Ok(crate::each_name(names, |n| {
        Ok(containers.wait(n)?.to_string())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(
            parse_detach_keys("ctrl-p,ctrl-q").unwrap(),
            vec![0x10, 0x11]
        );
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), vec![0x01, b'x']);
        assert_eq!(
            parse_detach_keys("ctrl-@,ctrl-_,ctrl-\\").unwrap(),
            vec![0, 0x1f, 0x1c]
        );
        assert!(parse_detach_keys("").unwrap().is_empty());
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("xy").is_err());
    }
}
