//! The last steps before `execve`: limits, user, capabilities, no_new_privs,
//! seccomp, and finding the executable inside the container.

use std::collections::HashSet;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability as Cap, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, PosixRlimit, PosixRlimitType, Process};

use crate::error::{Error, Result, SysContext};
use crate::seccomp::CompiledFilter;

/// PATH used when the process's environment has none (as runc and Docker).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Find `args[0]` of `process` in the (already pivoted) root: a path with a
/// `/` is taken as is (relative to cwd), a bare name is looked up in PATH.
pub(crate) fn resolve_executable(process: &Process) -> Result<CString> {
    let name = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![process.cwd().join(&name)]
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(&name))
            .collect()
    };
    let mut not_runnable = None;
    for candidate in candidates {
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return CString::new(candidate.into_os_string().into_encoded_bytes())
                .map_err(|_| Error::CommandNotFound(name.clone()));
        }
        not_runnable.get_or_insert_with(|| {
            let reason = if meta.is_dir() {
                "is a directory"
            } else {
                "permission denied"
            };
            Error::CommandNotRunnable {
                path: candidate.display().to_string(),
                reason: reason.into(),
            }
        });
    }
    Err(not_runnable.unwrap_or(Error::CommandNotFound(name)))
}

/// Apply the spec's rlimits. Raising a hard limit needs CAP_SYS_RESOURCE;
/// a refused raise is reported with that hint.
pub(crate) fn apply_rlimits(rlimits: Option<&Vec<PosixRlimit>>) -> Result<()> {
    for rl in rlimits.into_iter().flatten() {
        let resource = rlimit_resource(rl.typ());
        let limit = libc::rlimit {
            rlim_cur: rl.soft(),
            rlim_max: rl.hard(),
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            let errno = nix::Error::last();
            let hint = if errno == nix::Error::EPERM {
                " (raising a hard limit needs CAP_SYS_RESOURCE, which this host does not grant)"
            } else {
                ""
            };
            return Err(Error::Init(format!(
                "set {:?} to soft={} hard={}: {errno}{hint}",
                rl.typ(),
                rl.soft(),
                rl.hard()
            )));
        }
    }
    Ok(())
}

fn rlimit_resource(typ: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    match typ {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn to_caps(set: Option<&Capabilities>) -> CapsHashSet {
    set.into_iter()
        .flatten()
        .filter_map(|c| format!("CAP_{c}").parse::<Cap>().ok())
        .collect()
}

/// Drop the bounding set down to `bounding` (needs CAP_SETPCAP, so before the user switch).
fn drop_bounding(bounding: &CapsHashSet) -> Result<()> {
    let supported = caps::runtime::thread_all_supported();
    for cap in supported.difference(bounding) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(|e| Error::Init(format!("drop {cap} from the bounding set: {e}")))?;
    }
    Ok(())
}

fn set_caps(process: &Process) -> Result<()> {
    let spec = process.capabilities().clone().unwrap_or_default();
    let fail = |what: &str, e: caps::errors::CapsError| {
        Error::Init(format!("set {what} capabilities: {e}"))
    };
    let permitted = to_caps(spec.permitted().as_ref());
    let effective = to_caps(spec.effective().as_ref());
    let inheritable = to_caps(spec.inheritable().as_ref());
    let ambient = to_caps(spec.ambient().as_ref());
    // Shrink effective first (it must stay within permitted), and set
    // inheritable while permitted still allows it.
    caps::set(None, CapSet::Effective, &effective).map_err(|e| fail("effective", e))?;
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(|e| fail("inheritable", e))?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(|e| fail("permitted", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| fail("ambient", e))?;
    for cap in ambient {
        caps::raise(None, CapSet::Ambient, cap).map_err(|e| fail("ambient", e))?;
    }
    Ok(())
}

fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(nix::Error::last()).ctx(|| "set no_new_privs".into());
    }
    Ok(())
}

/// Default dispositions and an empty mask for every signal, as runc gives the
/// container's process: an ignored signal or blocked mask survives exec, and ours
/// would otherwise pass on (Rust ignores SIGPIPE; a shell's background job starts
/// with SIGINT and SIGQUIT ignored, and then ^C could not stop a command in it).
/// glibc keeps signals 32 and 33 to itself and refuses to change them.
fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: installs the default disposition; no handler code runs.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// Become the spec's process: umask, seccomp, user and groups, capabilities,
/// no_new_privs, working directory, then `execve`. Only returns on failure.
///
/// Order follows runc: without no_new_privs, seccomp goes in while the
/// process still holds CAP_SYS_ADMIN; with it, as late as possible.
pub(crate) fn become_process(
    process: &Process,
    exe: &CString,
    seccomp: Option<&CompiledFilter>,
) -> Result<Infallible> {
    let user = process.user();
    let umask = user.umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    let nnp = process.no_new_privileges().unwrap_or(false);
    if !nnp {
        if let Some(filter) = seccomp {
            filter.install()?;
        }
    }
    let spec_caps = process.capabilities().clone().unwrap_or_default();
    let bounding: HashSet<Cap> = to_caps(spec_caps.bounding().as_ref());
    drop_bounding(&bounding)?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(nix::Error::last()).ctx(|| "set keepcaps".into());
    }
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).ctx(|| "setgroups".into())?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {gid}"))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {uid}"))?;
    set_caps(process)?;
    if nnp {
        set_no_new_privs()?;
        if let Some(filter) = seccomp {
            filter.install()?;
        }
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).ctx(|| format!("chdir to {}", cwd.display()))?;
    reset_signals();
    let args: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Init("process.args contains a NUL byte".into()))?;
    let env: Vec<CString> = process
        .env()
        .iter()
        .flatten()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Init("process.env contains a NUL byte".into()))?;
    let err = nix::unistd::execve(exe, &args, &env).unwrap_err();
    let path = exe.to_string_lossy().into_owned();
    Err(match err {
        nix::Error::ENOENT => Error::CommandNotFound(path),
        nix::Error::EACCES | nix::Error::ENOEXEC | nix::Error::EPERM => Error::CommandNotRunnable {
            path,
            reason: err.desc().to_string(),
        },
        other => Error::Sys {
            context: format!("exec {path}"),
            source: other,
        },
    })
}
