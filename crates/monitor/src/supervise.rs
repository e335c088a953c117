//! The steady state of a monitor: relay one run's output to the log and to
//! attached clients, and clients' input to it, until its process has exited.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::attach::{write_frame, Decoder, Kind};
use crate::json_log::LogWriter;

/// How long output is still read after the process exited (a child that
/// inherited its stdout may keep the pipe open).
const DRAIN: Duration = Duration::from_millis(500);

/// An attached client: its socket and what it sent that is not yet a frame.
pub struct Client {
    /// The connection (blocking: a slow client slows the relay, as Docker's).
    pub stream: UnixStream,
    decoder: Decoder,
}

impl Client {
    /// A client on `stream`.
    pub fn new(stream: UnixStream) -> Client {
        let _ = stream.set_nonblocking(false);
        Client {
            stream,
            decoder: Decoder::default(),
        }
    }
}

/// Send a frame to every client; those that fail are dropped.
pub fn broadcast(clients: &mut Vec<Client>, kind: Kind, payload: &[u8]) {
    clients.retain_mut(|c| write_frame(&mut c.stream, kind, payload).is_ok());
}

/// The descriptors of one run of the container's process.
#[derive(Default)]
pub struct Stdio {
    /// Its stdout pipe (no terminal).
    pub stdout: Option<File>,
    /// Its stderr pipe (no terminal).
    pub stderr: Option<File>,
    /// The terminal's master side (with `-t`): output and input.
    pub pty: Option<File>,
    /// Its stdin pipe (with `-i` and no terminal).
    pub stdin: Option<File>,
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigchld(_: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid byte.
        unsafe { libc::write(fd, b"c".as_ptr().cast(), 1) };
    }
}

/// The read end of a pipe that gets a byte on each SIGCHLD (set up once).
fn sigchld_pipe() -> std::io::Result<RawFd> {
    static READ_END: AtomicI32 = AtomicI32::new(-1);
    let fd = READ_END.load(Ordering::Relaxed);
    if fd >= 0 {
        return Ok(fd);
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
    // SAFETY: a zeroed sigaction with our handler and an empty mask is valid.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigchld as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
    }
    READ_END.store(fds[0], Ordering::Relaxed);
    Ok(fds[0])
}

/// Reap every exited child (the init and orphans we inherited as
/// subreaper); the exit code of `pid` (128+N for signal N) if it was one.
fn reap(pid: i32) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid int.
        let p = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if p <= 0 {
            return code;
        }
        if p == pid {
            if libc::WIFEXITED(status) {
                code = Some(libc::WEXITSTATUS(status));
            } else if libc::WIFSIGNALED(status) {
                code = Some(128 + libc::WTERMSIG(status));
            }
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
    Client(usize),
}

/// Relay the output of the process `pid` (a child of this process) to `log`
/// and attached clients, and clients' input to it, accepting new clients on
/// `listener` (non-blocking), until it has exited and its output is drained;
/// returns its exit code (128+N for signal N).
pub fn supervise(
    pid: i32,
    io: &mut Stdio,
    listener: &UnixListener,
    clients: &mut Vec<Client>,
    log: &mut LogWriter,
) -> std::io::Result<i32> {
    let signal_fd = sigchld_pipe()?;
    let mut exit_code: Option<i32> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 32 * 1024];
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut roles: Vec<Role> = Vec::new();
    loop {
        if let Some(code) = reap(pid) {
            exit_code = Some(code);
        }
        if exit_code.is_some() && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + DRAIN);
        }
        let outputs_open = io.stdout.is_some() || io.stderr.is_some() || io.pty.is_some();
        if let Some(code) = exit_code {
            if !outputs_open || drain_deadline.is_some_and(|d| Instant::now() > d) {
                return Ok(code);
            }
        }
        fds.clear();
        roles.clear();
        let mut watch = |fd: RawFd, role: Role| {
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            roles.push(role);
        };
        watch(signal_fd, Role::Signal);
        watch(listener.as_raw_fd(), Role::Listener);
        for (f, role) in [
            (&io.stdout, Role::Stdout),
            (&io.stderr, Role::Stderr),
            (&io.pty, Role::Pty),
        ] {
            if let Some(f) = f {
                watch(f.as_raw_fd(), role);
            }
        }
        for (i, c) in clients.iter().enumerate() {
            watch(c.stream.as_raw_fd(), Role::Client(i));
        }
        let timeout = if exit_code.is_some() { 50 } else { 1000 };
        // SAFETY: fds is a valid array of fds.len() pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        let mut dead_clients = Vec::new();
        for (pfd, role) in fds.iter().zip(&roles) {
            if pfd.revents == 0 {
                continue;
            }
            match *role {
                Role::Signal => {
                    // SAFETY: the non-blocking pipe end stays open; reads into buf.
                    unsafe { libc::read(signal_fd, buf.as_mut_ptr().cast(), buf.len()) };
                }
                Role::Listener => {
                    while let Ok((stream, _)) = listener.accept() {
                        clients.push(Client::new(stream));
                    }
                }
                Role::Stdout | Role::Stderr | Role::Pty => {
                    let (slot, stream, kind) = match role {
                        Role::Stdout => (&mut io.stdout, 0, Kind::Stdout),
                        Role::Stderr => (&mut io.stderr, 1, Kind::Stderr),
                        _ => (&mut io.pty, 0, Kind::Stdout),
                    };
                    let n = slot
                        .as_mut()
                        .map(|r| r.read(&mut buf))
                        .unwrap_or(Ok(0))
                        .unwrap_or(0);
                    if n == 0 {
                        *slot = None;
                    } else {
                        let _ = log.write(stream, &buf[..n]);
                        broadcast(clients, kind, &buf[..n]);
                    }
                }
                Role::Client(i) => {
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
                                if let Some(m) = &mut io.pty {
                                    let _ = m.write_all(&payload);
                                } else if let Some(w) = &mut io.stdin {
                                    let _ = w.write_all(&payload);
                                }
                            }
                            Kind::CloseStdin => io.stdin = None,
                            Kind::Resize if payload.len() == 4 => {
                                if let Some(m) = &io.pty {
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
        // Last first; a broadcast may have dropped clients meanwhile.
        for i in dead_clients.into_iter().rev() {
            if i < clients.len() {
                clients.remove(i);
            }
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

/// Take ownership of an inherited descriptor as a `File`, marking it close-on-exec.
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub unsafe fn adopt(fd: RawFd) -> File {
    // SAFETY: F_SETFD on a descriptor the caller vouches for.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the caller hands us the only owner of an open fd.
    unsafe { File::from_raw_fd(fd) }
}
