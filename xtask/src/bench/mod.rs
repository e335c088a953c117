//! `cargo xtask bench ...`: berth's benchmarks, each writing its own section of
//! docs/benchmarks.md (a `## ` heading and everything up to the next one).
//!
//! - `runtime`: start-up time of `berth runtime run` against runc and crun.
//! - `pull`: a ~200 MB, 4-layer image pulled from a local registry by berth and
//!   skopeo (docker / podman where installed), against the raw limit on the same bytes.
//! - `unpack`: the same image's gzip layers unpacked by berth-snapshotter against GNU tar.
//! - `network`: `berth run` on the bridge against `--network none`, and container-to-container
//!   throughput over a bridge against the host's loopback.
//! - `build`: `berth build` of one Dockerfile (cold, fully cached, last RUN changed) against
//!   docker build / podman build / buildah bud where installed.

mod build;
mod docker_runtime;
mod dockerd;
mod network;
mod pull;
mod run;
mod runtime;
mod unpack;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::util;

const USAGE: &str = "usage: cargo xtask bench <runtime | pull | unpack | run | network | build> [--runs N] [--warmup N] [--install-peers (runtime only)]";

/// The open-files and process limits given to docker's and podman's containers:
/// their defaults (1048576) are above the hard limits a session may have (20000
/// and 96369 here), which makes their runtime fail to set them.
const PEER_ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// The berth binary a benchmark times: the one given with `--berth`, or else a
/// release build of berth-cli made now (with berth-monitor beside it).
fn berth_binary(given: Option<&Path>) -> Result<PathBuf> {
    let berth = match given {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("--berth {}", p.display()))?,
        None => {
            println!("bench: building berth (release)");
            util::run_inherit(util::cargo().args(["build", "--release", "-p", "berth-cli"]))?;
            util::target_dir().join("release/berth")
        }
    };
    if !berth.is_file() {
        bail!("{} missing after the build", berth.display());
    }
    if !berth.with_file_name("berth-monitor").is_file() {
        println!(
            "bench: no berth-monitor next to {}: container monitors relay in-process",
            berth.display()
        );
    }
    Ok(berth)
}

/// Set in the environment of the release build of xtask that the pull and unpack
/// benchmarks re-run themselves in.
const RELEASE_ENV: &str = "BERTH_XTASK_BENCH_RELEASE";

/// `args` are the words after `bench` (a leading `bench` is skipped too).
pub fn main(args: &[String]) -> Result<()> {
    let args = match args.first().map(String::as_str) {
        Some("bench") => &args[1..],
        _ => args,
    };
    match args.first().map(String::as_str) {
        Some("runtime") => runtime::main(&args[1..]),
        Some("run") => run::main(&args[1..]),
        Some("network") => network::main(&args[1..]),
        Some("build") => build::main(&args[1..]),
        Some(which @ ("pull" | "unpack")) => {
            // These time code running inside xtask (berth-snapshotter's apply_layer, the
            // raw sha256 + write loop): an unoptimised build would measure the debug
            // build, so run the same command from a release build of xtask.
            if cfg!(debug_assertions) && std::env::var_os(RELEASE_ENV).is_none() {
                return rerun_in_release(args);
            }
            match which {
                "pull" => pull::main(&args[1..]),
                _ => unpack::main(&args[1..]),
            }
        }
        Some("-h" | "--help") => {
            println!(
                "{USAGE}\n  {}\n  {}\n  {}\n  {}\n  {}\n  {}",
                runtime::USAGE,
                pull::USAGE,
                unpack::USAGE,
                run::USAGE,
                network::USAGE,
                build::USAGE
            );
            Ok(())
        }
        Some(other) => bail!("unknown benchmark {other:?}: {USAGE}"),
        None => bail!("{USAGE}"),
    }
}

/// Run `cargo xtask bench ARGS` again from an optimised (release) build of xtask.
fn rerun_in_release(args: &[String]) -> Result<()> {
    println!(
        "bench: re-running from a release build of xtask (the benchmark times code linked into it)"
    );
    let status = util::cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "xtask",
            "--",
            "bench",
        ])
        .args(args)
        .env(RELEASE_ENV, "1")
        .status()
        .context("run cargo run --release -p xtask")?;
    if !status.success() {
        bail!(
            "the release build of `xtask bench {}` failed ({status})",
            args.join(" ")
        );
    }
    Ok(())
}

/// Flags shared by the benchmarks.
struct Options {
    runs: usize,
    warmup: usize,
    install_peers: bool,
}

impl Options {
    /// Parse `--runs N`, `--warmup N` (also `--flag=N`) and, where `peers_flag`, `--install-peers`.
    fn parse(
        args: &[String],
        default_runs: usize,
        default_warmup: usize,
        peers_flag: bool,
        usage: &str,
    ) -> Result<Options> {
        let mut opts = Options {
            runs: default_runs,
            warmup: default_warmup,
            install_peers: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            let mut number = |name: &str| -> Result<usize> {
                let v = match &inline {
                    Some(v) => v.clone(),
                    None => it
                        .next()
                        .with_context(|| format!("{name} needs a number"))?
                        .clone(),
                };
                v.parse()
                    .with_context(|| format!("{name} {v:?}: not a number"))
            };
            match flag {
                "--runs" => opts.runs = number("--runs")?,
                "--warmup" => opts.warmup = number("--warmup")?,
                "--install-peers" if peers_flag && inline.is_none() => opts.install_peers = true,
                _ => bail!("unknown argument {arg:?}: usage: {usage}"),
            }
        }
        if opts.runs == 0 {
            bail!("--runs must be at least 1");
        }
        Ok(opts)
    }
}

/// Today's date and time, UTC.
fn date_utc() -> String {
    util::run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `sync(2)`: start each timed run with no dirty pages left by the previous one.
fn sync_all() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

/// Start a timed run from the same memory state every time: `sync`, drop the
/// clean page cache (so the run's writes find free pages instead of paying
/// for reclaim, which otherwise depends on what ran before), then read every
/// file under `warm` back into the cache (the run's inputs, e.g. a registry's
/// blobs, are cached for every tool alike).
fn settle(warm: &[&Path]) {
    sync_all();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    fn read_all(p: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        if meta.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                read_all(&e.path());
            }
        } else if meta.is_file() {
            if let Ok(mut f) = std::fs::File::open(p) {
                let _ = std::io::copy(&mut f, &mut std::io::sink());
            }
        }
    }
    for p in warm {
        read_all(p);
    }
}

/// Bytes as MB (10^6), for throughput.
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Removes the scratch directory when the benchmark ends, however it ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mount points at or under `dir`, from /proc/self/mountinfo, in mount order.
pub(super) fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(String::from)
        .collect()
}

pub(super) fn version_of(bin: &Path, args: &[&str]) -> String {
    match util::run(Command::new(bin).args(args)) {
        Ok(v) => first_lines(&v, 2),
        Err(e) => format!("unknown ({e:#})"),
    }
}

/// The image reference a `load` printed (`Loaded image: NAME` or `Loaded image ID: ID`).
pub(super) fn loaded_reference(output: &str) -> Option<String> {
    output
        .lines()
        .filter_map(|l| {
            l.trim()
                .rsplit_once(": ")
                .map(|(_, r)| r.trim().to_string())
        })
        .rfind(|r| !r.is_empty())
}

/// A working docker or podman (`docker version` talks to the daemon), with the busybox test
/// image loaded into it; `Err` says why it is skipped.
pub(super) fn engine_peer(
    name: &str,
    archive: &Path,
) -> std::result::Result<(PathBuf, String, String), String> {
    let bin = find_in_path(name).ok_or_else(|| format!("{name} is not installed"))?;
    let probe: &[&str] = if name == "docker" {
        &["version", "--format", "{{.Server.Version}}"]
    } else {
        &["info", "--format", "{{.Host.OCIRuntime.Name}}"]
    };
    if let Err(e) = util::run(Command::new(&bin).args(probe)) {
        let e = format!("{e:#}");
        let why = if name == "docker" && e.contains("Cannot connect to the Docker daemon") {
            "no Docker daemon".to_string()
        } else {
            format!("{name} does not work here")
        };
        return Err(format!(
            "{why} (`{name} {}`: {})",
            probe.join(" "),
            e.replace('\n', " ")
        ));
    }
    let version = version_of(&bin, &["--version"]);
    let out = util::run(Command::new(&bin).arg("load").arg("-i").arg(archive))
        .map_err(|e| format!("`{name} load` of the busybox test image failed: {e:#}"))?;
    let image = loaded_reference(&out)
        .ok_or_else(|| format!("`{name} load` printed no image: {}", out.trim()))?;
    Ok((bin, version, image))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn git_describe(root: &Path) -> String {
    let head =
        util::run(
            Command::new("git")
                .arg("-C")
                .arg(root)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    let Ok(head) = head else {
        return "not a git checkout".into();
    };
    let dirty = util::run(Command::new("git").arg("-C").arg(root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .map(|s| !s.trim().is_empty())
    .unwrap_or(false);
    format!(
        "git {}{}",
        head.trim(),
        if dirty { " + uncommitted changes" } else { "" }
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Summary of timings, in milliseconds.
struct Stats {
    n: usize,
    min: f64,
    median: f64,
    mean: f64,
    p90: f64,
    max: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        if n == 0 {
            return Stats {
                n,
                min: f64::NAN,
                median: f64::NAN,
                mean: f64::NAN,
                p90: f64::NAN,
                max: f64::NAN,
            };
        }
        let median = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        // Nearest-rank percentile.
        let p90 = ms[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
        Stats {
            n,
            min: ms[0],
            median,
            mean: ms.iter().sum::<f64>() / n as f64,
            p90,
            max: ms[n - 1],
        }
    }
}

/// Host description: CPU, nproc, kernel, OS, cgroup layout.
fn machine() -> Vec<(String, String)> {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    vec![
        ("CPU".into(), format!("{cpu}, nproc {nproc}")),
        ("memory".into(), mem),
        ("kernel".into(), kernel),
        ("OS".into(), os),
        ("cgroups".into(), cgroup_layout()),
    ]
}

fn cgroup_layout() -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut v1: Vec<String> = Vec::new();
    let mut v2: Vec<String> = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        match f[2] {
            "cgroup2" => v2.push(f[1].to_string()),
            "cgroup" => {
                let name = f[1].rsplit('/').next().unwrap_or(f[1]);
                v1.push(name.to_string());
            }
            _ => {}
        }
    }
    let v2_controllers = |dir: &str| {
        std::fs::read_to_string(Path::new(dir).join("cgroup.controllers"))
            .map(|s| {
                let s = s.trim().to_string();
                if s.is_empty() {
                    "none".into()
                } else {
                    s
                }
            })
            .unwrap_or_else(|_| "?".into())
    };
    match (v1.is_empty(), v2.first()) {
        (true, Some(dir)) => format!(
            "v2 (unified) at {dir}, controllers: {}",
            v2_controllers(dir)
        ),
        (false, Some(dir)) => format!(
            "hybrid: v1 hierarchies {} + v2 at {dir} (v2 controllers: {})",
            v1.join(", "),
            v2_controllers(dir)
        ),
        (false, None) => format!("v1 only: {}", v1.join(", ")),
        (true, None) => "no cgroup filesystem mounted".into(),
    }
}

/// Replace (or append) this benchmark's section of `path`, keeping the rest.
fn write_section(path: &Path, heading: &str, section: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from(
            "# Benchmarks\n\nEach section is written by its own `cargo xtask bench ...` task, \
             which replaces only its own section.\n\n",
        ),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let lines: Vec<&str> = old.split_inclusive('\n').collect();
    let is_heading = |l: &str| l.trim_end() == heading;
    let new = match lines.iter().position(|l| is_heading(l)) {
        Some(start) => {
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |i| start + 1 + i);
            let mut s: String = lines[..start].concat();
            s.push_str(section);
            s.push_str(&lines[end..].concat());
            s
        }
        None => {
            let mut s = old.trim_end().to_string();
            s.push_str("\n\n");
            s.push_str(section);
            s
        }
    };
    let new = new.trim_end().to_string() + "\n";
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_samples() {
        let samples: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let s = Stats::of(&samples);
        assert_eq!(s.n, 10);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.median, 5.5);
        assert_eq!(s.mean, 5.5);
        assert_eq!(s.p90, 9.0);
        assert_eq!(s.max, 10.0);
    }

    #[test]
    fn section_is_replaced_and_others_kept() {
        let dir = std::env::temp_dir().join(format!("bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("benchmarks.md");
        std::fs::write(
            &path,
            "# Benchmarks\n\n## Pull\n\npull text\n\n## Runtime start-up\n\nold\n\n## Build\n\nbuild text\n",
        )
        .unwrap();
        write_section(
            &path,
            "## Runtime start-up",
            "## Runtime start-up\n\nnew\n\n",
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# Benchmarks\n\n## Pull\n\npull text\n\n## Runtime start-up\n\nnew\n\n## Build\n\nbuild text\n"
        );
        std::fs::write(&path, "# Benchmarks\n\n## Pull\n\npull text\n").unwrap();
        write_section(
            &path,
            "## Runtime start-up",
            "## Runtime start-up\n\nnew\n\n",
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# Benchmarks\n\n## Pull\n\npull text\n\n## Runtime start-up\n\nnew\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn options() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = |v: &[&str], peers: bool| Options::parse(&a(v), 200, 5, peers, "u");
        let o = p(&["--runs", "7", "--install-peers"], true).unwrap();
        assert_eq!((o.runs, o.warmup, o.install_peers), (7, 5, true));
        assert_eq!(p(&["--runs=3"], true).unwrap().runs, 3);
        assert_eq!(p(&["--warmup", "0"], false).unwrap().warmup, 0);
        assert!(p(&["--runs", "0"], true).is_err());
        assert!(p(&["--bogus"], true).is_err());
        assert!(p(&["--install-peers"], false).is_err());
    }
}
