//! Healthchecks, as Docker runs them: the image's `HEALTHCHECK` (or the
//! `--health-*` flags) names a command that a small process, spawned by the
//! monitor for each run of a container that has one (`berth __health ID PID`),
//! execs in the container every interval. Its exit code makes the container
//! `healthy` (0) or, after `retries` failures in a row, `unhealthy`; until
//! then it is `starting`. Failures inside the start period do not count. The
//! last five results are kept with their output (at most 4096 bytes each,
//! then `...`).
//! The process ends with the run it watches.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::record::{ContainerRecord, Status};
use super::{Containers, ExecRequest};
use crate::error::{Error, Result};

/// Docker's defaults for what a healthcheck leaves unset.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Results kept in the log, and bytes of output kept per result (Docker's).
const MAX_LOG_ENTRIES: usize = 5;
const MAX_OUTPUT: usize = 4096;

/// A healthcheck as images and `inspect` spell it (durations in
/// nanoseconds; zero or empty means unset, so the default or the image's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default)]
    pub test: Vec<String>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    /// Time a check may take.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    /// Time after a start in which failures do not count.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    /// Time between checks during the start period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    /// Failures in a row that make the container unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl HealthConfig {
    /// `flags` over `image` field by field, as Docker merges them: a flag's
    /// test replaces the image's, and each unset duration or count comes
    /// from the image. None when neither has a test (`NONE` is kept: it
    /// shows in `inspect`, and [`HealthConfig::is_active`] says no).
    pub fn merge(image: Option<HealthConfig>, flags: &HealthConfig) -> Option<HealthConfig> {
        let image = image.unwrap_or_default();
        let pick = |f: u64, i: u64| if f != 0 { f } else { i };
        let merged = HealthConfig {
            test: if flags.test.is_empty() {
                image.test
            } else {
                flags.test.clone()
            },
            interval: pick(flags.interval, image.interval),
            timeout: pick(flags.timeout, image.timeout),
            start_period: pick(flags.start_period, image.start_period),
            start_interval: pick(flags.start_interval, image.start_interval),
            retries: if flags.retries != 0 {
                flags.retries
            } else {
                image.retries
            },
        };
        (!merged.test.is_empty()).then_some(merged)
    }

    /// Whether it names a command to run.
    pub fn is_active(&self) -> bool {
        matches!(
            self.test.first().map(String::as_str),
            Some("CMD" | "CMD-SHELL")
        ) && self.test.len() > 1
    }

    /// The command line to exec: CMD's arguments, or CMD-SHELL's command
    /// through `shell` (the image's SHELL, else `/bin/sh -c`).
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD-SHELL") => {
                let mut argv: Vec<String> = if shell.is_empty() {
                    vec!["/bin/sh".into(), "-c".into()]
                } else {
                    shell.to_vec()
                };
                argv.extend(self.test[1..].iter().cloned());
                argv
            }
            _ => self.test.iter().skip(1).cloned().collect(),
        }
    }

    fn duration(ns: u64, default: Duration) -> Duration {
        if ns == 0 {
            default
        } else {
            Duration::from_nanos(ns)
        }
    }
}

/// Docker's health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// No check has passed yet, and not enough have failed.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl HealthStatus {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One check's result (`State.Health.Log[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// RFC 3339 time the check started.
    pub start: String,
    /// RFC 3339 time it ended.
    pub end: String,
    /// Its exit code (-1 when it timed out).
    pub exit_code: i32,
    /// Its stdout and stderr, at most 4096 bytes.
    pub output: String,
}

/// A running container's health (`State.Health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// Current status.
    pub status: HealthStatus,
    /// Failures in a row that counted.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: VecDeque<HealthResult>,
}

impl Health {
    /// The health of a run that just started.
    pub fn starting() -> Health {
        Health {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: VecDeque::new(),
        }
    }

    /// Take one result; `in_start_period` says whether the check started
    /// within the start period (where a failure does not count while the
    /// container is still starting).
    pub fn record(&mut self, result: HealthResult, retries: u32, in_start_period: bool) {
        if result.exit_code == 0 {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !(self.status == HealthStatus::Starting && in_start_period) {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push_back(result);
        while self.log.len() > MAX_LOG_ENTRIES {
            self.log.pop_front();
        }
    }
}

/// Whether a record's healthcheck would run.
pub fn has_healthcheck(record: &ContainerRecord) -> bool {
    record
        .healthcheck
        .as_ref()
        .is_some_and(HealthConfig::is_active)
}

/// A record's health as `ps` and `inspect` show it: None without an active
/// healthcheck (Docker's `none`).
pub fn current_health(record: &ContainerRecord) -> Option<&Health> {
    record
        .state
        .health
        .as_ref()
        .filter(|_| has_healthcheck(record))
}

impl Containers {
    /// Spawn the health process for the run `pid` of `id` (no-op without a
    /// healthcheck). Called by the monitor once the run is recorded.
    pub(crate) fn spawn_health(&self, record: &ContainerRecord, pid: i32) {
        if !has_healthcheck(record) {
            return;
        }
        let log = self.paths(&record.id).dir.join("monitor.log");
        let pid = pid.to_string();
        let _ = self.spawn_helper(&["__health", &record.id, &pid], &log);
    }
}

/// Entry point of `berth __health ID PID`: check the run `pid` of container
/// `id` until it ends. Returns the process exit code.
pub fn main(root: &Path, run_root: &Path, id: &str, pid: i32) -> i32 {
    match Containers::open(root, run_root).and_then(|c| watch(&c, id, pid)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth health {id}: {e}");
            1
        }
    }
}

fn watch(containers: &Containers, id: &str, pid: i32) -> Result<()> {
    let start_ticks = berth_runtime::state::proc_stat(pid)
        .map(|s| s.0)
        .ok_or_else(|| Error::Invalid(format!("process {pid} of {id} is gone")))?;
    let record = containers.store.load(id)?;
    let Some(config) = record.healthcheck.clone().filter(HealthConfig::is_active) else {
        return Ok(());
    };
    let argv = config.argv(&record.shell);
    let interval = HealthConfig::duration(config.interval, DEFAULT_INTERVAL);
    let timeout = HealthConfig::duration(config.timeout, DEFAULT_TIMEOUT);
    let start_period = HealthConfig::duration(config.start_period, Duration::ZERO);
    let start_interval = HealthConfig::duration(config.start_interval, DEFAULT_START_INTERVAL);
    let retries = if config.retries == 0 {
        DEFAULT_RETRIES
    } else {
        config.retries
    };
    let started = Instant::now();
    let mut status = HealthStatus::Starting;
    loop {
        let next = if status == HealthStatus::Starting && started.elapsed() < start_period {
            start_interval
        } else {
            interval
        };
        let due = Instant::now() + next;
        while Instant::now() < due {
            if !super::pid_alive(pid, start_ticks) {
                stopped(containers, id, pid);
                return Ok(());
            }
            std::thread::sleep((due - Instant::now()).min(Duration::from_millis(200)));
        }
        let record = match containers.store.load(id) {
            Ok(r) => r,
            Err(Error::NoSuchContainer(_)) => return Ok(()),
            // Read again at the next interval.
            Err(_) => continue,
        };
        if record.state.pid != pid {
            return Ok(());
        }
        if record.state.status != Status::Running {
            stopped(containers, id, pid);
            return Ok(());
        }
        if containers.is_paused(&record) {
            // As Docker's: no checks while paused, and not healthy either.
            stopped(containers, id, pid);
            status = HealthStatus::Unhealthy;
            continue;
        }
        let in_start_period = started.elapsed() < start_period;
        let start = super::now();
        let result = probe(containers, id, &argv, timeout).unwrap_or_else(|e| HealthResult {
            start,
            end: super::now(),
            exit_code: -1,
            output: e.to_string(),
        });
        let updated = containers.update_with(id, false, |r| {
            if r.state.pid == pid {
                r.state.health.get_or_insert_with(Health::starting).record(
                    result,
                    retries,
                    in_start_period,
                );
            }
        })?;
        match updated.state.health {
            Some(h) if updated.state.pid == pid => status = h.status,
            _ => return Ok(()),
        }
    }
}

/// The run `pid` no longer runs (or is paused): as Docker's, its health is
/// `unhealthy` (unless a newer run has taken over the record).
fn stopped(containers: &Containers, id: &str, pid: i32) {
    let _ = containers.update_with(id, false, |r| {
        if r.state.pid == pid || r.state.status != Status::Running {
            if let Some(h) = r.state.health.as_mut() {
                h.status = HealthStatus::Unhealthy;
            }
        }
    });
}

/// Run one check: exec `argv` in the container with its output on a pipe,
/// killed `timeout` after it started.
fn probe(
    containers: &Containers,
    id: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<HealthResult> {
    let start = super::now();
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Invalid(format!("pipe: {e}")))?;
    let pid_file = containers
        .paths(id)
        .run_dir
        .join(format!("health-{}.pid", std::process::id()));
    let _ = std::fs::remove_file(&pid_file);
    // SAFETY: this process is single-threaded, so the child may do anything
    // the parent could; it only execs into the container and exits.
    let child = match unsafe { nix::unistd::fork() } {
        Err(e) => return Err(Error::Invalid(format!("fork: {e}"))),
        Ok(nix::unistd::ForkResult::Child) => {
            exec_child(containers, id, argv, &write, pid_file.clone())
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
    };
    drop(write);
    let (output, outcome) = collect(read, child, timeout, &pid_file);
    let _ = std::fs::remove_file(&pid_file);
    let (exit_code, output) = match outcome {
        Outcome::Exited(c) => (c, output),
        Outcome::TimedOut => (
            -1,
            format!("Health check exceeded timeout ({})", go_duration(timeout)),
        ),
        Outcome::NotStarted => (
            -1,
            format!("timed out starting health check for container {id}"),
        ),
    };
    Ok(HealthResult {
        start,
        end: super::now(),
        exit_code,
        output,
    })
}

/// The forked child of [`probe`]: stdout and stderr on the pipe, then the
/// exec; never returns.
fn exec_child(
    containers: &Containers,
    id: &str,
    argv: &[String],
    out: &OwnedFd,
    pid_file: PathBuf,
) -> ! {
    // SAFETY: dup2 onto this process's own standard descriptors.
    unsafe {
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    let req = ExecRequest {
        pid_file: Some(pid_file),
        ..Default::default()
    };
    let code = match containers.exec(id, argv.to_vec(), &req) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    };
    // SAFETY: ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

/// How a check's exec ended.
enum Outcome {
    /// With this exit code (128+N for signal N).
    Exited(i32),
    /// It ran longer than the timeout and was killed.
    TimedOut,
    /// It did not even start within [`START_LIMIT`].
    NotStarted,
}

/// Longest an exec may take to start (Docker's); the timeout counts from then.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Read the check's output until its process `child` has exited, or it ran
/// `timeout` after the exec'd process started (the exec writes its pid to
/// `pid_file` then), or it did not start within [`START_LIMIT`]; the last
/// two kill the exec'd process, then `child`.
fn collect(
    read: OwnedFd,
    child: nix::unistd::Pid,
    timeout: Duration,
    pid_file: &Path,
) -> (String, Outcome) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let start_deadline = Instant::now() + START_LIMIT;
    let mut deadline = None;
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut pipe = File::from(read);
    let mut output = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 4096];
    let mut drain = |pipe: &mut File, output: &mut Vec<u8>| {
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = MAX_OUTPUT.saturating_sub(output.len());
            output.extend_from_slice(&buf[..n.min(room)]);
            truncated |= n > room;
        }
    };
    let code = loop {
        let mut fds = [libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll on one valid pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        drain(&mut pipe, &mut output);
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => break Outcome::Exited(c),
            Ok(WaitStatus::Signaled(_, s, _)) => break Outcome::Exited(128 + s as i32),
            Ok(_) => {}
            Err(_) => break Outcome::Exited(-1),
        }
        let target = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        if target.is_some() && deadline.is_none() {
            deadline = Some(Instant::now() + timeout);
        }
        let outcome = match deadline {
            Some(d) if Instant::now() >= d => Outcome::TimedOut,
            None if Instant::now() >= start_deadline => Outcome::NotStarted,
            _ => continue,
        };
        if let Some(p) = target {
            // SAFETY: kill with a pid the exec wrote and a valid signal.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(child, None);
        break outcome;
    };
    drain(&mut pipe, &mut output);
    let mut text = String::from_utf8_lossy(&output).into_owned();
    if truncated {
        text.push_str("...");
    }
    (text, code)
}

/// A duration as Go prints one (`30s`, `1m30s`, `500ms`).
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s) = (
        ms / 3_600_000,
        ms / 60_000 % 60,
        (ms % 60_000) as f64 / 1000.0,
    );
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn merge_takes_flags_over_image_field_by_field() {
        let image = HealthConfig {
            interval: 5,
            retries: 7,
            ..cfg(&["CMD", "true"])
        };
        let flags = HealthConfig {
            timeout: 9,
            ..cfg(&["CMD-SHELL", "exit 1"])
        };
        let m = HealthConfig::merge(Some(image.clone()), &flags).unwrap();
        assert_eq!(m.test, ["CMD-SHELL", "exit 1"]);
        assert_eq!((m.interval, m.timeout, m.retries), (5, 9, 7));
        assert_eq!(
            HealthConfig::merge(Some(image.clone()), &HealthConfig::default()),
            Some(image.clone())
        );
        let none = HealthConfig::merge(Some(image), &cfg(&["NONE"])).unwrap();
        assert!(!none.is_active());
        assert_eq!(HealthConfig::merge(None, &HealthConfig::default()), None);
    }

    #[test]
    fn argv_uses_the_shell_for_cmd_shell() {
        assert_eq!(
            cfg(&["CMD-SHELL", "a b"]).argv(&[]),
            ["/bin/sh", "-c", "a b"]
        );
        let sh = vec!["/bin/bash".to_string(), "-ec".to_string()];
        assert_eq!(
            cfg(&["CMD-SHELL", "a"]).argv(&sh),
            ["/bin/bash", "-ec", "a"]
        );
        assert_eq!(cfg(&["CMD", "a", "b"]).argv(&sh), ["a", "b"]);
    }

    fn result(code: i32) -> HealthResult {
        HealthResult {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn status_follows_docker() {
        let mut h = Health::starting();
        h.record(result(1), 2, true);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 0));
        h.record(result(1), 2, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Starting, 1));
        h.record(result(1), 2, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Unhealthy, 2));
        h.record(result(0), 2, false);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        // Once healthy, the start period no longer shields a failure.
        h.record(result(1), 2, true);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 1));
        for _ in 0..10 {
            h.record(result(0), 2, false);
        }
        assert_eq!(h.log.len(), MAX_LOG_ENTRIES);
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }
}
