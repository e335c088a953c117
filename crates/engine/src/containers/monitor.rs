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

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::attach::{write_frame, Decoder, Kind};
use super::logs::LogWriter;
use super::record::{ContainerRecord, Status};
use super::Containers;
use crate::error::{Error, Result};

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid byte.
        unsafe { libc::write(fd, b"c".as_ptr().cast(), 1) };
    }
}

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
    match run(&containers, id, wait_attach, &mut report) {
        Ok(()) => 0,
        Err(e) => {
            report.send(&format!("err {} {e}", e.exit_code()));
            eprintln!("berth monitor {id}: {e}");
            1
        }
    }
}

/// What a polled descriptor is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Signal,
    Listener,
    Stdout,
    Stderr,
    Pty,
    Client,
}

struct Client {
    stream: UnixStream,
    decoder: Decoder,
}

fn broadcast(clients: &mut Vec<Client>, kind: Kind, payload: &[u8]) {
    clients.retain_mut(|c| write_frame(&mut c.stream, kind, payload).is_ok());
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
    out_r: Option<File>,
    err_r: Option<File>,
    master: Option<File>,
    stdin_w: Option<File>,
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
        out_r: (!tty).then(|| File::from(stdout_r)),
        err_r: (!tty).then(|| File::from(stderr_r)),
        master: created.pty.map(File::from),
        stdin_w: (!tty && record.options.stdin_open).then(|| File::from(stdin_w)),
    })
}

/// Record a run that started: its pid and start time (a first start also
/// clears the restart count and a previous stop request).
fn mark_running(state: &mut super::record::State, pid: i32, first: bool) {
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
    if first {
        state.restart_count = 0;
        state.stop_requested = false;
    }
}

/// First delay before a restart; it doubles with each restart up to
/// [`BACKOFF_MAX`], and starts over after a run of [`BACKOFF_RESET`] (Docker's).
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(10);

fn run(containers: &Containers, id: &str, wait_attach: bool, report: &mut Report) -> Result<()> {
    let record = containers.store.load(id)?;
    let paths = containers.paths(id);
    std::fs::create_dir_all(&paths.run_dir)
        .map_err(Error::io(format!("create {}", paths.run_dir.display())))?;
    let _ = std::fs::remove_file(&paths.attach_socket);
    let listener = berth_runtime::socket::bind(&paths.attach_socket)
        .map_err(Error::io(format!("bind {}", paths.attach_socket.display())))?;
    let mut clients: Vec<Client> = Vec::new();
    if wait_attach {
        report.send("attach");
        listener
            .set_nonblocking(false)
            .map_err(Error::io("attach socket"))?;
        let (stream, _) = listener
            .accept()
            .map_err(Error::io("accept attach client"))?;
        clients.push(Client {
            stream,
            decoder: Decoder::default(),
        });
    }
    listener
        .set_nonblocking(true)
        .map_err(Error::io("attach socket"))?;

    let devnull = File::open("/dev/null").map_err(Error::io("open /dev/null"))?;
    let monitor_log = paths.dir.join("monitor.log");
    let bundle = match containers.prepare_start(&record) {
        Ok(b) => b,
        Err(e) => {
            fail(containers, id, &e, &mut clients);
            return Err(e);
        }
    };
    let mut current = match start_once(containers, id, &record, &bundle, &devnull, &monitor_log) {
        Ok(r) => r,
        Err(e) => {
            fail(containers, id, &e, &mut clients);
            return Err(e);
        }
    };
    let pid = current.pid;
    // Not fsynced: a pid means nothing after a reboot (reconciliation then finds
    // the container exited), and each fsync costs milliseconds on a run.
    containers.update_with(id, false, |r| mark_running(&mut r.state, pid, true))?;
    report.send(&format!("ok {pid}"));
    broadcast(&mut clients, Kind::Started, &pid.to_le_bytes());

    let (sig_r, sig_w) = pipe()?;
    SIGNAL_PIPE.store(sig_w.as_raw_fd(), Ordering::Relaxed);
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_sigchld),
        nix::sys::signal::SaFlags::SA_RESTART | nix::sys::signal::SaFlags::SA_NOCLDSTOP,
        nix::sys::signal::SigSet::empty(),
    );
    // SAFETY: the handler only writes one byte to a pipe.
    let _ = unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGCHLD, &action) };
    let mut log =
        LogWriter::open(&paths.log).map_err(Error::io(format!("open {}", paths.log.display())))?;
    let mut sig_r = File::from(sig_r);
    let mut backoff = BACKOFF_START;
    let (code, oom, veths) = loop {
        let started = Instant::now();
        let code = supervise(&mut current, &listener, &mut clients, &mut log, &mut sig_r)?;
        let _ = log.flush();
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
        let mut payload = code.to_le_bytes().to_vec();
        payload.push(oom as u8);
        broadcast(&mut clients, Kind::Exited, &payload);
        clients.clear();
        if started.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_START;
        }
        if !wait_unless_stopped(containers, id, backoff) {
            break (code, oom, Vec::new());
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        // Start again, same bundle, rootfs mount and log; under the lock
        // so that a stop cannot slip between the check and the start.
        let lock = containers.store.lock(id)?;
        let mut r = containers.store.load(id)?;
        if r.state.stop_requested || r.state.status != Status::Running {
            drop(lock);
            break (code, oom, Vec::new());
        }
        match start_once(containers, id, &r, &bundle, &devnull, &monitor_log) {
            Ok(next) => {
                current = next;
                mark_running(&mut r.state, current.pid, false);
                containers.store.save_volatile(&r)?;
            }
            Err(e) => {
                drop(lock);
                fail(containers, id, &e, &mut clients);
                return Err(e);
            }
        }
        drop(lock);
    };
    containers.unmount_rootfs(id);
    let mut payload = code.to_le_bytes().to_vec();
    payload.push(oom as u8);
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
    broadcast(&mut clients, Kind::Exited, &payload);
    drop(clients);
    delete_veths(&veths);
    removed
}

/// Delete the host ends of released veth pairs (see [`Containers::release_networks`]).
fn delete_veths(veths: &[String]) {
    for v in veths {
        let _ = berth_netns_bridge::delete_veth(v);
    }
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

/// Relay one run's output to the log and attached clients, and clients'
/// input to it, until its process has exited (and its output is drained);
/// returns the exit code (128+N for signal N).
fn supervise(
    run: &mut Run,
    listener: &std::os::unix::net::UnixListener,
    clients: &mut Vec<Client>,
    log: &mut LogWriter,
    sig_r: &mut File,
) -> Result<i32> {
    let pid = run.pid;
    let mut exit_code: Option<i32> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // Reap: the init, and orphans we inherited as subreaper.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => exit_code = Some(code),
                Ok(WaitStatus::Signaled(p, sig, _)) if p.as_raw() == pid => {
                    exit_code = Some(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if exit_code.is_some() && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + Duration::from_millis(500));
        }
        let outputs_open = run.out_r.is_some() || run.err_r.is_some() || run.master.is_some();
        if let Some(code) = exit_code {
            if !outputs_open || drain_deadline.is_some_and(|d| Instant::now() > d) {
                return Ok(code);
            }
        }
        let mut fds: Vec<PollFd> = Vec::new();
        let mut roles: Vec<Role> = Vec::new();
        fds.push(PollFd::new(sig_r.as_fd(), PollFlags::POLLIN));
        roles.push(Role::Signal);
        fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
        roles.push(Role::Listener);
        if let Some(f) = &run.out_r {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Stdout);
        }
        if let Some(f) = &run.err_r {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Stderr);
        }
        if let Some(f) = &run.master {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Pty);
        }
        for c in clients.iter() {
            fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            roles.push(Role::Client);
        }
        let timeout = if exit_code.is_some() {
            PollTimeout::from(50u16)
        } else {
            PollTimeout::from(1000u16)
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(Error::Invalid(format!("poll: {e}"))),
        }
        let ready: Vec<(Role, bool)> = fds
            .iter()
            .zip(&roles)
            .map(|(f, r)| (*r, f.revents().is_some_and(|e| !e.is_empty())))
            .collect();
        drop(fds);
        let mut client_index = 0;
        let mut dead_clients = Vec::new();
        for (role, is_ready) in ready {
            if role == Role::Client {
                client_index += 1;
            }
            if !is_ready {
                continue;
            }
            match role {
                Role::Signal => {
                    let _ = sig_r.read(&mut buf);
                }
                Role::Listener => {
                    while let Ok((stream, _)) = listener.accept() {
                        let _ = stream.set_nonblocking(false);
                        clients.push(Client {
                            stream,
                            decoder: Decoder::default(),
                        });
                    }
                }
                Role::Stdout | Role::Stderr | Role::Pty => {
                    let (reader, stream, kind) = match role {
                        Role::Stdout => (run.out_r.as_mut(), 0, Kind::Stdout),
                        Role::Stderr => (run.err_r.as_mut(), 1, Kind::Stderr),
                        _ => (run.master.as_mut(), 0, Kind::Stdout),
                    };
                    let n = reader
                        .map(|r| r.read(&mut buf))
                        .unwrap_or(Ok(0))
                        .unwrap_or(0);
                    if n == 0 {
                        match role {
                            Role::Stdout => run.out_r = None,
                            Role::Stderr => run.err_r = None,
                            _ => run.master = None,
                        }
                    } else {
                        let _ = log.write(stream, &buf[..n]);
                        broadcast(clients, kind, &buf[..n]);
                    }
                }
                Role::Client => {
                    let i = client_index - 1;
                    let Some(client) = clients.get_mut(i) else {
                        continue;
                    };
                    let n = client.stream.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        dead_clients.push(i);
                        continue;
                    }
                    client.decoder.push(&buf[..n]);
                    while let Ok(Some((kind, payload))) = client.decoder.next_frame() {
                        match kind {
                            Kind::Stdin => {
                                if let Some(m) = &mut run.master {
                                    let _ = m.write_all(&payload);
                                } else if let Some(w) = &mut run.stdin_w {
                                    let _ = w.write_all(&payload);
                                }
                            }
                            Kind::CloseStdin => run.stdin_w = None,
                            Kind::Resize if payload.len() == 4 => {
                                if let Some(m) = &run.master {
                                    set_winsize(
                                        m,
                                        u16::from_le_bytes([payload[0], payload[1]]),
                                        u16::from_le_bytes([payload[2], payload[3]]),
                                    );
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        for i in dead_clients.into_iter().rev() {
            clients.remove(i);
        }
    }
}

fn set_winsize(master: &File, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize struct.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
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
