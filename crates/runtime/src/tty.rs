//! Pseudo-terminals: creating one inside a container, and relaying it to the
//! runtime's own stdio for foreground runs.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::termios::{self, SetArg};

use crate::error::{Result, SysContext};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);
nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, Winsize);

/// A pty pair opened through the calling process's `/dev/ptmx`.
pub(crate) struct Pty {
    /// The master side, handed to the runtime.
    pub master: OwnedFd,
    /// The slave side, which becomes the process's stdio.
    pub slave: OwnedFd,
    /// Path of the slave, e.g. `/dev/pts/0`.
    pub slave_path: String,
}

/// Open a new pty through `/dev/ptmx` (inside the container this is its own
/// devpts instance) and size it.
pub(crate) fn open_pty(size: Option<(u16, u16)>) -> Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .ctx(|| "open /dev/ptmx".into())?;
    grantpt(&master).ctx(|| "grantpt".into())?;
    unlockpt(&master).ctx(|| "unlockpt".into())?;
    let slave_path = ptsname_r(&master).ctx(|| "ptsname".into())?;
    let slave = nix::fcntl::open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("open {slave_path}"))?;
    // SAFETY: posix_openpt returned a fresh descriptor; PtyMaster owns it and we take it over.
    let master = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    if let Some((height, width)) = size {
        let ws = Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a Winsize from the pointer, which is valid.
        unsafe { set_winsize(master.as_raw_fd(), &ws) }.ctx(|| "set terminal size".into())?;
    }
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

/// Make `slave` the calling process's controlling terminal and its stdin,
/// stdout and stderr. The caller must not be a process group leader.
pub(crate) fn make_controlling(slave: &OwnedFd) -> Result<()> {
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    // SAFETY: TIOCSCTTY takes an integer argument; 0 means "do not steal".
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(nix::Error::last()).ctx(|| "make the pty the controlling terminal".into());
    }
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; both fds are valid.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(nix::Error::last()).ctx(|| "dup2 pty onto stdio".into());
        }
    }
    Ok(())
}

/// Send a pty master to the `--console-socket` of a caller such as containerd.
pub(crate) fn send_to_console_socket(path: &Path, master: BorrowedFd<'_>) -> Result<()> {
    let stream = crate::socket::connect(path)
        .ctx(|| format!("connect to console socket {}", path.display()))?;
    crate::sync::send_fd(stream.as_raw_fd(), master)
}

static RELAY_MASTER: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_sigwinch(_: libc::c_int) {
    let master = RELAY_MASTER.load(Ordering::Relaxed);
    if master >= 0 {
        copy_winsize(master);
    }
}

fn copy_winsize(master: i32) {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: ioctls on valid descriptors with a valid Winsize pointer; failures are ignored.
    unsafe {
        if get_winsize(libc::STDIN_FILENO, &mut ws).is_ok() {
            let _ = set_winsize(master, &ws);
        }
    }
}

/// Relays a container's pty to this process's stdin/stdout while it runs.
pub(crate) struct Relay {
    saved: Option<termios::Termios>,
    output: std::sync::mpsc::Receiver<()>,
}

impl Relay {
    /// Start relaying: puts our stdin in raw mode when it is a terminal, copies
    /// stdin to the master and the master to stdout on background threads.
    pub(crate) fn start(master: OwnedFd) -> Result<Relay> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(orig) = &saved {
            let mut raw = orig.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
                .ctx(|| "put the terminal in raw mode".into())?;
            copy_winsize(master.as_raw_fd());
            RELAY_MASTER.store(master.as_raw_fd(), Ordering::Relaxed);
            let action = nix::sys::signal::SigAction::new(
                nix::sys::signal::SigHandler::Handler(on_sigwinch),
                nix::sys::signal::SaFlags::SA_RESTART,
                nix::sys::signal::SigSet::empty(),
            );
            // SAFETY: the handler only performs async-signal-safe ioctls.
            let _ =
                unsafe { nix::sys::signal::sigaction(nix::sys::signal::Signal::SIGWINCH, &action) };
        }
        let mut reader = std::fs::File::from(master.try_clone().ctx(|| "dup pty master".into())?);
        let mut writer = std::fs::File::from(master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut input = std::io::stdin().lock();
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || writer.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let (done, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut out = std::io::stdout();
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = out.flush();
            }
            let _ = done.send(());
        });
        Ok(Relay { saved, output })
    }

    /// After the process exited: let the output drain (briefly), restore the terminal.
    pub(crate) fn finish(self) {
        let _ = self.output.recv_timeout(Duration::from_secs(2));
        RELAY_MASTER.store(-1, Ordering::Relaxed);
        if let Some(orig) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, orig);
        }
    }
}
