//! The child side of create and exec: what runs in the new process between
//! clone and `execve`.

use std::convert::Infallible;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{Process, Spec};

use crate::error::{Error, Result, SysContext};
use crate::seccomp::CompiledFilter;
use crate::sync::{Channel, Msg};
use crate::{process, rootfs, tty};

/// Everything the container's init needs, prepared by the runtime before clone.
pub(crate) struct InitArgs {
    /// The container's spec.
    pub spec: Spec,
    /// Absolute rootfs.
    pub rootfs: PathBuf,
    /// Absolute bundle dir.
    pub bundle: PathBuf,
    /// Namespaces to join (type, fd), pid excluded (the runtime joined it for us).
    pub join: Vec<(CloneFlags, OwnedFd)>,
    /// Namespaces to create with unshare (pid excluded: clone created it).
    pub unshare: CloneFlags,
    /// Compiled seccomp filter, if the spec has one.
    pub seccomp: Option<CompiledFilter>,
    /// Listener `start` connects to.
    pub start: UnixListener,
    /// Inherited descriptors 3..3+N to keep open in the container process.
    pub preserve_fds: u32,
}

/// Run the container's init. Never returns: it execs or exits.
pub(crate) fn init_main(args: InitArgs, mut channel: Channel) -> ! {
    make_undumpable();
    let err = match init(args, &mut channel) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = channel.send(&Msg::failed(&err));
    // SAFETY: _exit is always safe; no destructors should run in the child.
    unsafe { libc::_exit(err.exit_code()) }
}

fn wait_go(channel: &mut Channel) -> Result<()> {
    match channel.recv()? {
        Some(Msg::Go) => Ok(()),
        // The runtime went away: nothing to report to.
        None => Err(Error::Init("runtime exited during container setup".into())),
        Some(other) => Err(Error::Init(format!("unexpected message {other:?}"))),
    }
}

fn init(args: InitArgs, channel: &mut Channel) -> Result<Infallible> {
    // The runtime puts us in the cgroup first, so that a new cgroup namespace is rooted there.
    wait_go(channel)?;
    // Close (not only mark close-on-exec) what the caller's process had open: a
    // created container may wait for `start` for a long time, and must not hold the
    // caller's file locks meanwhile (nor after the caller died). The descriptors the
    // caller passes on (`--preserve-fds`, right after stderr) stay.
    let mut keep: Vec<RawFd> = args.join.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    keep.push(channel.raw_fd());
    keep.push(args.start.as_raw_fd());
    keep.extend((0..args.preserve_fds).filter_map(|i| RawFd::try_from(3 + i).ok()));
    close_inherited_fds(&mut keep);
    mark_inherited_fds_cloexec(args.preserve_fds);
    for (flag, fd) in &args.join {
        setns(fd.as_fd(), *flag).ctx(|| format!("join namespace {flag:?}"))?;
    }
    unshare(args.unshare).ctx(|| format!("create namespaces {:?}", args.unshare))?;
    let spec = &args.spec;
    let process = spec.process().clone().unwrap_or_default();
    if let Some(hostname) = spec.hostname() {
        if !hostname.is_empty() {
            nix::unistd::sethostname(hostname).ctx(|| format!("set hostname {hostname:?}"))?;
        }
    }
    if let Some(domain) = spec.domainname() {
        if !domain.is_empty() {
            // SAFETY: pointer and length of a live byte slice.
            let rc = unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) };
            if rc != 0 {
                return Err(nix::Error::last()).ctx(|| format!("set domainname {domain:?}"));
            }
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| format!("set oom_score_adj {adj}"))?;
    }
    if args.unshare.contains(CloneFlags::CLONE_NEWNS) || has_mount_join(&args.join) {
        rootfs::prepare(spec, &args.rootfs, &args.bundle)?;
        rootfs::pivot(&args.rootfs)?;
    } else {
        nix::unistd::chroot(&args.rootfs).ctx(|| "chroot (no mount namespace)".into())?;
        nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
    }
    let pty = open_terminal(&process)?;
    rootfs::finish(spec, pty.as_ref().map(|p| p.slave_path.as_str()))?;
    let cwd = process.cwd();
    if !cwd.as_os_str().is_empty() && !cwd.is_dir() {
        std::fs::create_dir_all(cwd).ctx(|| format!("create cwd {}", cwd.display()))?;
    }
    process::apply_rlimits(process.rlimits().as_ref())?;
    let exe = process::resolve_executable(&process)?;
    report_ready_and_take_terminal(channel, pty)?;
    // Wait for `start`.
    let (stream, _) = args.start.accept().ctx(|| "wait for start".into())?;
    drop(args.start);
    let mut start = Channel::from_stream(stream);
    wait_go(&mut start)?;
    match process::become_process(&process, &exe, args.seccomp.as_ref()) {
        Ok(never) => match never {},
        Err(e) => {
            let _ = start.send(&Msg::failed(&e));
            Err(e)
        }
    }
}

fn has_mount_join(join: &[(CloneFlags, OwnedFd)]) -> bool {
    join.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWNS)
}

/// A pty for the process if its spec asks for a terminal (opened through the
/// `/dev/ptmx` the process sees).
fn open_terminal(process: &Process) -> Result<Option<tty::Pty>> {
    if !process.terminal().unwrap_or(false) {
        return Ok(None);
    }
    let size = process
        .console_size()
        .map(|b| (b.height() as u16, b.width() as u16));
    tty::open_pty(size).map(Some)
}

/// Tell the runtime we are ready (handing over the pty master), then start a
/// new session, with the pty slave as controlling terminal and stdio if any.
fn report_ready_and_take_terminal(channel: &mut Channel, pty: Option<tty::Pty>) -> Result<()> {
    channel.send(&Msg::Ready { pty: pty.is_some() })?;
    match &pty {
        Some(p) => {
            channel.send_fd(p.master.as_fd())?;
            tty::make_controlling(&p.slave)
        }
        None => nix::unistd::setsid().map(drop).ctx(|| "setsid".into()),
    }
}

/// Close every descriptor from 3 up except those in `keep`.
fn close_inherited_fds(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut from: u32 = 3;
    for &k in keep.iter() {
        let Ok(k) = u32::try_from(k) else { continue };
        if k >= from {
            if k > from {
                close_range(from, k - 1);
            }
            from = k + 1;
        }
    }
    close_range(from, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: closes descriptors this process no longer uses; none is owned by a live
    // Rust object except those kept by the caller.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, last, 0u32);
    }
}

/// Until it execs, this process runs the berth binary inside the container's
/// namespaces: a process there must not reach it through `/proc/PID/exe`
/// and, once berth exits, write to it (CVE-2019-5736). A non-dumpable
/// process's `/proc/PID` links need CAP_SYS_PTRACE over the host's user
/// namespace, which a default container lacks; execve makes the container's
/// own program dumpable again.
fn make_undumpable() {
    // SAFETY: PR_SET_DUMPABLE takes an integer and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Descriptors the caller of the runtime leaked to us must not reach the
/// container process (runc's fd-leak advisories): mark 3 and up close-on-exec,
/// except the `preserve` descriptors right after stderr that the caller passes on.
fn mark_inherited_fds_cloexec(preserve: u32) {
    let first = 3u32.saturating_add(preserve);
    // The preserved ones may have been opened close-on-exec by the caller: clear the flag.
    for fd in 3..first {
        // SAFETY: fcntl on a descriptor number only changes its flags (or fails with EBADF).
        unsafe { libc::fcntl(fd as libc::c_int, libc::F_SETFD, 0) };
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Everything an exec'd process needs, prepared before clone.
pub(crate) struct ExecArgs {
    /// The process to run.
    pub process: Process,
    /// Namespaces of the container to join (pid excluded), mount last.
    pub join: Vec<(CloneFlags, OwnedFd)>,
    /// The container's seccomp filter.
    pub seccomp: Option<CompiledFilter>,
    /// Inherited descriptors 3..3+N to keep open in the process.
    pub preserve_fds: u32,
}

/// Run an exec'd process's setup. Never returns.
pub(crate) fn exec_main(args: ExecArgs, mut channel: Channel) -> ! {
    make_undumpable();
    let err = match exec_setup(args, &mut channel) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = channel.send(&Msg::failed(&err));
    // SAFETY: _exit is always safe.
    unsafe { libc::_exit(err.exit_code()) }
}

fn exec_setup(args: ExecArgs, channel: &mut Channel) -> Result<Infallible> {
    wait_go(channel)?;
    mark_inherited_fds_cloexec(args.preserve_fds);
    for (flag, fd) in &args.join {
        setns(fd.as_fd(), *flag).ctx(|| format!("join container namespace {flag:?}"))?;
    }
    nix::unistd::chdir("/").ctx(|| "chdir /".into())?;
    let process = args.process;
    let pty = open_terminal(&process)?;
    process::apply_rlimits(process.rlimits().as_ref())?;
    let exe = process::resolve_executable(&process)?;
    report_ready_and_take_terminal(channel, pty)?;
    process::become_process(&process, &exe, args.seccomp.as_ref())
}
