//! A dockerd of the benchmark's own, for machines where Docker is installed but no
//! daemon runs (no systemd here to start one): own data and exec roots, socket, pid
//! file and cgroup parent, no bridge and no iptables; stopped by pid and its state
//! removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::TempDir;
use crate::util;

/// Docker's daemon as Debian's docker.io installs it.
pub(super) const DOCKERD: &str = "/usr/sbin/dockerd";
/// The docker.io client (another `docker` may come first in PATH).
pub(super) const DOCKER: &str = "/usr/bin/docker";

/// A running private dockerd.
pub(super) struct Dockerd {
    child: Child,
    /// `unix://` address of its socket, for `--host` / `DOCKER_HOST`.
    pub host: String,
    /// Its server version.
    pub version: String,
    cgroup_parent: String,
    tmp: TempDir,
}

impl Dockerd {
    /// Start dockerd with `extra` daemon flags (e.g. `--add-runtime=...`,
    /// `--insecure-registry=...`) and wait (at most 60 s) until it answers.
    pub fn start(tag: &str, extra: &[String]) -> Result<Dockerd> {
        let pid = std::process::id();
        let tmp = TempDir(std::env::temp_dir().join(format!("berth-bench-dockerd-{tag}-{pid}")));
        std::fs::create_dir_all(&tmp.0)?;
        let sock = tmp.0.join("docker.sock");
        let host = format!("unix://{}", sock.display());
        let cgroup_parent = format!("berth-bench-docker-{tag}-{pid}");
        let log = std::fs::File::create(tmp.0.join("dockerd.log"))?;
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(tmp.0.join("data"))
            .arg("--exec-root")
            .arg(tmp.0.join("exec"))
            .arg("--pidfile")
            .arg(tmp.0.join("dockerd.pid"))
            .args(["--host", &host, "--bridge", "none"])
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .args(["--ip-forward=false", "--cgroup-parent"])
            .arg(format!("/{cgroup_parent}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start dockerd")?;
        let mut d = Dockerd {
            child,
            host,
            version: String::new(),
            cgroup_parent,
            tmp,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        d.version = loop {
            if let Ok(v) =
                util::run(
                    d.docker()
                        .args(["version", "--format", "{{.Server.Version}}"]),
                )
            {
                break v.trim().to_string();
            }
            if Instant::now() > deadline || !matches!(d.child.try_wait(), Ok(None)) {
                let log = std::fs::read_to_string(d.tmp.0.join("dockerd.log")).unwrap_or_default();
                bail!("dockerd did not answer within 60s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok(d)
    }

    /// A `docker` client command talking to this daemon.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.args(["--host", &self.host])
            .env("DOCKER_CONFIG", self.tmp.0.join("client"))
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_cgroup_parent(&self.cgroup_parent);
        if std::env::var_os("DOCKER_HOST").is_some_and(|h| h == self.host.as_str()) {
            std::env::remove_var("DOCKER_HOST");
            std::env::remove_var("DOCKER_API_VERSION");
        }
    }
}

/// For the benchmarks that compare with `docker` as found in PATH: when Docker is
/// installed but no daemon answers on the default socket, start a private one and
/// point `DOCKER_HOST` (and the docker.io client's API version) at it, so every
/// `docker` the benchmark runs uses it. `None` when Docker already works or is not
/// installed (the benchmark then notes why docker is left out).
pub(super) fn for_peers(tag: &str, extra: &[String]) -> Option<Dockerd> {
    if !Path::new(DOCKERD).exists() || std::env::var_os("DOCKER_HOST").is_some() {
        return None;
    }
    let client = super::find_in_path("docker")?;
    let works =
        util::run(Command::new(&client).args(["version", "--format", "{{.Server.Version}}"]));
    if works.is_ok() {
        return None;
    }
    match Dockerd::start(tag, extra) {
        Ok(d) => {
            println!(
                "bench: started a private dockerd {} at {}",
                d.version, d.host
            );
            // Safe here: the benchmark is single-threaded when it sets it.
            std::env::set_var("DOCKER_HOST", &d.host);
            // The docker.io daemon (20.10) speaks API 1.41; a newer client in PATH
            // would ask for more.
            std::env::set_var("DOCKER_API_VERSION", "1.41");
            Some(d)
        }
        Err(e) => {
            println!("bench: could not start a private dockerd: {e:#}");
            None
        }
    }
}

/// Remove the (empty) cgroup parent dockerd made, in every hierarchy.
fn remove_cgroup_parent(name: &str) {
    let mut dirs: Vec<PathBuf> = vec![Path::new("/sys/fs/cgroup").join(name)];
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        dirs.push(h.path().join(name));
    }
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}
