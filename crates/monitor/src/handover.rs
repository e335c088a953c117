//! The hand-over between `berth __monitor` and the slim `berth-monitor`
//! binary it execs into once its container runs. The process stays the same
//! (the parent and subreaper of the container's init); descriptors pass on
//! their numbers, named on the command line:
//!
//! ```text
//! berth-monitor __monitor ID --pid PID --log FD [--stdout FD] [--stderr FD]
//!     [--pty FD] [--stdin FD] --listener FD [--client FD]... -- BERTH ARGS...
//! ```
//!
//! When PID has exited and its output is drained, berth-monitor execs
//! `BERTH ARGS... --exit-code N --listener FD [--client FD]...`, handing the
//! attach listener and clients back for what follows an exit.

use std::ffi::{OsStr, OsString};
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;

use crate::json_log::LogWriter;
use crate::supervise::{adopt, supervise, Client, Stdio};

/// The file name of the slim binary, installed next to `berth`.
pub const BINARY: &str = "berth-monitor";

/// What `berth __monitor` hands to berth-monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The container's id (shown as `__monitor ID`, as berth's own monitor).
    pub id: String,
    /// The container's init, a child of this process.
    pub pid: i32,
    /// The log file (opened for appending).
    pub log: RawFd,
    /// The init's stdout pipe.
    pub stdout: Option<RawFd>,
    /// The init's stderr pipe.
    pub stderr: Option<RawFd>,
    /// The terminal's master side.
    pub pty: Option<RawFd>,
    /// The init's stdin pipe.
    pub stdin: Option<RawFd>,
    /// The attach socket's listener.
    pub listener: RawFd,
    /// Attach clients already accepted.
    pub clients: Vec<RawFd>,
    /// What to exec after the exit: the program, then its arguments.
    pub back: Vec<OsString>,
}

impl Handover {
    /// The command line (after the program name) that passes this hand-over.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec!["__monitor".into(), self.id.clone().into()];
        let mut push = |flag: &str, value: String| {
            out.push(flag.into());
            out.push(value.into());
        };
        push("--pid", self.pid.to_string());
        push("--log", self.log.to_string());
        for (flag, fd) in [
            ("--stdout", self.stdout),
            ("--stderr", self.stderr),
            ("--pty", self.pty),
            ("--stdin", self.stdin),
        ] {
            if let Some(fd) = fd {
                push(flag, fd.to_string());
            }
        }
        push("--listener", self.listener.to_string());
        for fd in &self.clients {
            push("--client", fd.to_string());
        }
        out.push("--".into());
        out.extend(self.back.iter().cloned());
        out
    }

    /// Parse [`Handover::to_args`]'s command line; the error is one line.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Handover, String> {
        let mut args = args.into_iter();
        if args.next().as_deref() != Some(OsStr::new("__monitor")) {
            return Err("usage: berth-monitor __monitor ID --pid PID --log FD ... -- BERTH ARGS... (started by berth, not by hand)".into());
        }
        let id = args
            .next()
            .and_then(|a| a.into_string().ok())
            .ok_or("missing container id")?;
        let mut h = Handover {
            id,
            pid: 0,
            log: -1,
            stdout: None,
            stderr: None,
            pty: None,
            stdin: None,
            listener: -1,
            clients: Vec::new(),
            back: Vec::new(),
        };
        while let Some(flag) = args.next() {
            if flag == "--" {
                h.back = args.collect();
                break;
            }
            let flag = flag.to_string_lossy().into_owned();
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number: i32 = value
                .to_str()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{flag}: {value:?} is not a number"))?;
            match flag.as_str() {
                "--pid" => h.pid = number,
                "--log" => h.log = number,
                "--stdout" => h.stdout = Some(number),
                "--stderr" => h.stderr = Some(number),
                "--pty" => h.pty = Some(number),
                "--stdin" => h.stdin = Some(number),
                "--listener" => h.listener = number,
                "--client" => h.clients.push(number),
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if h.pid <= 0 || h.log < 0 || h.listener < 0 || h.back.is_empty() {
            return Err("--pid, --log, --listener and `-- BERTH ARGS...` are required".into());
        }
        Ok(h)
    }
}

/// The arguments berth-monitor appends to [`Handover::back`].
pub fn back_args(exit_code: i32, listener: RawFd, clients: &[RawFd]) -> Vec<String> {
    let mut out = vec![
        "--exit-code".to_string(),
        exit_code.to_string(),
        "--listener".to_string(),
        listener.to_string(),
    ];
    for fd in clients {
        out.push("--client".into());
        out.push(fd.to_string());
    }
    out
}

/// Take over descriptors handed to this process on the command line: refuse
/// a list that names one twice, and make each one close on the next exec
/// (failing for one that is not open).
pub fn claim(fds: &[RawFd]) -> std::io::Result<()> {
    let mut distinct = fds.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != fds.len() {
        return Err(std::io::Error::other("a descriptor is named twice"));
    }
    for fd in fds {
        inherit(*fd, false).map_err(|e| std::io::Error::other(format!("descriptor {fd}: {e}")))?;
    }
    Ok(())
}

/// Mark `fd` inherited by the next exec (`keep`) or closed by it.
pub fn inherit(fd: RawFd, keep: bool) -> std::io::Result<()> {
    let flags = if keep { 0 } else { libc::FD_CLOEXEC };
    // SAFETY: F_SETFD takes an integer flag; a closed fd is reported as EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// berth-monitor's work: relay until the init has exited, then exec back.
/// Returns only on an error.
pub fn serve(h: Handover) -> std::io::Error {
    // Kept across execve already; set again so a hand-over can never lose it.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut fds = vec![h.log, h.listener];
    fds.extend([h.stdout, h.stderr, h.pty, h.stdin].into_iter().flatten());
    fds.extend(&h.clients);
    if let Err(e) = claim(&fds) {
        return e;
    }
    // SAFETY: the fds are open (checked above), distinct, and were handed to
    // this process for its sole use; each is taken once, here.
    let take = |fd: RawFd| unsafe { adopt(fd) };
    let mut log = LogWriter::from_file(take(h.log));
    let mut io = Stdio {
        stdout: h.stdout.map(take),
        stderr: h.stderr.map(take),
        pty: h.pty.map(take),
        stdin: h.stdin.map(take),
    };
    let listener = UnixListener::from(OwnedFd::from(take(h.listener)));
    if let Err(e) = listener.set_nonblocking(true) {
        return e;
    }
    let mut clients: Vec<Client> = h
        .clients
        .iter()
        .map(|fd| Client::new(UnixStream::from(OwnedFd::from(take(*fd)))))
        .collect();
    let code = match supervise(h.pid, &mut io, &listener, &mut clients, &mut log) {
        Ok(code) => code,
        Err(e) => return e,
    };
    let _ = log.flush();
    drop(io);
    drop(log);
    let listener = listener.into_raw_fd();
    let clients: Vec<RawFd> = clients
        .into_iter()
        .map(|c| c.stream.into_raw_fd())
        .collect();
    for fd in std::iter::once(&listener).chain(&clients) {
        if let Err(e) = inherit(*fd, true) {
            return e;
        }
    }
    let mut cmd = std::process::Command::new(&h.back[0]);
    cmd.args(&h.back[1..])
        .args(back_args(code, listener, &clients));
    let e = cmd.exec();
    std::io::Error::other(format!("exec {}: {e}", h.back[0].to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip_and_bad_ones_are_refused() {
        let h = Handover {
            id: "abc".into(),
            pid: 42,
            log: 5,
            stdout: Some(6),
            stderr: Some(7),
            pty: None,
            stdin: Some(8),
            listener: 9,
            clients: vec![10, 11],
            back: vec!["/usr/bin/berth".into(), "--root".into(), "/r".into()],
        };
        assert_eq!(Handover::parse(h.to_args()), Ok(h.clone()));
        let args = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(Handover::parse(args(&["__monitor"])).is_err());
        assert!(Handover::parse(args(&["x", "abc"])).is_err());
        let e = Handover::parse(args(&["__monitor", "abc", "--pid", "-3"])).unwrap_err();
        assert!(e.contains("--pid"), "{e}");
        let e = Handover::parse(args(&["__monitor", "abc", "--bogus", "1"])).unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
        let e =
            Handover::parse(args(&["__monitor", "abc", "--pid", "4", "--log", "3"])).unwrap_err();
        assert!(e.contains("required"), "{e}");
        assert_eq!(
            back_args(3, 4, &[5]),
            ["--exit-code", "3", "--listener", "4", "--client", "5"]
        );
    }
}
