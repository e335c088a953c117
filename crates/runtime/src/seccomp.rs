//! Seccomp support: compiling OCI seccomp profiles into classic BPF and installing them.
//!
//! An OCI profile (`linux.seccomp` in `config.json`) has one default action plus any number of
//! per-syscall rules, each with its own action. `seccompiler` builds filters that have a single
//! match action and a single mismatch action, so a profile is compiled into several BPF programs
//! that are installed one after the other on the same thread:
//!
//! * on x86_64 only, a small guard program that makes x32-ABI syscall numbers
//!   (`nr | 0x4000_0000`) fail with `ENOSYS`, so that rules keyed on native numbers cannot be
//!   bypassed through the x32 entry points (it is omitted when nothing else is installed);
//! * one program per distinct non-allow rule action (match: that action, mismatch: allow);
//! * when `defaultAction` is not `SCMP_ACT_ALLOW`, a "default" program whose mismatch action
//!   is the default action and which allows every syscall named by any rule (with that rule's
//!   argument conditions), so it never overrides an explicit action.
//!
//! The kernel runs every installed filter and applies the most restrictive result (between two
//! results of the same kind, the most recently installed filter's). Because the default program
//! allows every call that matches a rule and a rule program only acts on calls it matches, no
//! two programs return different non-allow results for the same call (short of conflicting
//! rules in the profile), so their order does not change the combined result. The order only
//! matters for installation itself: every program must let the following `seccomp(2)` calls
//! through. Hence the guard comes first, then the programs that cannot refuse `seccomp`, and
//! last the ones that might (the default program unless the profile allows `seccomp`
//! unconditionally, and a rule program that names `seccomp`). A profile in which two rule
//! programs with different actions both name `seccomp` cannot be installed.
//!
//! Semantics and limitations, matching runc/libseccomp where it matters:
//! * syscall names unknown on the target architecture are skipped silently;
//! * `architectures` is ignored: filters only accept the native ABI of the target
//!   architecture, and a syscall made through another ABI (for example i386 `int 0x80` on
//!   x86_64) kills the process;
//! * several `args` in one rule are ANDed (also when they test the same argument), several
//!   rules for one syscall are ORed; arguments are compared as 64-bit values;
//!   `SCMP_CMP_MASKED_EQ` uses `value` as the mask and `valueTwo` as the expected value;
//! * a rule whose action equals the default action is redundant and skipped, as runc does;
//! * `SCMP_ACT_NOTIFY` (and therefore `listenerPath`/`listenerMetadata`) is not supported;
//! * `flags` is ignored: filters are installed with flags 0 on the calling thread only.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Errors compiling or installing a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile uses an action berth cannot implement (currently only `SCMP_ACT_NOTIFY`).
    #[error("unsupported seccomp action {0}")]
    UnsupportedAction(LinuxSeccompAction),
    /// The target (or host) architecture has no syscall table or no BPF backend.
    #[error("unsupported seccomp architecture {0}")]
    UnsupportedArch(String),
    /// `errnoRet`/`defaultErrnoRet` was given for an action that carries no return value.
    #[error("errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not with {0}")]
    ErrnoRetNotAllowed(LinuxSeccompAction),
    /// An errno value does not fit in the 16-bit `SECCOMP_RET_DATA` field.
    #[error("seccomp errno value {0} is out of range (maximum 65535)")]
    InvalidErrno(u32),
    /// A rule compares a syscall argument index above 5.
    #[error("seccomp rule for {syscall}: argument index {index} is out of range (maximum 5)")]
    InvalidArgIndex {
        /// Name of the syscall whose rule is invalid.
        syscall: String,
        /// The offending argument index.
        index: usize,
    },
    /// `seccompiler` rejected a filter (for example because it is too large).
    #[error("compiling seccomp filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
    /// The `seccomp(2)` syscall failed for the program at `index`.
    #[error("installing seccomp filter {index}: {source}")]
    Install {
        /// Position of the program that failed, in installation order.
        index: usize,
        /// The OS error (`EACCES` without no_new_privs and CAP_SYS_ADMIN, `EINVAL`, ...).
        #[source]
        source: std::io::Error,
    },
}

/// A compiled profile: one or more BPF programs to install in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledFilter {
    programs: Vec<BpfProgram>,
}

impl CompiledFilter {
    /// The BPF programs, in installation order.
    pub fn programs(&self) -> &[BpfProgram] {
        &self.programs
    }

    /// Install every program on the calling thread with the seccomp(2) syscall
    /// (`SECCOMP_SET_MODE_FILTER`, flags 0).
    ///
    /// This does not set no_new_privs: the kernel only accepts the filters if the caller either
    /// has set `PR_SET_NO_NEW_PRIVS` or holds `CAP_SYS_ADMIN` in its user namespace (otherwise
    /// the error is `EACCES`). The function performs no heap allocation, so it is safe to call
    /// in a child after `fork()`. Filters are inherited across `fork`/`clone`/`execve` and can
    /// never be removed. An empty filter (profile that allows everything) installs nothing.
    pub fn install(&self) -> Result<(), SeccompError> {
        for (index, program) in self.programs.iter().enumerate() {
            let len = u16::try_from(program.len()).map_err(|_| SeccompError::Install {
                index,
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
            let prog = SockFprog {
                len,
                filter: program.as_ptr(),
            };
            // SAFETY: `prog` points to `len` valid, initialised `sock_filter` instructions
            // (`seccompiler::sock_filter` is `#[repr(C)]` with the kernel's layout) that outlive
            // the call; the kernel copies the program and does not keep the pointer.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0 as libc::c_ulong,
                    &prog as *const SockFprog,
                )
            };
            if rc != 0 {
                return Err(SeccompError::Install {
                    index,
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }
}

/// Kernel `struct sock_fprog`, pointing at `seccompiler`'s instruction type.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// Compile an OCI seccomp profile for the running host's architecture.
pub fn compile(profile: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    let arch = native_arch()
        .ok_or_else(|| SeccompError::UnsupportedArch(std::env::consts::ARCH.to_string()))?;
    compile_for(profile, arch)
}

/// Same as [`compile`], for a named target architecture (x86_64 or aarch64).
pub fn compile_for(
    profile: &LinuxSeccomp,
    arch: TargetArch,
) -> Result<CompiledFilter, SeccompError> {
    if native_arch() != Some(arch) && foreign_table(arch).is_none() {
        return Err(SeccompError::UnsupportedArch(format!("{arch:?}")));
    }
    let default_action = convert_action(profile.default_action(), profile.default_errno_ret())?;

    // Every syscall named by an effective rule, for the default program.
    let mut named: BTreeMap<i64, RuleSet> = BTreeMap::new();
    // One rule map per distinct non-allow action, in order of first appearance.
    let mut specific: Vec<(SeccompAction, BTreeMap<i64, RuleSet>)> = Vec::new();

    for syscall in profile.syscalls().iter().flatten() {
        let action = convert_action(syscall.action(), syscall.errno_ret())?;
        if action == default_action {
            continue;
        }
        let rule = convert_args(syscall)?;
        let mut target = None;
        if action != SeccompAction::Allow {
            let pos = match specific.iter().position(|(a, _)| *a == action) {
                Some(pos) => pos,
                None => {
                    specific.push((action, BTreeMap::new()));
                    specific.len() - 1
                }
            };
            target = Some(pos);
        }
        for name in syscall.names() {
            let Some(nr) = syscall_number(arch, name) else {
                continue;
            };
            merge(&mut named, nr, &rule);
            if let Some(pos) = target {
                merge(&mut specific[pos].1, nr, &rule);
            }
        }
    }

    // Each program must let the later `seccomp(2)` calls through, so programs that may refuse
    // `seccomp` itself go last. The default program and the rule programs never both return a
    // non-allow result for the same call (a syscall matching a rule is allowed by the default
    // program), so their relative order does not change the combined result.
    let seccomp_nr = syscall_number(arch, "seccomp");
    let mut harmless = Vec::new();
    let mut blocking = Vec::new();
    for (action, rules) in specific {
        if rules.is_empty() {
            continue;
        }
        let blocks = seccomp_nr.is_some_and(|nr| rules.contains_key(&nr));
        let program = build(rules, SeccompAction::Allow, action, arch)?;
        if blocks {
            blocking.push(program);
        } else {
            harmless.push(program);
        }
    }
    if default_action != SeccompAction::Allow {
        let blocks = !seccomp_nr.is_some_and(|nr| matches!(named.get(&nr), Some(RuleSet::Always)));
        let program = build(named, default_action, SeccompAction::Allow, arch)?;
        if blocks {
            blocking.insert(0, program);
        } else {
            harmless.push(program);
        }
    }
    let mut programs = harmless;
    programs.append(&mut blocking);
    if arch == TargetArch::x86_64 && !programs.is_empty() {
        programs.insert(0, x32_guard());
    }
    Ok(CompiledFilter { programs })
}

/// Rules collected for one syscall: either unconditional, or any of several AND-ed rules.
#[derive(Clone)]
enum RuleSet {
    Always,
    Any(Vec<SeccompRule>),
}

fn merge(map: &mut BTreeMap<i64, RuleSet>, nr: i64, rule: &Option<SeccompRule>) {
    match (map.get_mut(&nr), rule) {
        (Some(RuleSet::Always), _) => {}
        (Some(entry), None) => *entry = RuleSet::Always,
        (Some(RuleSet::Any(rules)), Some(rule)) => rules.push(rule.clone()),
        (None, None) => {
            map.insert(nr, RuleSet::Always);
        }
        (None, Some(rule)) => {
            map.insert(nr, RuleSet::Any(vec![rule.clone()]));
        }
    }
}

fn build(
    rules: BTreeMap<i64, RuleSet>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, SeccompError> {
    // In seccompiler 0.5 an empty rule vector means "match on the syscall number alone".
    let rules = rules
        .into_iter()
        .map(|(nr, set)| match set {
            RuleSet::Always => (nr, Vec::new()),
            RuleSet::Any(rules) => (nr, rules),
        })
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, matched, arch)?;
    Ok(BpfProgram::try_from(filter)?)
}

fn convert_action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
) -> Result<SeccompAction, SeccompError> {
    let ret = |fallback: u32| -> Result<u32, SeccompError> {
        let value = errno_ret.unwrap_or(fallback);
        if value > u32::from(u16::MAX) {
            return Err(SeccompError::InvalidErrno(value));
        }
        Ok(value)
    };
    let no_ret = |a: SeccompAction| -> Result<SeccompAction, SeccompError> {
        match errno_ret {
            Some(_) => Err(SeccompError::ErrnoRetNotAllowed(action)),
            None => Ok(a),
        }
    };
    match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            no_ret(SeccompAction::KillThread)
        }
        LinuxSeccompAction::ScmpActKillProcess => no_ret(SeccompAction::KillProcess),
        LinuxSeccompAction::ScmpActTrap => no_ret(SeccompAction::Trap),
        LinuxSeccompAction::ScmpActErrno => Ok(SeccompAction::Errno(ret(EPERM)?)),
        LinuxSeccompAction::ScmpActTrace => Ok(SeccompAction::Trace(ret(0)?)),
        LinuxSeccompAction::ScmpActLog => no_ret(SeccompAction::Log),
        LinuxSeccompAction::ScmpActAllow => no_ret(SeccompAction::Allow),
        LinuxSeccompAction::ScmpActNotify => Err(SeccompError::UnsupportedAction(action)),
    }
}

const EPERM: u32 = libc::EPERM as u32;

/// Converts a rule's `args` into one AND-ed rule; `None` means unconditional.
fn convert_args(syscall: &LinuxSyscall) -> Result<Option<SeccompRule>, SeccompError> {
    let args = match syscall.args() {
        Some(args) if !args.is_empty() => args,
        _ => return Ok(None),
    };
    let conditions = args
        .iter()
        .map(|arg| convert_arg(syscall, arg))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(SeccompRule::new(conditions)?))
}

fn convert_arg(
    syscall: &LinuxSyscall,
    arg: &LinuxSeccompArg,
) -> Result<SeccompCondition, SeccompError> {
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| SeccompError::InvalidArgIndex {
            syscall: syscall.names().join(","),
            index: arg.index(),
        })?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            SeccompCmpOp::MaskedEq(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(SeccompCondition::new(
        index,
        SeccompCmpArgLen::Qword,
        op,
        value,
    )?)
}

/// Guard for x86_64: x32-ABI syscall numbers get `ENOSYS`, everything else is allowed here
/// (the architecture itself is checked by every other program).
fn x32_guard() -> BpfProgram {
    // BPF_LD | BPF_W | BPF_ABS
    const LD_W_ABS: u16 = 0x20;
    const JMP_JEQ_K: u16 = 0x05 | 0x10;
    const JMP_JGE_K: u16 = 0x05 | 0x30;
    const RET_K: u16 = 0x06;
    const ARCH_OFFSET: u32 = 4;
    const NR_OFFSET: u32 = 0;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code: u16, jt: u8, jf: u8, k: u32| sock_filter { code, jt, jf, k };
    vec![
        ins(LD_W_ABS, 0, 0, ARCH_OFFSET),
        ins(JMP_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        ins(LD_W_ABS, 0, 0, NR_OFFSET),
        ins(JMP_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        ins(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

fn native_arch() -> Option<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH).ok()
}

/// Resolves a libseccomp syscall name for `arch`; `None` if the arch has no such syscall.
fn syscall_number(arch: TargetArch, name: &str) -> Option<i64> {
    lookup(arch, name).or_else(|| {
        // libseccomp and the kernel's generic table disagree on this one name.
        let alias = match name {
            "newfstatat" => "fstatat",
            "fstatat" => "newfstatat",
            _ => return None,
        };
        lookup(arch, alias)
    })
}

fn lookup(arch: TargetArch, name: &str) -> Option<i64> {
    if native_arch() == Some(arch) {
        return name
            .parse::<syscalls::Sysno>()
            .ok()
            .map(|sysno| i64::from(sysno.id()));
    }
    let table = foreign_table(arch)?;
    table.iter().find_map(|(base, names)| {
        names
            .split_whitespace()
            .position(|n| n == name)
            .and_then(|pos| i64::try_from(pos).ok())
            .map(|pos| base + pos)
    })
}

/// Embedded name tables for architectures other than the host's (the `syscalls` crate only
/// provides the host table without its per-arch cargo features).
fn foreign_table(arch: TargetArch) -> Option<&'static [(i64, &'static str)]> {
    match arch {
        #[cfg(not(target_arch = "x86_64"))]
        TargetArch::x86_64 => Some(X86_64_TABLE),
        #[cfg(not(target_arch = "aarch64"))]
        TargetArch::aarch64 => Some(AARCH64_TABLE),
        _ => None,
    }
}

/// Syscalls the default profile denies with `EPERM` whatever their arguments.
const DEFAULT_DENIED: &[&str] = &[
    // namespaces and mounts
    "unshare",
    "setns",
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "mount_setattr",
    "sethostname",
    "setdomainname",
    // kernel keyring
    "keyctl",
    "add_key",
    "request_key",
    // kernel, modules, boot, swap, accounting
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "nfsservctl",
    "_sysctl",
    "sysfs",
    "ustat",
    "uselib",
    "vm86",
    "vm86old",
    "vhangup",
    "iopl",
    "ioperm",
    // tracing / introspection of other processes and of the kernel
    "bpf",
    "perf_event_open",
    "fanotify_init",
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    // clock
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    // NUMA policy (CAP_SYS_NICE in Docker)
    "get_mempolicy",
    "set_mempolicy",
    "set_mempolicy_home_node",
    "mbind",
    "migrate_pages",
    "move_pages",
    // io_uring bypasses seccomp for the operations it performs
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // unimplemented x86_64 entry points
    "afs_syscall",
    "tuxcall",
    "security",
    "getpmsg",
    "putpmsg",
    "vserver",
];

/// Namespace flags that `clone(2)` may not use under the default profile.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// `personality(2)` values allowed by the default profile, as in Docker: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, `PER_LINUX32 | UNAME26` and the query value `0xffffffff`.
const ALLOWED_PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_VSOCK`, which Docker's profile forbids for `socket(2)`.
const AF_VSOCK: u64 = 40;

/// berth's built-in default profile, equivalent in effect to Docker's default profile for
/// a container without extra capabilities.
///
/// Design choice: this is a **denylist** (`defaultAction` `SCMP_ACT_ALLOW`) rather than
/// Docker's allowlist (`defaultAction` `SCMP_ACT_ERRNO`). Every syscall that Docker's default
/// profile refuses to a container with the default capability set is refused here with `EPERM`:
/// namespace and mount syscalls (`unshare`, `setns`, `mount`, `umount2`, `pivot_root`, the new
/// mount API `fsopen`...`mount_setattr`), `sethostname`/`setdomainname`, the keyring, module
/// loading, `kexec_*`, `reboot`, swap, `acct`, `syslog`, `quotactl`, `bpf`,
/// `perf_event_open`, `fanotify_init`, `kcmp`, `pidfd_getfd`, `process_madvise`,
/// `userfaultfd`, `open_by_handle_at`, `name_to_handle_at`, clock setting, NUMA policy,
/// `io_uring_*`, `iopl`/`ioperm`, `vhangup` and obsolete syscalls (`uselib`, `ustat`, `sysfs`,
/// `_sysctl`, `vm86`...). In addition `clone` with any of
/// `CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP` gets `EPERM`, `clone3` gets
/// `ENOSYS` (so libc falls back to `clone`, whose flags can be inspected), `personality` with a
/// persona other than `0`, `0x8`, `0x20000`, `0x20008` or `0xffffffff` gets `EPERM`, and
/// `socket(AF_VSOCK, ...)` gets `EPERM`. Everything else is allowed.
///
/// Differences from Docker's allowlist: syscalls newer than Docker's list are allowed rather
/// than refused, and the profile is static (Docker re-allows e.g. `mount` when `CAP_SYS_ADMIN`
/// is added; callers granting such capabilities should adapt or drop the profile). The same
/// list is used for every architecture; names that do not exist on one are skipped at compile
/// time.
pub fn default_profile() -> LinuxSeccomp {
    let mut syscalls = vec![rule(DEFAULT_DENIED, LinuxSeccompAction::ScmpActErrno, None)];

    let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno, None);
    clone3.set_errno_ret(Some(libc::ENOSYS as u32));
    syscalls.push(clone3);

    // One rule per flag: rules are ORed, the arguments within a rule are ANDed.
    for flag in NAMESPACE_FLAGS {
        let arg = seccomp_arg(0, *flag, Some(*flag), LinuxSeccompOperator::ScmpCmpMaskedEq);
        syscalls.push(rule(
            &["clone"],
            LinuxSeccompAction::ScmpActErrno,
            Some(vec![arg]),
        ));
    }

    let personas = ALLOWED_PERSONAS
        .iter()
        .map(|p| seccomp_arg(0, *p, None, LinuxSeccompOperator::ScmpCmpNe))
        .collect();
    syscalls.push(rule(
        &["personality"],
        LinuxSeccompAction::ScmpActErrno,
        Some(personas),
    ));

    let vsock = seccomp_arg(0, AF_VSOCK, None, LinuxSeccompOperator::ScmpCmpEq);
    syscalls.push(rule(
        &["socket"],
        LinuxSeccompAction::ScmpActErrno,
        Some(vec![vsock]),
    ));

    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    profile.set_syscalls(Some(syscalls));
    profile
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    args: Option<Vec<LinuxSeccompArg>>,
) -> LinuxSyscall {
    let mut syscall = LinuxSyscall::default();
    syscall.set_names(names.iter().map(|n| (*n).to_string()).collect());
    syscall.set_action(action);
    syscall.set_args(args);
    syscall
}

fn seccomp_arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    let builder = match value_two {
        Some(value_two) => builder.value_two(value_two),
        None => builder,
    };
    // `LinuxSeccompArg` has no setters; its builder is declared with `#[builder(default)]`, so
    // every field falls back to `Default` and `build()` cannot fail.
    builder
        .build()
        .expect("LinuxSeccompArgBuilder with struct-level defaults is infallible")
}

/// Syscall numbers for `aarch64`, generated from `syscalls` 0.8.1 (`src/arch/aarch64.rs`).
/// Each entry is `(first number, space-separated consecutive names)`.
#[cfg(not(target_arch = "aarch64"))]
const AARCH64_TABLE: &[(i64, &str)] = &[
    (
        0,
        "io_setup io_destroy io_submit io_cancel io_getevents setxattr lsetxattr fsetxattr \
         getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr removexattr \
         lremovexattr fremovexattr getcwd lookup_dcookie eventfd2 epoll_create1 epoll_ctl \
         epoll_pwait dup dup3 fcntl inotify_init1 inotify_add_watch inotify_rm_watch ioctl \
         ioprio_set ioprio_get flock mknodat mkdirat unlinkat symlinkat linkat renameat \
         umount2 mount pivot_root nfsservctl statfs fstatfs truncate ftruncate fallocate \
         faccessat chdir fchdir chroot fchmod fchmodat fchownat fchown openat close vhangup \
         pipe2 quotactl getdents64 lseek read write readv writev pread64 pwrite64 preadv \
         pwritev sendfile pselect6 ppoll signalfd4 vmsplice splice tee readlinkat fstatat \
         fstat sync fsync fdatasync sync_file_range timerfd_create timerfd_settime \
         timerfd_gettime utimensat acct capget capset personality exit exit_group waitid \
         set_tid_address unshare futex set_robust_list get_robust_list nanosleep getitimer \
         setitimer kexec_load init_module delete_module timer_create timer_gettime \
         timer_getoverrun timer_settime timer_delete clock_settime clock_gettime clock_getres \
         clock_nanosleep syslog ptrace sched_setparam sched_setscheduler sched_getscheduler \
         sched_getparam sched_setaffinity sched_getaffinity sched_yield \
         sched_get_priority_max sched_get_priority_min sched_rr_get_interval restart_syscall \
         kill tkill tgkill sigaltstack rt_sigsuspend rt_sigaction rt_sigprocmask \
         rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigreturn setpriority getpriority \
         reboot setregid setgid setreuid setuid setresuid getresuid setresgid getresgid \
         setfsuid setfsgid times setpgid getpgid getsid setsid getgroups setgroups uname \
         sethostname setdomainname getrlimit setrlimit getrusage umask prctl getcpu \
         gettimeofday settimeofday adjtimex getpid getppid getuid geteuid getgid getegid \
         gettid sysinfo mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify \
         mq_getsetattr msgget msgctl msgrcv msgsnd semget semctl semtimedop semop shmget \
         shmctl shmat shmdt socket socketpair bind listen accept connect getsockname \
         getpeername sendto recvfrom setsockopt getsockopt shutdown sendmsg recvmsg readahead \
         brk munmap mremap add_key request_key keyctl clone execve mmap fadvise64 swapon \
         swapoff mprotect msync mlock munlock mlockall munlockall mincore madvise \
         remap_file_pages mbind get_mempolicy set_mempolicy migrate_pages move_pages \
         rt_tgsigqueueinfo perf_event_open accept4 recvmmsg",
    ),
    (
        260,
        "wait4 prlimit64 fanotify_init fanotify_mark name_to_handle_at open_by_handle_at \
         clock_adjtime syncfs setns sendmmsg process_vm_readv process_vm_writev kcmp \
         finit_module sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create \
         bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2 pwritev2 \
         pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq kexec_file_load",
    ),
    (
        403,
        "clock_gettime64 clock_settime64 clock_adjtime64 clock_getres_time64 \
         clock_nanosleep_time64 timer_gettime64 timer_settime64 timerfd_gettime64 \
         timerfd_settime64 utimensat_time64 pselect6_time64 ppoll_time64",
    ),
    (
        416,
        "io_pgetevents_time64 recvmmsg_time64 mq_timedsend_time64 mq_timedreceive_time64 \
         semtimedop_time64 rt_sigtimedwait_time64 futex_time64 sched_rr_get_interval_time64 \
         pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree \
         move_mount fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2 \
         pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd \
         landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret \
         process_mrelease futex_waitv set_mempolicy_home_node cachestat fchmodat2 \
         map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount \
         lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat \
         listxattrat removexattrat open_tree_attr file_getattr file_setattr",
    ),
];

/// Syscall numbers for `x86_64`, generated from `syscalls` 0.8.1 (`src/arch/x86_64.rs`).
/// Each entry is `(first number, space-separated consecutive names)`.
#[cfg(not(target_arch = "x86_64"))]
const X86_64_TABLE: &[(i64, &str)] = &[
    (
        0,
        "read write open close stat fstat lstat poll lseek mmap mprotect munmap brk \
         rt_sigaction rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access \
         pipe select sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2 \
         pause nanosleep getitimer alarm setitimer getpid sendfile socket connect accept \
         sendto recvfrom sendmsg recvmsg shutdown bind listen getsockname getpeername \
         socketpair setsockopt getsockopt clone fork vfork execve exit wait4 kill uname \
         semget semop semctl shmdt msgget msgsnd msgrcv msgctl fcntl flock fsync fdatasync \
         truncate ftruncate getdents getcwd chdir fchdir rename mkdir rmdir creat link unlink \
         symlink readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit \
         getrusage sysinfo times ptrace getuid syslog getgid setuid setgid geteuid getegid \
         setpgid getppid getpgrp setsid setreuid setregid getgroups setgroups setresuid \
         getresuid setresgid getresgid getpgid setfsuid setfsgid getsid capget capset \
         rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack utime mknod \
         uselib personality ustat statfs fstatfs sysfs getpriority setpriority sched_setparam \
         sched_getparam sched_setscheduler sched_getscheduler sched_get_priority_max \
         sched_get_priority_min sched_rr_get_interval mlock munlock mlockall munlockall \
         vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex setrlimit chroot \
         sync acct settimeofday mount umount2 swapon swapoff reboot sethostname setdomainname \
         iopl ioperm create_module init_module delete_module get_kernel_syms query_module \
         quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid readahead \
         setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr \
         flistxattr removexattr lremovexattr fremovexattr tkill time futex sched_setaffinity \
         sched_getaffinity set_thread_area io_setup io_destroy io_getevents io_submit \
         io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old epoll_wait_old \
         remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64 \
         timer_create timer_settime timer_gettime timer_getoverrun timer_delete clock_settime \
         clock_gettime clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill \
         utimes vserver mbind set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend \
         mq_timedreceive mq_notify mq_getsetattr kexec_load waitid add_key request_key keyctl \
         ioprio_set ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages \
         openat mkdirat mknodat fchownat futimesat newfstatat unlinkat renameat linkat \
         symlinkat readlinkat fchmodat faccessat pselect6 ppoll unshare set_robust_list \
         get_robust_list splice tee sync_file_range vmsplice move_pages utimensat epoll_pwait \
         signalfd timerfd_create eventfd fallocate timerfd_settime timerfd_gettime accept4 \
         signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev \
         rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init fanotify_mark prlimit64 \
         name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns getcpu \
         process_vm_readv process_vm_writev kcmp finit_module sched_setattr sched_getattr \
         renameat2 seccomp getrandom memfd_create kexec_file_load bpf execveat userfaultfd \
         membarrier mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc \
         pkey_free statx io_pgetevents rseq uretprobe uprobe",
    ),
    (
        424,
        "pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree \
         move_mount fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2 \
         pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd \
         landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret \
         process_mrelease futex_waitv set_mempolicy_home_node cachestat fchmodat2 \
         map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount \
         lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat \
         listxattrat removexattrat open_tree_attr file_getattr file_setattr",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    const ARCHES: [TargetArch; 2] = [TargetArch::x86_64, TargetArch::aarch64];

    /// An allowlist profile (ERRNO(EPERM) by default) that lacks `getcwd` but allows what the
    /// forked test child needs, with conditional rules and a rule with its own errno.
    fn allowlist_profile() -> LinuxSeccomp {
        let json = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            "syscalls": [
                {
                    "names": ["read", "write", "openat", "open", "close", "getpid", "gettid",
                              "exit", "exit_group", "brk", "mmap", "munmap", "mprotect",
                              "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "futex",
                              "sigaltstack", "madvise", "fstat", "newfstatat", "statx",
                              "no_such_syscall_anywhere"],
                    "action": "SCMP_ACT_ALLOW"
                },
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"}]
                },
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_LE"},
                             {"index": 0, "value": 4, "op": "SCMP_CMP_GT"}]
                },
                {
                    "names": ["getppid"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 2
                },
                {
                    "names": ["getuid"],
                    "action": "SCMP_ACT_ERRNO"
                }
            ]
        }"#;
        match serde_json::from_str(json) {
            Ok(profile) => profile,
            Err(e) => panic!("test profile does not parse: {e}"),
        }
    }

    /// Default ALLOW; `openat` with `O_CREAT` in its flags fails with `EXDEV`.
    fn masked_eq_profile() -> LinuxSeccomp {
        let creat = libc::O_CREAT as u64;
        let arg = seccomp_arg(2, creat, Some(creat), LinuxSeccompOperator::ScmpCmpMaskedEq);
        let mut syscall = rule(
            &["openat"],
            LinuxSeccompAction::ScmpActErrno,
            Some(vec![arg]),
        );
        syscall.set_errno_ret(Some(libc::EXDEV as u32));
        let mut profile = LinuxSeccomp::default();
        profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
        profile.set_syscalls(Some(vec![syscall]));
        profile
    }

    fn compiled(profile: &LinuxSeccomp, arch: TargetArch) -> CompiledFilter {
        match compile_for(profile, arch) {
            Ok(filter) => filter,
            Err(e) => panic!("compile_for({arch:?}) failed: {e}"),
        }
    }

    #[test]
    fn syscall_tables() {
        let x = TargetArch::x86_64;
        let a = TargetArch::aarch64;
        assert_eq!(syscall_number(x, "read"), Some(0));
        assert_eq!(syscall_number(x, "unshare"), Some(272));
        assert_eq!(syscall_number(x, "newfstatat"), Some(262));
        assert_eq!(syscall_number(x, "clone3"), Some(435));
        assert_eq!(syscall_number(x, "open"), Some(2));
        assert_eq!(syscall_number(a, "io_setup"), Some(0));
        assert_eq!(syscall_number(a, "getcwd"), Some(17));
        assert_eq!(syscall_number(a, "mount"), Some(40));
        assert_eq!(syscall_number(a, "newfstatat"), Some(79));
        assert_eq!(syscall_number(a, "unshare"), Some(97));
        assert_eq!(syscall_number(a, "keyctl"), Some(219));
        assert_eq!(syscall_number(a, "clone"), Some(220));
        assert_eq!(syscall_number(a, "clone3"), Some(435));
        assert_eq!(syscall_number(a, "open"), None);
        assert_eq!(syscall_number(x, "no_such_syscall"), None);
        assert!(
            compile_for(&default_profile(), TargetArch::riscv64).is_err()
                || native_arch() == Some(TargetArch::riscv64)
        );
    }

    #[test]
    fn compile_default_profile_both_arches() {
        for arch in ARCHES {
            let filter = compiled(&default_profile(), arch);
            // x86_64: x32 guard + ERRNO(EPERM) rules + ERRNO(ENOSYS) for clone3.
            let expected = if arch == TargetArch::x86_64 { 3 } else { 2 };
            assert_eq!(filter.programs().len(), expected, "{arch:?}");
            assert!(filter
                .programs()
                .iter()
                .all(|p| !p.is_empty() && p.len() < 4096));
        }
    }

    #[test]
    fn compile_allowlist_profile_both_arches() {
        for arch in ARCHES {
            let filter = compiled(&allowlist_profile(), arch);
            // default program + one program for ERRNO(ENOENT); the getuid rule has the same
            // action as the default and is skipped.
            let expected = if arch == TargetArch::x86_64 { 3 } else { 2 };
            assert_eq!(filter.programs().len(), expected, "{arch:?}");
        }
    }

    #[test]
    fn allow_everything_compiles_to_nothing() {
        let mut profile = LinuxSeccomp::default();
        profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
        for arch in ARCHES {
            assert!(compiled(&profile, arch).programs().is_empty());
        }
    }

    #[test]
    fn duplicate_and_unconditional_rules_merge() {
        let mut profile = allowlist_profile();
        let mut syscalls = profile.syscalls().clone().unwrap_or_default();
        // An unconditional ALLOW for personality absorbs the conditional ones.
        syscalls.push(rule(
            &["personality"],
            LinuxSeccompAction::ScmpActAllow,
            None,
        ));
        profile.set_syscalls(Some(syscalls));
        let mut named = BTreeMap::new();
        let cond = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 1)
            .and_then(|c| SeccompRule::new(vec![c]))
            .ok();
        merge(&mut named, 1, &cond);
        merge(&mut named, 1, &cond);
        assert!(matches!(named.get(&1), Some(RuleSet::Any(r)) if r.len() == 2));
        merge(&mut named, 1, &None);
        merge(&mut named, 1, &cond);
        assert!(matches!(named.get(&1), Some(RuleSet::Always)));
        for arch in ARCHES {
            compiled(&profile, arch);
        }
    }

    #[test]
    fn notify_is_rejected() {
        let mut as_default = LinuxSeccomp::default();
        as_default.set_default_action(LinuxSeccompAction::ScmpActNotify);
        let mut as_rule = default_profile();
        let mut syscalls = as_rule.syscalls().clone().unwrap_or_default();
        syscalls.push(rule(&["getpid"], LinuxSeccompAction::ScmpActNotify, None));
        as_rule.set_syscalls(Some(syscalls));
        for arch in ARCHES {
            for profile in [&as_default, &as_rule] {
                match compile_for(profile, arch) {
                    Err(e @ SeccompError::UnsupportedAction(LinuxSeccompAction::ScmpActNotify)) => {
                        assert!(e.to_string().contains("SCMP_ACT_NOTIFY"), "{e}");
                    }
                    other => panic!("expected UnsupportedAction, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn invalid_profiles_are_rejected() {
        let mut bad_index = default_profile();
        let arg = seccomp_arg(6, 0, None, LinuxSeccompOperator::ScmpCmpEq);
        bad_index.set_syscalls(Some(vec![rule(
            &["read"],
            LinuxSeccompAction::ScmpActErrno,
            Some(vec![arg]),
        )]));
        assert!(matches!(
            compile_for(&bad_index, TargetArch::x86_64),
            Err(SeccompError::InvalidArgIndex { index: 6, .. })
        ));

        let mut bad_ret = LinuxSeccomp::default();
        bad_ret.set_default_action(LinuxSeccompAction::ScmpActKillProcess);
        bad_ret.set_default_errno_ret(Some(1));
        assert!(matches!(
            compile_for(&bad_ret, TargetArch::aarch64),
            Err(SeccompError::ErrnoRetNotAllowed(_))
        ));

        let mut big_errno = LinuxSeccomp::default();
        big_errno.set_default_action(LinuxSeccompAction::ScmpActErrno);
        big_errno.set_default_errno_ret(Some(0x1_0000));
        assert!(matches!(
            compile_for(&big_errno, TargetArch::x86_64),
            Err(SeccompError::InvalidErrno(0x1_0000))
        ));
    }

    #[test]
    fn action_mapping() {
        use LinuxSeccompAction as A;
        assert_eq!(
            convert_action(A::ScmpActKill, None).ok(),
            Some(SeccompAction::KillThread)
        );
        assert_eq!(
            convert_action(A::ScmpActKillThread, None).ok(),
            Some(SeccompAction::KillThread)
        );
        assert_eq!(
            convert_action(A::ScmpActKillProcess, None).ok(),
            Some(SeccompAction::KillProcess)
        );
        assert_eq!(
            convert_action(A::ScmpActTrap, None).ok(),
            Some(SeccompAction::Trap)
        );
        assert_eq!(
            convert_action(A::ScmpActErrno, None).ok(),
            Some(SeccompAction::Errno(1))
        );
        assert_eq!(
            convert_action(A::ScmpActErrno, Some(38)).ok(),
            Some(SeccompAction::Errno(38))
        );
        assert_eq!(
            convert_action(A::ScmpActTrace, None).ok(),
            Some(SeccompAction::Trace(0))
        );
        assert_eq!(
            convert_action(A::ScmpActLog, None).ok(),
            Some(SeccompAction::Log)
        );
        assert_eq!(
            convert_action(A::ScmpActAllow, None).ok(),
            Some(SeccompAction::Allow)
        );
    }

    // ---- behavioural tests: run in a forked child, report through the exit code ----

    /// Forks; the child sets no_new_privs, installs `filter` and exits with `check()`'s
    /// result (0 = success). Only async-signal-safe work happens in the child.
    fn run_in_child(filter: &CompiledFilter, check: fn() -> i32) -> i32 {
        // SAFETY: the child only performs raw syscalls (prctl, seccomp, the checks) and
        // `_exit`s without returning into the test harness or allocating.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: plain prctl call with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let code = if rc != 0 {
                100
            } else if filter.install().is_err() {
                101
            } else {
                check()
            };
            // SAFETY: terminates the forked child immediately, without running destructors
            // or atexit handlers that belong to the parent.
            unsafe { libc::_exit(code) }
        }
        let mut status = 0;
        // SAFETY: `pid` is our child and `status` is a valid out-pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(
            libc::WIFEXITED(status),
            "child did not exit normally (status {status:#x})"
        );
        libc::WEXITSTATUS(status)
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Returns true if `rc` is -1 with `errno == expected`.
    fn failed_with(rc: libc::c_long, expected: i32) -> bool {
        rc == -1 && errno() == expected
    }

    /// Opens /dev/null, writes, reads, closes; returns false on any failure.
    fn basic_io_works() -> bool {
        // SAFETY: valid NUL-terminated path; the fd is closed below.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), libc::O_RDWR) };
        if fd < 0 {
            return false;
        }
        let mut buf = [0u8; 4];
        // SAFETY: `buf` is valid for reads and writes of its length; `fd` is open.
        let ok = unsafe {
            libc::write(fd, buf.as_ptr().cast(), buf.len()) == 4
                && libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) == 0
        };
        // SAFETY: `fd` is an fd we own.
        unsafe { libc::close(fd) == 0 && ok }
    }

    extern "C" fn thread_body(_: *mut libc::c_void) -> *mut libc::c_void {
        std::ptr::null_mut()
    }

    fn default_profile_checks() -> i32 {
        // SAFETY: raw syscalls with valid arguments; paths are NUL-terminated
        // literals and out-buffers live on the stack. Calls that would have side effects if the
        // filter failed are made harmless (mount onto a nonexistent path, clone children exit).
        unsafe {
            if !failed_with(libc::unshare(libc::CLONE_NEWNET).into(), libc::EPERM) {
                return 10;
            }
            if !failed_with(libc::unshare(libc::CLONE_NEWNS).into(), libc::EPERM) {
                return 11;
            }
            let rc = libc::mount(
                c"none".as_ptr(),
                c"/nonexistent-berth-seccomp-test".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            );
            if !failed_with(rc.into(), libc::EPERM) {
                return 12;
            }
            let rc = libc::syscall(libc::SYS_keyctl, 0, libc::c_long::from(-3), 0);
            if !failed_with(rc, libc::EPERM) {
                return 13;
            }
            let rc = libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                0,
                0,
                0,
                0,
            );
            if rc == 0 {
                libc::_exit(0);
            }
            if !failed_with(rc, libc::EPERM) {
                return 14;
            }
            let rc = libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0);
            if !failed_with(rc, libc::ENOSYS) {
                return 15;
            }
            if !failed_with(libc::personality(0x0040000).into(), libc::EPERM) {
                return 16;
            }
            if libc::personality(0xffff_ffff) == -1 {
                return 17;
            }
            if !failed_with(libc::setns(0, 0).into(), libc::EPERM) {
                return 18;
            }
            if !failed_with(
                libc::umount2(c"/".as_ptr(), libc::MNT_DETACH).into(),
                libc::EPERM,
            ) {
                return 19;
            }
            if libc::getpid() <= 0 {
                return 20;
            }
            if !basic_io_works() {
                return 21;
            }
            // fork still works (glibc uses clone without namespace flags)
            let child = libc::fork();
            if child == 0 {
                libc::_exit(7);
            }
            let mut status = 0;
            if child < 0
                || libc::waitpid(child, &mut status, 0) != child
                || !libc::WIFEXITED(status)
                || libc::WEXITSTATUS(status) != 7
            {
                return 22;
            }
            // threads still work (glibc falls back from clone3 to clone)
            let mut thread: libc::pthread_t = 0;
            if libc::pthread_create(
                &mut thread,
                std::ptr::null(),
                thread_body,
                std::ptr::null_mut(),
            ) != 0
                || libc::pthread_join(thread, std::ptr::null_mut()) != 0
            {
                return 23;
            }
            let mut buf = [0 as libc::c_char; 256];
            if libc::getcwd(buf.as_mut_ptr(), buf.len()).is_null() {
                return 24;
            }
            // x32-ABI entry points are refused by the guard program
            #[cfg(target_arch = "x86_64")]
            if !failed_with(libc::syscall(0x4000_0000 | libc::SYS_getpid), libc::ENOSYS) {
                return 25;
            }
        }
        0
    }

    fn native_compiled(profile: &LinuxSeccomp) -> CompiledFilter {
        match compile(profile) {
            Ok(filter) => filter,
            Err(e) => panic!("compile failed: {e}"),
        }
    }

    #[test]
    fn default_profile_behaviour() {
        let filter = native_compiled(&default_profile());
        assert_eq!(run_in_child(&filter, default_profile_checks), 0);
    }

    #[test]
    fn checks_detect_a_missing_filter() {
        let nothing = CompiledFilter {
            programs: Vec::new(),
        };
        assert_ne!(run_in_child(&nothing, default_profile_checks), 0);
        assert_ne!(run_in_child(&nothing, allowlist_checks), 0);
        assert_ne!(run_in_child(&nothing, masked_eq_checks), 0);
    }

    fn allowlist_checks() -> i32 {
        // SAFETY: raw syscalls with valid stack buffers.
        unsafe {
            let mut buf = [0 as libc::c_char; 256];
            if !libc::getcwd(buf.as_mut_ptr(), buf.len()).is_null() || errno() != libc::EPERM {
                return 30;
            }
            if libc::getpid() <= 0 {
                return 31;
            }
            if !basic_io_works() {
                return 32;
            }
            // rule with its own errno wins over the default ERRNO(EPERM)
            if !failed_with(libc::syscall(libc::SYS_getppid), libc::ENOENT) {
                return 33;
            }
            // rule whose action equals the default
            if !failed_with(libc::syscall(libc::SYS_getuid), libc::EPERM) {
                return 34;
            }
            // conditional allows: == 0xffffffff, or 4 < x <= 8
            if libc::personality(0xffff_ffff) == -1 {
                return 35;
            }
            if !failed_with(libc::personality(0).into(), libc::EPERM) {
                return 36;
            }
            if !failed_with(libc::personality(4).into(), libc::EPERM) {
                return 37;
            }
            if !failed_with(libc::personality(9).into(), libc::EPERM) {
                return 38;
            }
            // PER_LINUX32 (8) is allowed by the range rule; restore PER_LINUX afterwards is
            // not possible (0 is denied), which is fine in a throwaway child.
            if libc::personality(8) == -1 {
                return 39;
            }
            if !failed_with(libc::unshare(libc::CLONE_NEWNET).into(), libc::EPERM) {
                return 40;
            }
        }
        0
    }

    #[test]
    fn allowlist_profile_behaviour() {
        let filter = native_compiled(&allowlist_profile());
        assert_eq!(run_in_child(&filter, allowlist_checks), 0);
    }

    fn masked_eq_checks() -> i32 {
        let path = c"/dev/null".as_ptr();
        // SAFETY: valid NUL-terminated path; fds are closed.
        unsafe {
            let fd = libc::openat(libc::AT_FDCWD, path, libc::O_RDONLY);
            if fd < 0 {
                return 50;
            }
            libc::close(fd);
            let fd = libc::openat(libc::AT_FDCWD, path, libc::O_WRONLY | libc::O_CREAT, 0o644);
            if !failed_with(fd.into(), libc::EXDEV) {
                return 51;
            }
            let fd = libc::openat(libc::AT_FDCWD, path, libc::O_WRONLY | libc::O_TRUNC);
            if fd < 0 {
                return 52;
            }
            libc::close(fd);
        }
        0
    }

    #[test]
    fn masked_eq_behaviour() {
        let filter = native_compiled(&masked_eq_profile());
        assert_eq!(run_in_child(&filter, masked_eq_checks), 0);
    }
}
