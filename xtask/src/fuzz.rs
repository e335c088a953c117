//! `cargo xtask fuzz [TARGET] [--seconds N] [--jobs J]`: build the libFuzzer
//! targets in `fuzz/` on the stable toolchain and run each for N seconds
//! (default 60), J at a time (default 2), seeded from `fuzz/corpus/TARGET`.
//!
//! The build passes rustc the same sanitizer-coverage and AddressSanitizer
//! flags cargo-fuzz would (`RUSTC_BOOTSTRAP=1` unlocks `-Zsanitizer` on
//! stable), so CI needs no extra tool. A crash fails the task and leaves its
//! input in `target/fuzz/artifacts/TARGET/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{run, run_inherit, target_dir, workspace_root};

/// The fuzz targets, as named in fuzz/Cargo.toml.
pub const TARGETS: &[&str] = &[
    "reference",
    "manifest",
    "layer_tar",
    "dockerfile",
    "dockerignore",
    "run_flags",
    "www_authenticate",
];

const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Zsanitizer=address",
    "-Cforce-frame-pointers",
];

/// What one run found.
struct Outcome {
    target: String,
    runs: u64,
    per_second: u64,
    crashed: Option<String>,
}

pub fn main(args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut jobs = 2usize;
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => seconds = parse_next(&mut it, "--seconds")?,
            "--jobs" => jobs = parse_next(&mut it, "--jobs")?,
            t if TARGETS.contains(&t) => only.push(t.to_string()),
            other => bail!(
                "unknown fuzz argument {other:?}; targets: {}",
                TARGETS.join(", ")
            ),
        }
    }
    if only.is_empty() {
        only = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    // libfuzzer-sys compiles libFuzzer's C++ sources.
    crate::util::ensure_packages(&[("g++", "/usr/bin/g++")])?;
    let bin_dir = build(&only)?;
    let outcomes = run_all(&bin_dir, &only, seconds, jobs.max(1))?;
    println!("xtask: fuzz results ({seconds} s each)");
    println!(
        "  {:<18} {:>12} {:>10}  result",
        "target", "executions", "exec/s"
    );
    for o in &outcomes {
        println!(
            "  {:<18} {:>12} {:>10}  {}",
            o.target,
            o.runs,
            o.per_second,
            o.crashed.as_deref().unwrap_or("no crash")
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed.is_some())
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {}", crashed.join(", "));
    }
    Ok(())
}

fn parse_next<T: std::str::FromStr>(it: &mut std::slice::Iter<String>, flag: &str) -> Result<T> {
    it.next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{flag} needs a number"))
}

fn host_triple() -> Result<String> {
    let out = run(Command::new("rustc").arg("-vV"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .context("no host in rustc -vV")
}

/// Build the targets; returns the directory holding their binaries.
fn build(targets: &[String]) -> Result<PathBuf> {
    let triple = host_triple()?;
    let dir = target_dir().join("fuzz");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root().join("fuzz"))
        .args(["build", "--release", "--target", &triple])
        .env("CARGO_TARGET_DIR", &dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for t in targets {
        cmd.args(["--bin", t]);
    }
    println!("== building {} fuzz targets", targets.len());
    run_inherit(&mut cmd)?;
    Ok(dir.join(triple).join("release"))
}

fn run_all(bin_dir: &Path, targets: &[String], seconds: u64, jobs: usize) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for chunk in targets.chunks(jobs) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|t| {
                let (bin, t) = (bin_dir.join(t), t.clone());
                std::thread::spawn(move || run_one(&bin, &t, seconds))
            })
            .collect();
        for h in handles {
            outcomes.push(h.join().expect("fuzz thread")?);
        }
    }
    Ok(outcomes)
}

/// Run one target for `seconds`; new inputs go to target/fuzz/corpus/TARGET,
/// the seeds in fuzz/corpus/TARGET are only read.
fn run_one(bin: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let root = workspace_root().join("fuzz");
    let work = target_dir().join("fuzz");
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    let log = work.join("logs").join(format!("{target}.log"));
    for d in [&corpus, &artifacts, &work.join("logs")] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    let dict = root.join("dict").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    cmd.arg(&corpus).arg(root.join("corpus").join(target));
    // Scratch space for targets that write files (layer_tar), on a tmpfs
    // when there is one; removed here, since libFuzzer's exit skips cleanup.
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        work.clone()
    }
    .join(format!("berth-fuzz-{}-{target}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    cmd.env("BERTH_FUZZ_SCRATCH", &scratch);
    println!(
        "== fuzzing {target} for {seconds} s (log: {})",
        log.display()
    );
    let out = cmd.output();
    let _ = std::fs::remove_dir_all(&scratch);
    let out = out.with_context(|| format!("run {}", bin.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::write(&log, &stderr)?;
    let stat = |name: &str| -> u64 {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let runs = stat("stat::number_of_executed_units:");
    let per_second = stat("stat::average_exec_per_sec:");
    let crashed = (!out.status.success()).then(|| {
        let artifact = stderr
            .lines()
            .rev()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .unwrap_or("no input saved");
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        eprintln!(
            "xtask: {target} crashed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        format!("CRASH: {artifact}")
    });
    Ok(Outcome {
        target: target.to_string(),
        runs,
        per_second,
        crashed,
    })
}
