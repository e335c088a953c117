//! Real third-party programs the interoperability tests drive: installing them
//! from Debian when missing, starting their daemons, and stopping those by pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether `path` exists, installing Debian package `pkg` if it does not.
/// Prints why and returns false when the package cannot be installed.
pub fn ensure_tool(pkg: &str, path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", pkg])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let out = install().ok().filter(|o| o.status.success()).or_else(|| {
        let _ = Command::new("apt-get").args(["update", "-q"]).output();
        install().ok()
    });
    if Path::new(path).exists() {
        return true;
    }
    let why = out
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_else(|| "apt-get did not run".into());
    eprintln!("skipped: Debian package {pkg} ({path}) cannot be installed: {why}");
    false
}

/// `berth-runc`: a symlink in `dir` to the berth binary under test, which
/// berth answers to by behaving as `berth runtime` with runc's command line.
pub fn berth_runc(dir: &Path) -> PathBuf {
    let link = dir.join("berth-runc");
    if !link.exists() {
        std::os::unix::fs::symlink(crate::berth_bin(), &link).expect("link berth-runc");
    }
    link
}

/// Run `command` (a shell command line) under a new pseudo-terminal with
/// script(1), which exits with the command's status.
pub fn in_pty(command: &str) -> Output {
    Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script")
}

/// A daemon the test started; stopped with SIGTERM (SIGKILL after 30 s) by its pid on drop.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Start `cmd` with its output in `log` and wait (up to 30 s) until `ready` holds.
    pub fn start(name: &str, cmd: &mut Command, log: &Path, ready: impl Fn() -> bool) -> Daemon {
        let file = std::fs::File::create(log).expect("create daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut d = Daemon {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("{name} exited ({status}) while starting:\n{}", d.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready after 30s:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// The daemon's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("{} ignored SIGTERM for 30s: killing it", self.name);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Where a cgroup parent `name` (no leading slash) a client makes would be: under
/// the unified root and under every hierarchy (existing or not).
pub fn cgroup_parent_dirs(name: &str) -> Vec<PathBuf> {
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(name)];
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        dirs.push(h.path().join(name));
    }
    dirs
}

/// What a failing interop test's daemons started outside their own process: shims
/// and monitors (found by `dir` on their command line), container processes (in the
/// cgroup parent `cgroup` of every hierarchy), mounts under `dir`. Declared before
/// the daemon, it is dropped after it; it only acts when the test is panicking (a
/// passing test checks and removes all of these itself).
pub struct Leftovers {
    dir: PathBuf,
    cgroup: String,
}

impl Leftovers {
    /// Guard the test's scratch `dir` and its cgroup parent (`berth-it-...`, no slash).
    pub fn new(dir: &Path, cgroup: &str) -> Leftovers {
        Leftovers {
            dir: dir.to_path_buf(),
            cgroup: cgroup.trim_start_matches('/').to_string(),
        }
    }

    /// The cgroup parent's directories and those below them, deepest first.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                }
            }
            out.push(d.to_path_buf());
        }
        let mut out = Vec::new();
        for r in cgroup_parent_dirs(&self.cgroup)
            .into_iter()
            .filter(|r| r.is_dir())
        {
            walk(&r, &mut out);
        }
        out
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = self.dir.display().to_string();
        let kill = |pid: i32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(&dir)
            {
                kill(pid);
            }
        }
        for d in self.cgroup_dirs() {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            procs.lines().filter_map(|p| p.parse().ok()).for_each(kill);
        }
        std::thread::sleep(Duration::from_millis(300));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut targets: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|t| t.starts_with(&dir))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
        for t in targets {
            let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
        }
        for d in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
