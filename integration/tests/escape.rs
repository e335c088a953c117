//! The escape checklist: each test runs something inside a default
//! `berth run` busybox container and asserts one line of defence holds. The
//! raw system calls come from a tiny static probe (integration/probe),
//! bind-mounted read-only at /probe. `privileged_lifts_*` shows which items
//! `--privileged` gives up, so every check here is seen to be able to fail.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use berth_integration::{berth_bin, privileged, text, Engine};

/// The directory holding the probe binary, compiled once per test process
/// with plain `rustc`.
fn probe_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("probe/escape_probe.rs");
        // Under the target dir, so nothing piles up in TMPDIR; built under a
        // name of this process's own and renamed, so a suite running at the
        // same time never sees a half-written probe.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/escape-probe");
        std::fs::create_dir_all(&dir).expect("probe dir");
        let tmp = dir.join(format!(".probe.{}", std::process::id()));
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let out = std::process::Command::new(rustc)
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
                "-o",
            ])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("run rustc");
        assert!(out.status.success(), "build probe: {}", text(&out.stderr));
        std::fs::rename(&tmp, dir.join("probe")).expect("install probe");
        dir
    })
}

/// `berth run --rm [FLAGS] -v PROBE:/probe:ro bb ARGS...`; stdout, asserting exit 0.
fn run_in(e: &Engine, flags: &[&str], args: &[&str]) -> String {
    let vol = format!("{}:/probe:ro", probe_dir().display());
    let mut all = vec!["run", "--rm", "-v", &vol];
    all.extend_from_slice(flags);
    all.push("bb");
    all.extend_from_slice(args);
    e.ok(&all)
}

/// `NAME: RESULT` lines of the probe, as a map.
fn probe(e: &Engine, flags: &[&str], args: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut all = vec!["/probe/probe"];
    all.extend_from_slice(args);
    run_in(e, flags, &all)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn status_field(e: &Engine, flags: &[&str], field: &str) -> String {
    let out = run_in(
        e,
        flags,
        &["grep", &format!("^{field}:"), "/proc/self/status"],
    );
    out.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

const CAP_SYS_ADMIN: u32 = 21;

#[test]
fn no_cap_sys_admin() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let eff = u64::from_str_radix(&status_field(&e, &[], "CapEff"), 16).unwrap();
    assert_eq!(
        eff & (1 << CAP_SYS_ADMIN),
        0,
        "CapEff {eff:x} has CAP_SYS_ADMIN"
    );
    // Docker's default set, nothing more.
    assert_eq!(eff, 0xa80425fb, "CapEff {eff:x}");
    let bnd = u64::from_str_radix(&status_field(&e, &[], "CapBnd"), 16).unwrap();
    assert_eq!(bnd & (1 << CAP_SYS_ADMIN), 0, "CapBnd {bnd:x}");
}

#[test]
fn seccomp_mode_2() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    assert_eq!(status_field(&e, &[], "Seccomp"), "2");
}

/// Writes back the value just read, so that a failure of this check changes nothing.
const PROC_SYS_WRITE: &str = "f=/proc/sys/kernel/printk_ratelimit; v=$(cat $f) && \
     if echo $v > $f; then echo written; else echo refused; fi; \
     if touch /proc/sys/kernel/probe 2>/dev/null; then echo created; fi";

#[test]
fn proc_sys_is_read_only() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = run_in(&e, &[], &["sh", "-c", PROC_SYS_WRITE]);
    assert_eq!(out.trim(), "refused", "{out}");
    let mounts = run_in(&e, &[], &["grep", " /proc/sys ", "/proc/mounts"]);
    assert!(
        mounts.contains(" ro,") || mounts.contains(" ro "),
        "{mounts}"
    );
}

const SYS_WRITE: &str = "f=/sys/module/printk/parameters/time; v=$(cat $f) && \
     if echo $v > $f; then echo written; else echo refused; fi; \
     if mkdir /sys/fs/probe 2>/dev/null; then echo created; fi";

#[test]
fn sys_is_read_only() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = run_in(&e, &[], &["sh", "-c", SYS_WRITE]);
    assert_eq!(out.trim(), "refused", "{out}");
    let mounts = run_in(&e, &[], &["grep", " /sys sysfs ", "/proc/mounts"]);
    assert!(mounts.contains(" ro,"), "{mounts}");
}

/// Masked files read as empty (a /dev/null bind), masked directories as empty.
const MASKED: &str = "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug /proc/latency_stats; do \
       [ -e $f ] && echo \"$f $(head -c 64 $f | wc -c)\"; done; \
     for d in /proc/acpi /proc/scsi /sys/firmware; do [ -d $d ] && echo \"$d $(ls -A $d | wc -l)\"; done; true";

#[test]
fn proc_kcore_and_friends_are_masked() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = run_in(&e, &[], &["sh", "-c", MASKED]);
    // Which of these exist depends on the kernel's configuration.
    assert!(out.lines().count() >= 2, "{out}");
    for line in out.lines() {
        assert!(line.ends_with(" 0"), "not masked: {line}");
    }
}

#[test]
fn no_host_devices() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = run_in(&e, &[], &["ls", "/dev"]);
    let devs: Vec<&str> = out.split_whitespace().collect();
    for d in &devs {
        assert!(
            [
                "console", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
                "stderr", "stdin", "stdout", "tty", "urandom", "zero"
            ]
            .contains(d),
            "unexpected device /dev/{d} in {devs:?}"
        );
    }
    // CAP_MKNOD is in the default set, as in Docker; the device cgroup refuses
    // the open (EPERM: where no sda exists, an open let through is ENXIO).
    let r = probe(&e, &[], &["mknod-open"]);
    assert_eq!(r["mknod"], "ok", "{r:?}");
    assert_eq!(r["open-device"], "EPERM", "{r:?}");
}

fn assert_refused(call: &str) {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let r = probe(&e, &[], &["sys", call]);
    assert_eq!(r[call], "EPERM", "{call}: {r:?}");
}

#[test]
fn mount_is_refused() {
    assert_refused("mount");
}

#[test]
fn unshare_user_is_refused() {
    assert_refused("unshare-user");
    if privileged() {
        let e = Engine::with_busybox();
        let out = e.run(&["run", "--rm", "bb", "unshare", "--user", "true"]);
        assert!(!out.status.success(), "busybox unshare --user succeeded");
    }
}

#[test]
fn keyctl_is_refused() {
    assert_refused("keyctl");
    assert_refused("add_key");
}

#[test]
fn bpf_is_refused() {
    assert_refused("bpf");
}

#[test]
fn perf_event_open_is_refused() {
    assert_refused("perf_event_open");
}

#[test]
fn kexec_load_is_refused() {
    assert_refused("kexec_load");
}

#[test]
fn open_by_handle_at_is_refused() {
    assert_refused("open_by_handle_at");
}

#[test]
fn host_pid_1_is_not_visible() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = run_in(
        &e,
        &[],
        &["sh", "-c", "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'"],
    );
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("sh"),
        "PID 1 is not the container's: {out}"
    );
    let pids: usize = lines.next().unwrap_or("").trim().parse().unwrap();
    assert!(pids <= 4, "{pids} processes visible");
}

#[test]
fn host_network_unreachable_with_network_none() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let r = probe(&e, &["--network", "none"], &["connect", &addr]);
    assert_eq!(r["connect"], "ECONNREFUSED", "{r:?}");
    let links = run_in(&e, &["--network", "none"], &["ls", "/sys/class/net"]);
    assert_eq!(links.trim(), "lo");
    // The same probe on the host network reaches the listener: the check can fail.
    let r = probe(&e, &["--network", "host"], &["connect", &addr]);
    assert_eq!(r["connect"], "ok", "{r:?}");
}

/// CVE-2019-5736 class, first way in: a container whose command is
/// /proc/self/exe must not run the engine's binary inside the container.
#[test]
fn proc_self_exe_does_not_run_berth() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = e.run(&["run", "--rm", "bb", "/proc/self/exe", "--version"]);
    assert!(
        !text(&out.stdout).contains("berth"),
        "berth ran inside the container: {}",
        text(&out.stdout)
    );
    assert!(!out.status.success(), "{}", text(&out.stderr));
}

/// CVE-2019-5736 class, second way in: while `berth exec` sets up a process
/// inside a running container, a process there scans /proc/*/exe; it must
/// never reach the berth binary, let alone open it for writing.
#[test]
fn exec_never_exposes_the_berth_binary() {
    if !privileged() {
        return;
    }
    let out = scan_during_execs(&[]);
    assert!(
        !out.contains("reached"),
        "the berth binary was reachable: {out}"
    );
}

/// The same scan in a `--privileged` container (which holds CAP_SYS_PTRACE)
/// does reach the binary: the scan can see the window it guards.
#[test]
fn privileged_lifts_the_exe_guard() {
    if !privileged() {
        return;
    }
    let out = scan_during_execs(&["--privileged"]);
    assert!(out.contains("reached"), "{out}");
    // Still not writable while berth runs it.
    assert!(!out.contains("write: ok"), "{out}");
}

/// Runs the probe's /proc/*/exe scan in a container made with `flags` while
/// `berth exec` runs over and over; returns the probe's output.
fn scan_during_execs(flags: &[&str]) -> String {
    let e = Engine::with_busybox();
    let md = std::fs::metadata(berth_bin()).unwrap();
    let vol = format!("{}:/probe:ro", probe_dir().display());
    let name = berth_integration::unique_id("escape");
    let mut run = vec!["run", "-d", "--name", &name, "-v", &vol];
    run.extend_from_slice(flags);
    run.extend_from_slice(&["bb", "sleep", "60"]);
    e.ok(&run);
    let (dev, ino) = (md.dev().to_string(), md.ino().to_string());
    let mut scan = e
        .command(&["exec", &name, "/probe/probe", "exe-scan", &dev, &ino, "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut execs = 0;
    let t0 = std::time::Instant::now();
    while t0.elapsed().as_secs_f64() < 3.5 {
        e.ok(&["exec", &name, "true"]);
        execs += 1;
    }
    let mut out = String::new();
    scan.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(scan.wait().unwrap().success(), "the scan failed: {out}");
    e.ok(&["rm", "-f", &name]);
    println!("{execs} execs during the scan; {}", out.trim());
    assert!(out.contains("looked: "), "{out}");
    out
}

#[test]
fn no_engine_fd_leaks_into_the_container() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    // A descriptor the caller leaks to berth (no close-on-exec) must not reach the container either.
    let leak = std::fs::File::open("/etc/hostname").unwrap();
    let vol = format!("{}:/probe:ro", probe_dir().display());
    let mut cmd = e.command(&["run", "--rm", "-v", &vol, "bb", "/probe/probe", "fds"]);
    let raw = std::os::fd::AsRawFd::as_raw_fd(&leak);
    // SAFETY: dup2 is async-signal-safe; fd 7 in the child becomes a copy without CLOEXEC.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fds: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(fds, ["fd 0", "fd 1", "fd 2"], "{}", text(&out.stdout));
}

/// What `--privileged` gives up, each observed: all capabilities, no
/// seccomp (mount, user namespaces, keyctl, perf allowed), a writable /sys,
/// no masked paths. What it keeps: no host device nodes and its own PID
/// namespace.
#[test]
fn privileged_lifts_these() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let p = ["--privileged"];
    let eff = u64::from_str_radix(&status_field(&e, &p, "CapEff"), 16).unwrap();
    assert_ne!(eff & (1 << CAP_SYS_ADMIN), 0, "CapEff {eff:x}");
    assert_eq!(status_field(&e, &p, "Seccomp"), "0");
    let r = probe(
        &e,
        &p,
        &["sys", "mount", "unshare-user", "keyctl", "perf_event_open"],
    );
    assert_eq!(r["mount"], "ok", "{r:?}");
    assert_eq!(r["unshare-user"], "ok", "{r:?}");
    assert_eq!(r["keyctl"], "ok", "{r:?}");
    assert_ne!(r["perf_event_open"], "EPERM", "{r:?}");
    let mounts = run_in(&e, &p, &["grep", " /sys sysfs ", "/proc/mounts"]);
    assert!(mounts.contains(" rw,"), "{mounts}");
    let out = run_in(&e, &p, &["sh", "-c", MASKED]);
    assert!(
        out.contains("/sys/firmware ") && !out.contains("/sys/firmware 0"),
        "{out}"
    );
    // Kept: no host device nodes (unlike Docker, berth adds none) ...
    let devs = run_in(&e, &p, &["ls", "/dev"]);
    assert!(!devs.contains("sda") && !devs.contains("vda"), "{devs}");
    // ... and the PID namespace.
    let pids = run_in(&e, &p, &["sh", "-c", "ls /proc | grep -c '^[0-9]'"]);
    assert!(pids.trim().parse::<usize>().unwrap() <= 4, "{pids}");
}
