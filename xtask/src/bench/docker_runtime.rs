//! The Docker part of `cargo xtask bench runtime`: `docker run --runtime berth`
//! (dockerd → containerd → containerd-shim-runc-v2 → berth-runc) against the same
//! `docker run` with Docker's default runtime, runc, on a dockerd the benchmark
//! starts with state, sockets and cgroup parent of its own and stops by pid.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::dockerd::{Dockerd, DOCKERD};
use super::{first_lines, loadavg, write_section, Stats, TempDir};
use crate::util;

/// Heading of this benchmark's section in docs/benchmarks.md.
const SECTION: &str = "## Docker start-up: berth-runc vs runc";

/// Time `docker run --rm --network none [--runtime berth] IMAGE /bin/true`, `runs`
/// times each, interleaved, and write the section of docs/benchmarks.md. Skips
/// (returning why) when Docker is not installed and `install` is false.
pub(super) fn bench(
    berth: &Path,
    rootfs_tar: &Path,
    runs: usize,
    warmup: usize,
    install: bool,
) -> Result<Option<String>> {
    if install {
        util::ensure_packages(&[("docker.io", DOCKERD)])?;
    }
    if !Path::new(DOCKERD).exists() {
        return Ok(Some(
            "docker: skipped, docker.io is not installed (`apt-get install docker.io` or pass --install-peers)".into(),
        ));
    }
    let pid = std::process::id();
    let tmp = TempDir(std::env::temp_dir().join(format!("berth-bench-docker-{pid}")));
    std::fs::create_dir_all(&tmp.0)?;
    let runc_link = tmp.0.join("berth-runc");
    std::os::unix::fs::symlink(berth, &runc_link)?;
    let daemon = Dockerd::start(
        "runtime",
        &[format!("--add-runtime=berth={}", runc_link.display())],
    )?;
    let server = daemon.version.clone();
    let docker = |args: &[&str]| {
        let mut cmd = daemon.docker();
        cmd.args(args);
        cmd
    };
    util::run(docker(&["import"]).arg(rootfs_tar).arg("bench-busybox"))?;

    let variants: [(&str, &[&str]); 2] = [("berth-runc", &["--runtime", "berth"]), ("runc", &[])];
    let line = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "run".into(),
            "--rm".into(),
            "--network".into(),
            "none".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["bench-busybox".into(), "/bin/true".into()]);
        v
    };
    let once = |extra: &[&str]| -> Result<Duration> {
        let args = line(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        let out = docker(&args).output()?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "docker {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    };
    println!(
        "bench: docker: {} warm-up and {runs} timed run(s) each, interleaved",
        warmup.max(1)
    );
    for _ in 0..warmup.max(1) {
        for (_, extra) in &variants {
            once(extra)?;
        }
    }
    let load_before = loadavg();
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..runs {
        for (k, (_, extra)) in variants.iter().enumerate() {
            samples[k].push(once(extra)?);
        }
        if (i + 1) % 20 == 0 && i + 1 < runs {
            println!("bench: docker {}/{runs}", i + 1);
        }
    }
    let load_after = loadavg();
    let runc_version = util::run(&mut docker(&["info", "--format", "{{.RuncCommit.ID}}"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    drop(daemon);

    let stats: Vec<(&str, Stats)> = variants
        .iter()
        .zip(&samples)
        .map(|((name, _), s)| (*name, Stats::of(s)))
        .collect();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| runtime | runs | min ms | median ms | mean ms | p90 ms | max ms |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, s) in &stats {
        let _ = writeln!(
            table,
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            s.n, s.min, s.median, s.mean, s.p90, s.max
        );
    }
    let (b, r) = (&stats[0].1, &stats[1].1);
    let verdict = format!(
        "runc / berth-runc (median): {:.1} ms / {:.1} ms = {:.2} ({})",
        r.median,
        b.median,
        r.median / b.median,
        if b.median <= r.median {
            "docker run starts faster with berth-runc"
        } else {
            "docker run starts slower with berth-runc"
        }
    );
    println!("\n{table}\n{verdict}");

    let mut md = String::new();
    let _ = writeln!(md, "{SECTION}\n");
    let _ = writeln!(
        md,
        "Wall-clock time of `docker run --rm --network none IMAGE /bin/true` (client to exit: dockerd, \
         containerd, containerd-shim-runc-v2 and the OCI runtime's create/start/delete) with \
         `--runtime berth` (berth-runc, release build) and with Docker's default runtime, runc, on one \
         dockerd started for the benchmark (own data and exec roots, `--bridge none`, no iptables). \
         {runs} timed runs each after {} warm-up run(s), interleaved. Part of \
         `cargo xtask bench runtime` when Docker is installed.\n",
        warmup.max(1)
    );
    let _ = writeln!(md, "- date: {}", super::date_utc());
    let _ = writeln!(
        md,
        "- load average: {load_before} (before), {load_after} (after)"
    );
    let _ = writeln!(md, "- dockerd: {server}; runc commit {runc_version}");
    let _ = writeln!(
        md,
        "- berth: {}\n",
        first_lines(&util::run(Command::new(berth).arg("--version"))?, 1)
    );
    md.push_str(&table);
    let _ = writeln!(md, "\n- {verdict}\n");
    let docs = util::workspace_root().join("docs/benchmarks.md");
    write_section(&docs, SECTION, &md)?;
    println!(
        "bench: wrote the \"{SECTION}\" section of {}",
        docs.display()
    );
    Ok(None)
}
