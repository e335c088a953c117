//! The monitor: one small process per running container (berth re-executed as
//! `berth __monitor`), the parent of its init. It mounts the rootfs, starts
//! the container through the runtime, copies its output to the log and to
//! attached clients, waits for it, records the exit code and OOM kill, tears
//! down the runtime state and the rootfs mount, and honours `--rm`.
//!
//! Under a restart policy (`--restart`), it decides after each exit whether
//! to run the process again: unless a `stop`, `kill` or `rm -f` through berth
//! marked the record (`stop_requested`), `always` and `unless-stopped`
//! restart, and `on-failure[:N]` restarts after a non-zero exit (at most N
//! times). A restart waits a backoff (100 ms, doubling, back to 100 ms after
//! a run of 10 s, at most 60 s), deletes the runtime container and creates it
//! again from the same bundle, on the same rootfs mount, into the same log.
//!
//! It reports to the command that spawned it on fd 3: `ok <pid>` or
//! `err <code> <message>`, one line.
//!
//! Once a run has started, the monitor execs (same process, still the parent
//! and subreaper of the init) into the slim `berth-monitor` binary next to
//! `berth`, which only relays output, input and attach clients
//! ([`berth_monitor::supervise`]) and, after the exit, execs back into
//! `berth __monitor ID --resume --exit-code N` (see
//! [`berth_monitor::handover`]) for the rest: OOM check, runtime delete,
//! network detach, restart policy (a restart execs into berth-monitor again),
//! unmount, record, `--rm`, the Exited frame. Without a berth-monitor next
//! to berth, the monitor relays in-process, as before the split.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_monitor::attach::Kind;
use berth_monitor::handover::{self, Handover};
use berth_monitor::{broadcast, supervise, Client, Stdio};

use super::logs::LogWriter;
use super::network::delete_veths;
use super::record::{ContainerRecord, Status};
use super::Containers;
use crate::error::{Error, Result};

/// The report channel to the spawning command (fd 3), if it gave one.
struct Report(Option<File>);

impl Report {
    fn from_fd3() -> Report {
        // SAFETY: fcntl(F_GETFD) only queries whether fd 3 is open.
        let open = unsafe { libc::fcntl(3, libc::F_GETFD) } >= 0;
        // SAFETY: fd 3 is open and was handed to us for this purpose; we own it from here.
        Report(open.then(|| unsafe { File::from_raw_fd(3) }))
    }

    fn send(&mut self, line: &str) {
        if let Some(f) = &mut self.0 {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
        self.0 = None;
    }
}

/// Entry point of `berth __monitor`. Returns the process exit code.
pub fn main(root: &Path, run_root: &Path, id: &str, wait_attach: bool) -> i32 {
    // The command that spawned us, looked at first: `run` and `start -a` give
    // up waiting for their attach once it is gone.
    let spawner = std::os::unix::process::parent_id();
    let mut report = Report::from_fd3();
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let containers = match Containers::open(root, run_root) {
        Ok(c) => c,
        Err(e) => {
            report.send(&format!("err 125 {e}"));
            return 1;
        }
    };
    match run(&containers, id, wait_attach.then_some(spawner), &mut report) {
        Ok(()) => 0,
        Err(e) => {
            report.send(&format!("err {} {e}", e.exit_code()));
            eprintln!("berth monitor {id}: {e}");
            1
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Invalid(format!("pipe: {e}")))
}

fn dup_onto(fd: RawFd, target: RawFd) {
    // SAFETY: dup2 onto a standard descriptor of this single-threaded process.
    unsafe { libc::dup2(fd, target) };
}

/// One run of the container's process: its pid and its stdio ends.
struct Run {
    pid: i32,
    io: Stdio,
}

/// Create and start the container through the runtime, its stdio on fresh
/// pipes (or the pty the runtime makes when the spec asks for one).
fn start_once(
    containers: &Containers,
    id: &str,
    record: &ContainerRecord,
    bundle: &Path,
    devnull: &File,
    monitor_log: &Path,
) -> Result<Run> {
    let tty = record.options.tty;
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    if !tty {
        if record.options.stdin_open {
            dup_onto(stdin_r.as_raw_fd(), 0);
        } else {
            dup_onto(devnull.as_raw_fd(), 0);
        }
        dup_onto(stdout_w.as_raw_fd(), 1);
        dup_onto(stderr_w.as_raw_fd(), 2);
    }
    let created = containers.runtime.create(&berth_runtime::CreateOptions {
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        console_socket: None,
        pid_file: None,
        ..Default::default()
    });
    // Our own stdio goes back to /dev/null (stderr to the monitor log).
    dup_onto(devnull.as_raw_fd(), 0);
    dup_onto(devnull.as_raw_fd(), 1);
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(monitor_log)
    {
        dup_onto(log.as_raw_fd(), 2);
    }
    drop(stdin_r);
    drop(stdout_w);
    drop(stderr_w);
    // The init exists (so does its network namespace) but has not run yet:
    // attach it to its networks now, then let it go.
    let created = match created.map_err(Error::from).and_then(|c| {
        containers.attach_networks(record, c.pid)?;
        containers.runtime.start(id).map_err(Error::from)?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            let _ = containers.runtime.delete(id, true);
            containers.detach_networks(id);
            return Err(e);
        }
    };
    Ok(Run {
        pid: created.pid,
        io: Stdio {
            stdout: (!tty).then(|| File::from(stdout_r)),
            stderr: (!tty).then(|| File::from(stderr_r)),
            pty: created.pty.map(File::from),
            stdin: (!tty && record.options.stdin_open).then(|| File::from(stdin_w)),
        },
    })
}

/// Record a run that started: its pid and start time (a first start also
/// clears the restart count and a previous stop request); a healthcheck
/// starts over at `starting` (its log kept, as Docker's).
fn mark_running(record: &mut ContainerRecord, pid: i32, first: bool) {
    if super::health::has_healthcheck(record) {
        let health = record
            .state
            .health
            .get_or_insert_with(super::health::Health::starting);
        health.status = super::health::HealthStatus::Starting;
        health.failing_streak = 0;
    }
    let state = &mut record.state;
    state.status = Status::Running;
    state.pid = pid;
    state.monitor_pid = std::process::id() as i32;
    state.monitor_start = berth_runtime::state::proc_stat(std::process::id() as i32)
        .map(|s| s.0)
        .unwrap_or(0);
    state.started_at = Some(super::now());
    state.finished_at = None;
    state.error = None;
    state.oom_killed = false;
    state.restarting = false;
    state.starting = None;
    if first {
        state.restart_count = 0;
        state.stop_requested = false;
    }
}

/// Wait for the attach client of `start -a`/`run`; give up once the command
/// that spawned this monitor (`parent`) is gone, so a killed command does not
/// leave the container claimed by a monitor that waits forever.
fn first_client(listener: &UnixListener, parent: u32) -> Result<UnixStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(Error::io("attach client"))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Error::io("accept attach client")(e)),
        }
        if std::os::unix::process::parent_id() != parent {
            return Err(Error::Invalid(
                "the command that started the container exited before attaching to it".into(),
            ));
        }
        let mut fds = [libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll on one valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 200) };
    }
}

/// First delay before a restart; it doubles with each restart up to
/// [`BACKOFF_MAX`], and starts over after a run of [`BACKOFF_RESET`] (Docker's).
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// Start and watch the container; with `wait_attach`, the pid of the command
/// whose attach client to wait for first.
fn run(
    containers: &Containers,
    id: &str,
    wait_attach: Option<u32>,
    report: &mut Report,
) -> Result<()> {
    let record = containers.claim_start(id)?;
    let paths = containers.paths(id);
    std::fs::create_dir_all(&paths.run_dir)
        .map_err(Error::io(format!("create {}", paths.run_dir.display())))?;
    let _ = std::fs::remove_file(&paths.attach_socket);
    let listener = berth_runtime::socket::bind(&paths.attach_socket)
        .map_err(Error::io(format!("bind {}", paths.attach_socket.display())))?;
    let mut clients: Vec<Client> = Vec::new();
    listener
        .set_nonblocking(true)
        .map_err(Error::io("attach socket"))?;
    if let Some(parent) = wait_attach {
        report.send("attach");
        match first_client(&listener, parent) {
            Ok(stream) => clients.push(Client::new(stream)),
            Err(e) => {
                fail(containers, id, &e, &mut clients);
                return Err(e);
            }
        }
    }

    let devnull = File::open("/dev/null").map_err(Error::io("open /dev/null"))?;
    let monitor_log = paths.dir.join("monitor.log");
    let bundle = match containers.prepare_start(&record) {
        Ok(b) => b,
        Err(e) => {
            fail(containers, id, &e, &mut clients);
            return Err(e);
        }
    };
    let current = match start_once(containers, id, &record, &bundle, &devnull, &monitor_log) {
        Ok(r) => r,
        Err(e) => {
            fail(containers, id, &e, &mut clients);
            return Err(e);
        }
    };
    let pid = current.pid;
    // Not fsynced: a pid means nothing after a reboot (reconciliation then finds
    // the container exited), and each fsync costs milliseconds on a run.
    let running = containers.update_with(id, false, |r| mark_running(r, pid, true))?;
    containers.spawn_health(&running, pid);
    report.send(&format!("ok {pid}"));
    broadcast(&mut clients, Kind::Started, &pid.to_le_bytes());
    let mut watch = Watch {
        containers,
        id,
        listener,
        clients,
        bundle,
        devnull,
        monitor_log,
        backoff: BACKOFF_START,
        run_started_ms: monotonic_ms(),
        log: None,
    };
    watch.watch(Next::Supervise(current))
}

/// What `berth-monitor` hands back when a run's process has exited.
pub struct Resume {
    /// The process's exit code (128+N for signal N).
    pub exit_code: i32,
    /// The attach listener's descriptor.
    pub listener: RawFd,
    /// The attached clients' descriptors.
    pub clients: Vec<RawFd>,
    /// The delay before the next restart.
    pub backoff_ms: u64,
    /// When the run started ([`monotonic_ms`]).
    pub run_started_ms: u64,
}

/// Entry point of `berth __monitor ID --resume`, the exec back from
/// berth-monitor: handle the exit of a run. Returns the process exit code.
pub fn resume(root: &Path, run_root: &Path, id: &str, resume: Resume) -> i32 {
    let result = Containers::open(root, run_root).and_then(|containers| {
        let mut fds = vec![resume.listener];
        fds.extend(&resume.clients);
        handover::claim(&fds).map_err(|e| Error::Invalid(e.to_string()))?;
        // SAFETY: the descriptors are open (checked above), distinct, and were
        // handed to this process by berth-monitor for its sole use.
        let socket = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = UnixListener::from(socket(resume.listener));
        listener
            .set_nonblocking(true)
            .map_err(Error::io("attach socket"))?;
        let clients = resume
            .clients
            .iter()
            .map(|fd| Client::new(UnixStream::from(socket(*fd))))
            .collect();
        let paths = containers.paths(id);
        let mut watch = Watch {
            containers: &containers,
            id,
            listener,
            clients,
            bundle: paths.bundle,
            devnull: File::open("/dev/null").map_err(Error::io("open /dev/null"))?,
            monitor_log: paths.dir.join("monitor.log"),
            backoff: Duration::from_millis(resume.backoff_ms),
            run_started_ms: resume.run_started_ms,
            log: None,
        };
        watch.watch(Next::Exited(resume.exit_code))
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth monitor {id}: {e}");
            1
        }
    }
}

/// CLOCK_MONOTONIC in milliseconds (the same clock across an exec).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// What comes next for a monitor: relaying a run, or handling its exit.
enum Next {
    Supervise(Run),
    Exited(i32),
}

/// A monitor's state across the runs of its container.
struct Watch<'a> {
    containers: &'a Containers,
    id: &'a str,
    listener: UnixListener,
    clients: Vec<Client>,
    bundle: PathBuf,
    devnull: File,
    monitor_log: PathBuf,
    backoff: Duration,
    /// When the current run started ([`monotonic_ms`]).
    run_started_ms: u64,
    /// The log, when relaying in-process.
    log: Option<LogWriter>,
}

impl Watch<'_> {
    /// Relay runs and handle their exits until the container is done.
    fn watch(&mut self, mut next: Next) -> Result<()> {
        let (containers, id) = (self.containers, self.id);
        let (code, oom, veths) = loop {
            let code = match next {
                Next::Supervise(run) => self.relay(run)?,
                Next::Exited(code) => code,
            };
            let oom = containers.runtime.oom_killed(id).unwrap_or(false);
            let _ = containers.runtime.delete(id, true);
            // The veth pairs go after the exit is reported (their deletion is slow).
            let veths = containers.release_networks(id);
            // Decide under the record's lock, so a concurrent stop either sees
            // the container exited or leaves its mark before we look.
            let restart = {
                let _lock = containers.store.lock(id)?;
                let mut r = containers.store.load(id)?;
                let restart = !r.state.stop_requested
                    && r.state.status == Status::Running
                    && r.restart_policy.should_restart(code, r.state.restart_count);
                if restart {
                    r.state.pid = 0;
                    r.state.exit_code = code;
                    r.state.oom_killed = oom;
                    r.state.finished_at = Some(super::now());
                    r.state.restarting = true;
                    r.state.restart_count += 1;
                    containers.store.save(&r)?;
                }
                restart
            };
            if !restart {
                break (code, oom, veths);
            }
            delete_veths(&veths);
            // As Docker: clients attached to this run see it end; `attach` reaches the next one.
            broadcast(&mut self.clients, Kind::Exited, &exit_payload(code, oom));
            self.clients.clear();
            if monotonic_ms().saturating_sub(self.run_started_ms)
                >= BACKOFF_RESET.as_millis() as u64
            {
                self.backoff = BACKOFF_START;
            }
            if !wait_unless_stopped(containers, id, self.backoff) {
                break (code, oom, Vec::new());
            }
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            // Start again, same bundle, rootfs mount and log; under the lock
            // so that a stop cannot slip between the check and the start.
            let lock = containers.store.lock(id)?;
            let mut r = containers.store.load(id)?;
            if r.state.stop_requested || r.state.status != Status::Running {
                drop(lock);
                break (code, oom, Vec::new());
            }
            match start_once(
                containers,
                id,
                &r,
                &self.bundle,
                &self.devnull,
                &self.monitor_log,
            ) {
                Ok(run) => {
                    mark_running(&mut r, run.pid, false);
                    containers.store.save_volatile(&r)?;
                    containers.spawn_health(&r, run.pid);
                    self.run_started_ms = monotonic_ms();
                    next = Next::Supervise(run);
                }
                Err(e) => {
                    drop(lock);
                    fail(containers, id, &e, &mut self.clients);
                    return Err(e);
                }
            }
            drop(lock);
        };
        self.finish(code, oom, &veths)
    }

    /// Relay a run until its process has exited: in berth-monitor (this call
    /// then never returns), or in this process without one.
    fn relay(&mut self, run: Run) -> Result<i32> {
        let Run { pid, mut io } = run;
        let paths = self.containers.paths(self.id);
        // A run that ends within the first few ms (`run --rm bb true`) is finished
        // here: two execs would only add to its latency. Its output waits in the
        // pipes meanwhile.
        if self.log.is_none() && !exited_within(pid, HAND_OVER_GRACE) {
            match self.exec_slim(pid, &io, &paths.log) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("berth monitor {}: {e}; relaying in-process", self.id),
                Ok(never) => match never {},
            }
        }
        let log = match &mut self.log {
            Some(log) => log,
            None => self.log.insert(
                LogWriter::open(&paths.log)
                    .map_err(Error::io(format!("open {}", paths.log.display())))?,
            ),
        };
        let code = supervise(pid, &mut io, &self.listener, &mut self.clients, log)
            .map_err(|e| Error::Invalid(format!("relay the container's output: {e}")))?;
        let _ = log.flush();
        Ok(code)
    }

    /// Exec into berth-monitor next to this binary; returns only on failure
    /// (`NotFound` when there is none).
    fn exec_slim(
        &self,
        pid: i32,
        io: &Stdio,
        log_path: &Path,
    ) -> std::io::Result<std::convert::Infallible> {
        let exe = berth_exe()?;
        let slim = exe.with_file_name(handover::BINARY);
        if !slim.is_file() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let fd = |f: &Option<File>| f.as_ref().map(|f| f.as_raw_fd());
        let mut back: Vec<OsString> = vec![exe.into_os_string()];
        back.extend(
            [
                "--root".as_ref(),
                self.containers.root.as_os_str(),
                "--run-root".as_ref(),
                self.containers.run_root.as_os_str(),
                "__monitor".as_ref(),
                self.id.as_ref(),
                "--resume".as_ref(),
            ]
            .map(OsString::from),
        );
        back.extend(
            [
                "--backoff-ms".to_string(),
                self.backoff.as_millis().to_string(),
                "--run-started-ms".to_string(),
                self.run_started_ms.to_string(),
            ]
            .map(OsString::from),
        );
        let h = Handover {
            id: self.id.to_string(),
            pid,
            log: log.as_raw_fd(),
            stdout: fd(&io.stdout),
            stderr: fd(&io.stderr),
            pty: fd(&io.pty),
            stdin: fd(&io.stdin),
            listener: self.listener.as_raw_fd(),
            clients: self.clients.iter().map(|c| c.stream.as_raw_fd()).collect(),
            back,
        };
        let mut fds = vec![h.log, h.listener];
        fds.extend([h.stdout, h.stderr, h.pty, h.stdin].into_iter().flatten());
        fds.extend(&h.clients);
        let mut result = Ok(());
        for fd in &fds {
            result = result.and(handover::inherit(*fd, true));
        }
        let e = match result {
            Ok(()) => std::process::Command::new(&slim).args(h.to_args()).exec(),
            Err(e) => e,
        };
        // Not handed over: nothing of ours may leak into the next runtime call.
        for fd in &fds {
            let _ = handover::inherit(*fd, false);
        }
        Err(std::io::Error::new(
            e.kind(),
            format!("exec {}: {e}", slim.display()),
        ))
    }

    /// The container is done: unmount, record the exit, `--rm`, tell clients,
    /// then delete the released veth pairs.
    fn finish(&mut self, code: i32, oom: bool, veths: &[String]) -> Result<()> {
        let (containers, id) = (self.containers, self.id);
        let paths = containers.paths(id);
        containers.unmount_rootfs(id);
        // A `--rm` container's record is removed right after: no need to wait for the disk.
        let durable = !containers.store.load(id).is_ok_and(|r| r.auto_remove);
        let record = containers.update_with(id, durable, |r| {
            r.state.status = Status::Exited;
            r.state.pid = 0;
            r.state.monitor_pid = 0;
            r.state.exit_code = code;
            r.state.oom_killed = oom;
            r.state.restarting = false;
            r.state.finished_at = Some(super::now());
        })?;
        let _ = std::fs::remove_file(&paths.attach_socket);
        // Remove before telling the client, so `berth run --rm` returns with the
        // container already gone.
        let removed = if record.auto_remove {
            containers.remove_files(&record, true)
        } else {
            Ok(())
        };
        broadcast(&mut self.clients, Kind::Exited, &exit_payload(code, oom));
        self.clients.clear();
        delete_veths(veths);
        removed
    }
}

/// The payload of an Exited frame: the exit code, then whether the OOM killer ended it.
fn exit_payload(code: i32, oom: bool) -> Vec<u8> {
    let mut payload = code.to_le_bytes().to_vec();
    payload.push(oom as u8);
    payload
}

/// How long a run may take to end before the monitor hands it to berth-monitor.
const HAND_OVER_GRACE: Duration = Duration::from_millis(10);

/// Whether the child `pid` exits within `grace` (checked every millisecond).
fn exited_within(pid: i32, grace: Duration) -> bool {
    let deadline = Instant::now() + grace;
    loop {
        if exited(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether the child `pid` has exited (it is left to be reaped).
fn exited(pid: i32) -> bool {
    // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with WNOWAIT only peeks, writing into a valid siginfo_t.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: si_pid reads the field waitid set (0 when the child still runs).
    r == 0 && unsafe { info.si_pid() } == pid
}

/// This berth binary (after an upgrade in place, the new file at its path).
fn berth_exe() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(
        match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(path) => PathBuf::from(path),
            None => exe,
        },
    )
}

/// Sleep `delay` before a restart; false as soon as a stop (or removal) of
/// the container is requested.
fn wait_unless_stopped(containers: &Containers, id: &str, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        match containers.store.load(id) {
            Ok(r) if !r.state.stop_requested && r.state.status == Status::Running => {}
            _ => return false,
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

/// A start that failed: record the error, undo the mount, tell attached clients.
fn fail(containers: &Containers, id: &str, err: &Error, clients: &mut Vec<Client>) {
    containers.detach_networks(id);
    containers.unmount_rootfs(id);
    let code = err.exit_code();
    let auto_remove = containers
        .update(id, |r| {
            r.state.status = if r.state.started_at.is_some() {
                Status::Exited
            } else {
                Status::Created
            };
            r.state.error = Some(err.to_string());
            r.state.restarting = false;
            r.state.starting = None;
            r.state.exit_code = code;
            r.state.pid = 0;
            r.state.monitor_pid = 0;
        })
        .map(|r| r.auto_remove)
        .unwrap_or(false);
    if auto_remove {
        if let Ok(record) = containers.store.load(id) {
            let _ = containers.remove_files(&record, true);
        }
    }
    let mut payload = code.to_le_bytes().to_vec();
    payload.extend_from_slice(err.to_string().as_bytes());
    broadcast(clients, Kind::Failed, &payload);
}
