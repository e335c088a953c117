//! The runtime-spec lifecycle: create, start, state, kill, delete, exec, and
//! `run` composed of them.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::cgroups::CgroupManager;
use crate::error::{Error, Result, SysContext};
use crate::init::{self, ExecArgs, InitArgs};
use crate::seccomp::{self, CompiledFilter};
use crate::spec::Bundle;
use crate::state::{self, ContainerDir, Record, State, Status};
use crate::sync::{Channel, Msg};
use crate::{hooks, tty};

/// Options of `create` (runc's flags).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Container id.
    pub id: String,
    /// Bundle directory holding config.json.
    pub bundle: PathBuf,
    /// Unix socket to receive the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// File to write init's pid to.
    pub pid_file: Option<PathBuf>,
    /// Descriptors 3..3+N of the caller that the container process keeps (runc's `--preserve-fds`).
    pub preserve_fds: u32,
    /// Socket-activation descriptors (the caller's `LISTEN_FDS`): kept like `preserve_fds`,
    /// before them, and announced to the process as `LISTEN_FDS=N`, `LISTEN_PID=1`.
    pub listen_fds: u32,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Unix socket to receive the pty master when the process has a terminal.
    pub console_socket: Option<PathBuf>,
    /// File to write the process's pid to.
    pub pid_file: Option<PathBuf>,
    /// Do not wait for the process.
    pub detach: bool,
    /// Descriptors 3..3+N of the caller that the process keeps (runc's `--preserve-fds`).
    pub preserve_fds: u32,
}

/// A created container's init.
#[derive(Debug)]
pub struct Created {
    /// Host pid of init.
    pub pid: i32,
    /// The pty master, when the process has a terminal and no console socket was given.
    pub pty: Option<OwnedFd>,
}

/// How a foreground process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code as a shell reports it: the code, or 128 + signal.
    pub code: i32,
    /// The OOM killer killed a process of the container's cgroup.
    pub oom_killed: bool,
}

/// An OCI runtime whose state lives under `root` (like `runc --root`).
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
}

/// Signal-forwarding target for foreground processes.
static FORWARD_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_PID.load(std::sync::atomic::Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn forward_signals_to(pid: i32) {
    FORWARD_PID.store(pid, std::sync::atomic::Ordering::Relaxed);
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(forward_signal),
        nix::sys::signal::SaFlags::SA_RESTART,
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the handler only calls the async-signal-safe kill(2).
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
}

/// fork(2) of a container process: into the pid namespace `join` if given,
/// else into a new one when `new_pid`, else into ours. Returns `None` in the
/// child.
///
/// glibc's fork, not a raw clone: it takes malloc's and its other internal
/// locks around the fork, so a child of a caller with other threads (the
/// builder's ssh-agent forwarder, a registry client's runtime) never inherits
/// one of them locked by a thread it does not have. The pid namespace for the
/// child is set on this thread before the fork and restored after it; if it
/// cannot be restored the child is killed and this fails, so no later child
/// of this thread lands in the container's namespace.
fn clone_process(join: Option<&OwnedFd>, new_pid: bool) -> Result<Option<Pid>> {
    let guard = match join {
        None if new_pid => PidNsGuard::unshare()?,
        _ => PidNsGuard::join(join)?,
    };
    // SAFETY: the child only runs the container's init, which never returns
    // to the caller's code (it execs or exits).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // The child keeps the namespace it was made in.
        std::mem::forget(guard);
        return Ok(None);
    }
    let forked = if pid == -1 {
        Err(nix::Error::last()).ctx(|| "fork container process".into())
    } else {
        Ok(Pid::from_raw(pid))
    };
    let restored = guard.restore();
    match (forked, restored) {
        (Err(e), _) => Err(e),
        (Ok(child), Err(e)) => {
            abort_child(child);
            Err(e)
        }
        (Ok(child), Ok(())) => Ok(Some(child)),
    }
}

fn ns_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

fn ns_proc_name(flag: CloneFlags) -> &'static str {
    match flag {
        f if f == CloneFlags::CLONE_NEWNS => "mnt",
        f if f == CloneFlags::CLONE_NEWCGROUP => "cgroup",
        f if f == CloneFlags::CLONE_NEWUTS => "uts",
        f if f == CloneFlags::CLONE_NEWIPC => "ipc",
        f if f == CloneFlags::CLONE_NEWNET => "net",
        f if f == CloneFlags::CLONE_NEWPID => "pid",
        _ => "user",
    }
}

/// Order in which namespaces are joined: mount last, so the others are
/// opened through the host's /proc.
fn join_order(flag: CloneFlags) -> u8 {
    if flag == CloneFlags::CLONE_NEWNS {
        2
    } else {
        1
    }
}

/// The pid namespace this thread's next child goes into, set by [`join`] or
/// [`unshare`] and set back to our own by [`restore`] (which `clone_process`
/// always calls in the parent).
///
/// [`join`]: PidNsGuard::join
/// [`unshare`]: PidNsGuard::unshare
/// [`restore`]: PidNsGuard::restore
struct PidNsGuard(Option<File>);

impl PidNsGuard {
    fn join(target: Option<&OwnedFd>) -> Result<PidNsGuard> {
        let Some(target) = target else {
            return Ok(PidNsGuard(None));
        };
        let own = File::open("/proc/self/ns/pid").ctx(|| "open own pid namespace".into())?;
        setns(target.as_fd(), CloneFlags::CLONE_NEWPID).ctx(|| "join pid namespace".into())?;
        Ok(PidNsGuard(Some(own)))
    }

    /// Back to our own pid namespace for the next children of this thread.
    fn restore(self) -> Result<()> {
        match self.0 {
            Some(own) => setns(own.as_fd(), CloneFlags::CLONE_NEWPID)
                .ctx(|| "restore our pid namespace after the fork".into()),
            None => Ok(()),
        }
    }

    /// A new pid namespace for our next child (this thread's only).
    fn unshare() -> Result<PidNsGuard> {
        let own = File::open("/proc/self/ns/pid").ctx(|| "open own pid namespace".into())?;
        nix::sched::unshare(CloneFlags::CLONE_NEWPID).ctx(|| "create a pid namespace".into())?;
        Ok(PidNsGuard(Some(own)))
    }
}

fn wait_exit(pid: Pid) -> Result<i32> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| format!("wait for {pid}")),
        }
    }
}

/// Kill and reap a child that failed during setup.
fn abort_child(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

impl Runtime {
    /// A runtime keeping its state under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime { root: root.into() }
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &str) -> Result<ContainerDir> {
        ContainerDir::new(&self.root, id)
    }

    fn load(&self, id: &str) -> Result<(ContainerDir, Record)> {
        let dir = self.dir(id)?;
        match dir.load(id)? {
            Some(r) => Ok((dir, r)),
            None => Err(Error::WrongState {
                id: id.into(),
                status: "creating".into(),
                hint: "another command is creating it, or one was interrupted: `delete --force` removes it".into(),
            }),
        }
    }

    fn saved_spec(dir: &ContainerDir) -> Result<Spec> {
        let text = std::fs::read_to_string(dir.config_file())
            .ctx(|| format!("read {}", dir.config_file().display()))?;
        crate::spec::parse_spec(&text).map_err(|reason| Error::InvalidConfig {
            path: dir.config_file(),
            reason,
        })
    }

    fn status_of(dir: &ContainerDir, record: &Record) -> Status {
        if !state::init_alive(record) {
            Status::Stopped
        } else if dir.start_socket().exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    fn state_of(dir: &ContainerDir, record: &Record) -> State {
        let status = Self::status_of(dir, record);
        State {
            oci_version: "1.2.0".into(),
            id: record.id.clone(),
            status,
            pid: if status == Status::Stopped {
                0
            } else {
                record.pid
            },
            bundle: record.bundle.clone(),
            rootfs: record.rootfs.clone(),
            created: record.created.clone(),
            annotations: record.annotations.clone(),
        }
    }

    /// Create a container from a bundle: its init is set up in new namespaces
    /// and waits for [`Runtime::start`].
    pub fn create(&self, opts: &CreateOptions) -> Result<Created> {
        let bundle = Bundle::load(&opts.bundle)?;
        let dir = self.dir(&opts.id)?;
        dir.create(&opts.id)?;
        let result = self.create_in(&dir, &bundle, opts);
        if result.is_err() {
            let _ = dir.remove();
        }
        result
    }

    fn create_in(
        &self,
        dir: &ContainerDir,
        bundle: &Bundle,
        opts: &CreateOptions,
    ) -> Result<Created> {
        let spec = &bundle.spec;
        let json = serde_json::to_vec(spec).map_err(|e| Error::Io {
            context: "encode spec".into(),
            source: e.into(),
        })?;
        state::write_atomic(&dir.config_file(), &json)?;
        let linux = spec.linux().clone().unwrap_or_default();
        let seccomp = linux.seccomp().as_ref().map(seccomp::compile).transpose()?;

        let mut new_pid = false;
        let mut unshare = CloneFlags::empty();
        let mut join = Vec::new();
        let mut join_pid = None;
        for ns in linux.namespaces().iter().flatten() {
            let flag = ns_flag(ns.typ());
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    let fd: OwnedFd = File::open(path)
                        .ctx(|| {
                            format!("open {} namespace {}", ns_proc_name(flag), path.display())
                        })?
                        .into();
                    if flag == CloneFlags::CLONE_NEWPID {
                        join_pid = Some(fd);
                    } else {
                        join.push((flag, fd));
                    }
                }
                _ if flag == CloneFlags::CLONE_NEWPID => new_pid = true,
                _ => unshare |= flag,
            }
        }
        join.sort_by_key(|(f, _)| join_order(*f));

        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let cgroup = CgroupManager::create(&opts.id, cgroups_path.as_deref())?;
        let result = (|| {
            if let Some(resources) = linux.resources() {
                cgroup.apply(resources)?;
            }
            let no_rules = Vec::new();
            let device_rules = linux
                .resources()
                .as_ref()
                .and_then(|r| r.devices().as_ref())
                .unwrap_or(&no_rules);
            cgroup.apply_devices(device_rules)?;
            self.spawn_init(
                dir,
                bundle,
                opts,
                InitPlan {
                    new_pid,
                    unshare,
                    join,
                    join_pid,
                    seccomp,
                    cgroup: &cgroup,
                },
            )
        })();
        if result.is_err() {
            let _ = cgroup.remove();
        }
        result
    }

    fn spawn_init(
        &self,
        dir: &ContainerDir,
        bundle: &Bundle,
        opts: &CreateOptions,
        plan: InitPlan<'_>,
    ) -> Result<Created> {
        let listener = crate::socket::bind(&dir.start_socket())
            .ctx(|| format!("bind {}", dir.start_socket().display()))?;
        let (mut ours, theirs) = Channel::pair()?;
        let child = clone_process(plan.join_pid.as_ref(), plan.new_pid)?;
        let Some(pid) = child else {
            drop(ours);
            let mut spec = bundle.spec.clone();
            if opts.listen_fds > 0 {
                if let Some(process) = spec.process_mut() {
                    let mut env = process.env().clone().unwrap_or_default();
                    env.push(format!("LISTEN_FDS={}", opts.listen_fds));
                    env.push("LISTEN_PID=1".into());
                    process.set_env(Some(env));
                }
            }
            let args = InitArgs {
                spec,
                rootfs: bundle.rootfs.clone(),
                bundle: bundle.dir.clone(),
                join: plan.join,
                unshare: plan.unshare,
                seccomp: plan.seccomp,
                start: listener,
                preserve_fds: opts.listen_fds.saturating_add(opts.preserve_fds),
            };
            init::init_main(args, theirs);
        };
        drop(theirs);
        drop(listener);
        let setup = (|| {
            plan.cgroup.add_task(pid.as_raw())?;
            ours.send(&Msg::Go)?;
            let pty = match ours.recv()? {
                Some(Msg::Ready { pty }) => pty,
                Some(failed @ Msg::Failed { .. }) => return Err(failed.into_error()),
                Some(other) => return Err(Error::Init(format!("unexpected message {other:?}"))),
                None => return Err(Error::Init("container init exited during setup".into())),
            };
            let master = if pty { Some(ours.recv_fd()?) } else { None };
            let (pid_start, _) = state::proc_stat(pid.as_raw())
                .ok_or_else(|| Error::Init("container init exited during setup".into()))?;
            let record = Record {
                id: opts.id.clone(),
                pid: pid.as_raw(),
                pid_start,
                bundle: bundle.dir.clone(),
                rootfs: bundle.rootfs.clone(),
                created: state::now_rfc3339(),
                cgroup: plan.cgroup.location(),
                annotations: bundle.spec.annotations().clone().unwrap_or_default(),
            };
            dir.save(&record)?;
            if let Some(path) = &opts.pid_file {
                state::write_atomic(path, pid.as_raw().to_string().as_bytes())?;
            }
            let state = Self::state_of(dir, &record);
            let spec_hooks = bundle.spec.hooks().clone().unwrap_or_default();
            #[allow(deprecated)]
            hooks::run("prestart", spec_hooks.prestart().as_ref(), &state)?;
            hooks::run(
                "createRuntime",
                spec_hooks.create_runtime().as_ref(),
                &state,
            )?;
            let master = match (&opts.console_socket, master) {
                (Some(socket), Some(m)) => {
                    tty::send_to_console_socket(socket, m.as_fd())?;
                    None
                }
                (_, m) => m,
            };
            Ok(Created {
                pid: pid.as_raw(),
                pty: master,
            })
        })();
        if setup.is_err() {
            abort_child(pid);
        }
        setup
    }

    /// Start a created container: its init execs the spec's process.
    pub fn start(&self, id: &str) -> Result<()> {
        let (dir, record) = self.load(id)?;
        let status = Self::status_of(&dir, &record);
        if status != Status::Created {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                hint: "only a created container can be started".into(),
            });
        }
        let stream = crate::socket::connect(&dir.start_socket())
            .ctx(|| format!("connect to container {id}"))?;
        let mut channel = Channel::from_stream(stream);
        channel.send(&Msg::Go)?;
        let outcome = channel.recv();
        let _ = std::fs::remove_file(dir.start_socket());
        match outcome? {
            None => {}
            Some(failed @ Msg::Failed { .. }) => return Err(failed.into_error()),
            Some(other) => return Err(Error::Init(format!("unexpected message {other:?}"))),
        }
        let spec = Self::saved_spec(&dir)?;
        let state = Self::state_of(&dir, &record);
        let spec_hooks = spec.hooks().clone().unwrap_or_default();
        hooks::run("poststart", spec_hooks.poststart().as_ref(), &state)
    }

    /// The container's state.
    pub fn state(&self, id: &str) -> Result<State> {
        let (dir, record) = self.load(id)?;
        Ok(Self::state_of(&dir, &record))
    }

    /// Every container under the root, sorted by id.
    pub fn list(&self) -> Result<Vec<State>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).ctx(|| format!("read {}", self.root.display())),
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Ok((dir, record)) = self.load(&id) {
                out.push(Self::state_of(&dir, &record));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Change the resource limits of a live container's cgroup (runc's `update`).
    pub fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let (dir, record) = self.load(id)?;
        if Self::status_of(&dir, &record) == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: "stopped".into(),
                hint: "container not running, there is no cgroup to update".into(),
            });
        }
        let cgroup = CgroupManager::from_location(record.cgroup.clone());
        cgroup.apply(resources)?;
        if let Some(rules) = resources.devices() {
            cgroup.apply_devices(rules)?;
        }
        Ok(())
    }

    /// Whether the OOM killer killed a process in the container's cgroup.
    pub fn oom_killed(&self, id: &str) -> Result<bool> {
        let (_, record) = self.load(id)?;
        Ok(CgroupManager::from_location(record.cgroup.clone()).oom_kill_count() > 0)
    }

    /// Send `signal` to the container's init, or with `all` to every process in its cgroup.
    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let (dir, record) = self.load(id)?;
        let status = Self::status_of(&dir, &record);
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                hint: "container not running, there is no process to signal".into(),
            });
        }
        if all {
            // The init is in the cgroup too: signalling it again could find it gone
            // already (it may exit on the first signal) and fail, as runc does not.
            let cgroup = CgroupManager::from_location(record.cgroup.clone());
            return Ok(cgroup.kill_all(signal)?);
        }
        kill(Pid::from_raw(record.pid), signal).ctx(|| format!("send {signal} to container {id}"))
    }

    /// Delete a stopped container (with `force`, kill a live one first, and
    /// succeed if there is none): its cgroup and state go, and the poststop hooks run.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = self.dir(id)?;
        let loaded = match dir.load(id) {
            // As runc: forcing the removal of what is already gone succeeds.
            Err(Error::NotFound(_)) if force => return Ok(()),
            other => other?,
        };
        let Some(record) = loaded else {
            if force {
                // An interrupted create: its init and cgroup may exist without a
                // record. The saved spec says where the cgroup is.
                if let Ok(spec) = Self::saved_spec(&dir) {
                    let path = spec
                        .linux()
                        .as_ref()
                        .and_then(|l| l.cgroups_path().clone())
                        .map(|p| p.to_string_lossy().into_owned());
                    if let Ok(cgroup) = CgroupManager::open(id, path.as_deref()) {
                        let _ = cgroup.kill_all(Signal::SIGKILL);
                        let deadline = Instant::now() + Duration::from_secs(10);
                        while cgroup.pids().is_ok_and(|p| !p.is_empty())
                            && Instant::now() < deadline
                        {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        cgroup.remove()?;
                    }
                }
                return dir.remove();
            }
            return Err(Error::WrongState {
                id: id.into(),
                status: "creating".into(),
                hint: "use --force to remove an interrupted create".into(),
            });
        };
        let status = Self::status_of(&dir, &record);
        if status != Status::Stopped {
            if !force && status == Status::Running {
                return Err(Error::WrongState {
                    id: id.into(),
                    status: status.to_string(),
                    hint: "stop it first or use --force".into(),
                });
            }
            let cgroup = CgroupManager::from_location(record.cgroup.clone());
            let _ = cgroup.kill_all(Signal::SIGKILL);
            let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(10);
            while state::init_alive(&record) && Instant::now() < deadline {
                // Reap it if it is our own child (foreground run).
                let _ = waitpid(
                    Pid::from_raw(record.pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let cgroup = CgroupManager::from_location(record.cgroup.clone());
        cgroup.remove()?;
        let state = Self::state_of(&dir, &record);
        let spec = Self::saved_spec(&dir).ok();
        dir.remove()?;
        if let Some(spec) = spec {
            let spec_hooks = spec.hooks().clone().unwrap_or_default();
            hooks::run("poststop", spec_hooks.poststop().as_ref(), &state)?;
        }
        Ok(())
    }

    /// Create, start and wait for a container in the foreground, relaying its
    /// terminal and forwarding signals; then delete it. With `detach`, return
    /// after start.
    pub fn run(&self, opts: &CreateOptions, detach: bool) -> Result<Option<Exit>> {
        self.run_prepared(opts, detach, |_| Ok(()))
    }

    /// [`Runtime::run`], calling `prepare(pid)` between create and start (the
    /// namespaces exist, the process has not run yet), e.g. to set up its
    /// network namespace. If `prepare` fails, the container is deleted.
    pub fn run_prepared(
        &self,
        opts: &CreateOptions,
        detach: bool,
        prepare: impl FnOnce(i32) -> std::result::Result<(), String>,
    ) -> Result<Option<Exit>> {
        let created = self.create(opts)?;
        if let Err(e) = prepare(created.pid) {
            let _ = self.delete(&opts.id, true);
            return Err(Error::Init(e));
        }
        let pid = Pid::from_raw(created.pid);
        let relay = match (created.pty, detach) {
            (Some(master), false) => Some(tty::Relay::start(master)?),
            _ => None,
        };
        if !detach {
            forward_signals_to(created.pid);
        }
        if let Err(e) = self.start(&opts.id) {
            if let Some(r) = relay {
                r.finish();
            }
            let _ = self.delete(&opts.id, true);
            return Err(e);
        }
        if detach {
            return Ok(None);
        }
        let code = wait_exit(pid)?;
        FORWARD_PID.store(0, std::sync::atomic::Ordering::Relaxed);
        if let Some(r) = relay {
            r.finish();
        }
        let (_, record) = self.load(&opts.id)?;
        let oom_killed = CgroupManager::from_location(record.cgroup.clone()).oom_kill_count() > 0;
        self.delete(&opts.id, true)?;
        Ok(Some(Exit { code, oom_killed }))
    }

    /// Run an extra process in a running container: it joins the container's
    /// namespaces and cgroup and gets its seccomp filter. Returns the exit
    /// (or `None` with `detach`, after the process has exec'd).
    pub fn exec(&self, id: &str, process: Process, opts: &ExecOptions) -> Result<Option<Exit>> {
        crate::spec::check_process(&process).map_err(Error::Init)?;
        let (dir, record) = self.load(id)?;
        let status = Self::status_of(&dir, &record);
        if status != Status::Running {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                hint: "exec needs a running container".into(),
            });
        }
        let spec = Self::saved_spec(&dir)?;
        let linux = spec.linux().clone().unwrap_or_default();
        let seccomp: Option<CompiledFilter> =
            linux.seccomp().as_ref().map(seccomp::compile).transpose()?;
        let cgroup = CgroupManager::from_location(record.cgroup.clone());
        let mut join = Vec::new();
        let mut pid_ns = None;
        for ns in linux.namespaces().iter().flatten() {
            let flag = ns_flag(ns.typ());
            if flag.is_empty() || flag == CloneFlags::CLONE_NEWUSER {
                continue;
            }
            let path = format!("/proc/{}/ns/{}", record.pid, ns_proc_name(flag));
            let fd: OwnedFd = File::open(&path).ctx(|| format!("open {path}"))?.into();
            if flag == CloneFlags::CLONE_NEWPID {
                pid_ns = Some(fd);
            } else {
                join.push((flag, fd));
            }
        }
        join.sort_by_key(|(f, _)| join_order(*f));
        let (mut ours, theirs) = Channel::pair()?;
        let child = clone_process(pid_ns.as_ref(), false)?;
        let Some(pid) = child else {
            drop(ours);
            init::exec_main(
                ExecArgs {
                    process,
                    join,
                    seccomp,
                    preserve_fds: opts.preserve_fds,
                },
                theirs,
            );
        };
        drop(theirs);
        let setup = (|| {
            cgroup.add_task(pid.as_raw())?;
            ours.send(&Msg::Go)?;
            let pty = match ours.recv()? {
                Some(Msg::Ready { pty }) => pty,
                Some(failed @ Msg::Failed { .. }) => return Err(failed.into_error()),
                Some(other) => return Err(Error::Init(format!("unexpected message {other:?}"))),
                None => return Err(Error::Init("exec process exited during setup".into())),
            };
            let master = if pty { Some(ours.recv_fd()?) } else { None };
            // End-of-file means execve succeeded (the channel is close-on-exec).
            match ours.recv()? {
                None => {}
                Some(failed @ Msg::Failed { .. }) => return Err(failed.into_error()),
                Some(other) => return Err(Error::Init(format!("unexpected message {other:?}"))),
            }
            if let Some(path) = &opts.pid_file {
                state::write_atomic(path, pid.as_raw().to_string().as_bytes())?;
            }
            Ok(match (&opts.console_socket, master) {
                (Some(socket), Some(m)) => {
                    tty::send_to_console_socket(socket, m.as_fd())?;
                    None
                }
                (_, m) => m,
            })
        })();
        let master = match setup {
            Ok(m) => m,
            Err(e) => {
                // The child has already reported and exited; reap it.
                let _ = waitpid(pid, None);
                return Err(e);
            }
        };
        if opts.detach {
            return Ok(None);
        }
        let relay = master.map(tty::Relay::start).transpose()?;
        forward_signals_to(pid.as_raw());
        let code = wait_exit(pid)?;
        FORWARD_PID.store(0, std::sync::atomic::Ordering::Relaxed);
        if let Some(r) = relay {
            r.finish();
        }
        Ok(Some(Exit {
            code,
            oom_killed: cgroup.oom_kill_count() > 0,
        }))
    }

    /// Directories of a live container's cgroup (one per v1 hierarchy, or the v2 one),
    /// for reading its statistics.
    pub fn cgroup_dirs(&self, id: &str) -> Result<Vec<PathBuf>> {
        let (_, record) = self.load(id)?;
        Ok(CgroupManager::from_location(record.cgroup.clone()).dirs())
    }

    /// Host pids of every process in the container's cgroup, sorted.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let (_, record) = self.load(id)?;
        Ok(CgroupManager::from_location(record.cgroup.clone()).pids()?)
    }

    /// The freezer file of a container's cgroup and whether it is v2's `cgroup.freeze`.
    fn freezer_file(&self, id: &str) -> Result<(PathBuf, bool)> {
        for dir in self.cgroup_dirs(id)? {
            let v2 = dir.join("cgroup.freeze");
            if v2.exists() {
                return Ok((v2, true));
            }
            let v1 = dir.join("freezer.state");
            if v1.exists() {
                return Ok((v1, false));
            }
        }
        Err(Error::Init(format!(
            "container {id}: its cgroup has no freezer (neither cgroup.freeze nor freezer.state)"
        )))
    }

    /// Whether the container's cgroup is frozen (paused); false when it has no freezer.
    pub fn paused(&self, id: &str) -> Result<bool> {
        let Ok((file, v2)) = self.freezer_file(id) else {
            return Ok(false);
        };
        let state = std::fs::read_to_string(&file).unwrap_or_default();
        Ok(if v2 {
            state.trim() == "1"
        } else {
            matches!(state.trim(), "FROZEN" | "FREEZING")
        })
    }

    fn set_frozen(&self, id: &str, frozen: bool) -> Result<()> {
        let (status, pid) = {
            let (dir, record) = self.load(id)?;
            (Self::status_of(&dir, &record), record.pid)
        };
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                hint: "only a running container can be paused or resumed".into(),
            });
        }
        let (file, v2) = self.freezer_file(id)?;
        let value = match (v2, frozen) {
            (true, true) => "1",
            (true, false) => "0",
            (false, true) => "FROZEN",
            (false, false) => "THAWED",
        };
        std::fs::write(&file, value).ctx(|| format!("write {value} to {}", file.display()))?;
        // Wait (up to 5 s) until the kernel reports the change as complete.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let done = if v2 {
                let events = file.with_file_name("cgroup.events");
                let frozen_now = std::fs::read_to_string(&events)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.trim() == "frozen 1");
                frozen_now == frozen
            } else {
                let state = std::fs::read_to_string(&file).unwrap_or_default();
                state.trim() == value
            };
            if done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Init(format!(
                    "container {id} (pid {pid}): the cgroup did not become {} within 5s",
                    if frozen { "frozen" } else { "thawed" }
                )));
            }
            if !v2 && frozen {
                // v1 may stay FREEZING while a task is busy: ask again.
                let _ = std::fs::write(&file, value);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Freeze every process of the container (runc's `pause`).
    pub fn pause(&self, id: &str) -> Result<()> {
        self.set_frozen(id, true)
    }

    /// Thaw a paused container (runc's `resume`).
    pub fn resume(&self, id: &str) -> Result<()> {
        self.set_frozen(id, false)
    }
}

struct InitPlan<'a> {
    new_pid: bool,
    unshare: CloneFlags,
    join: Vec<(CloneFlags, OwnedFd)>,
    join_pid: Option<OwnedFd>,
    seccomp: Option<CompiledFilter>,
    cgroup: &'a CgroupManager,
}
