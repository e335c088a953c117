//! `cargo xtask bench runtime`: start-up time of `berth runtime run` against
//! runc and crun on the same bundle, written to docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{
    find_in_path, first_lines, git_describe, loadavg, machine, write_section, Options, Stats,
    TempDir,
};
use crate::{images, util};

/// Heading of this benchmark's section in docs/benchmarks.md.
const SECTION: &str = "## Runtime start-up";
const DEFAULT_RUNS: usize = 200;
const DEFAULT_WARMUP: usize = 5;
pub(super) const USAGE: &str =
    "cargo xtask bench runtime [--runs N] [--warmup N] [--install-peers]";

/// Peers: (name, Debian package, path the package installs).
const PEERS: &[(&str, &str, &str)] = &[
    ("runc", "runc", "/usr/sbin/runc"),
    ("crun", "crun", "/usr/bin/crun"),
];

/// `cargo xtask bench runtime [--runs N] [--install-peers]`: times `berth runtime run` of /bin/true in a busybox
/// bundle side by side with `runc run` and `crun run` (skipping the ones not installed, saying why; with
/// --install-peers it apt-installs runc and crun first), N runs each (default 200), interleaved (berth, runc, crun, berth, ...)
/// so machine noise hits all equally, after a few warm-up runs; reports min/median/mean/p90/max in ms and the
/// ratios of medians (peer / berth), prints a table and writes docs/benchmarks.md (a section for this benchmark with date,
/// machine (nproc, kernel, cgroup layout), versions of each runtime, the table, the ratios, the exact command lines used).
/// Then, when Docker is installed (or with --install-peers), `docker run --runtime berth` against `docker run` (runc)
/// on a dockerd of its own, N/5 runs each (at least 10), in a section of its own (bench/docker_runtime.rs).
pub(super) fn main(args: &[String]) -> Result<()> {
    runtime(&Options::parse(
        args,
        DEFAULT_RUNS,
        DEFAULT_WARMUP,
        true,
        USAGE,
    )?)
}

/// A runtime under test: `argv_prefix --root ROOT run -b BUNDLE ID`.
struct Runtime {
    name: String,
    argv_prefix: Vec<String>,
    root: PathBuf,
    version: String,
    samples: Vec<Duration>,
}

impl Runtime {
    fn command(&self, bundle: &Path, id: &str) -> Command {
        let mut cmd = Command::new(&self.argv_prefix[0]);
        cmd.args(&self.argv_prefix[1..])
            .arg("--root")
            .arg(&self.root)
            .args(["run", "-b"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn command_line(&self, bundle: &Path, id: &str) -> String {
        let mut words = self.argv_prefix.clone();
        words.extend([
            "--root".into(),
            self.root.display().to_string(),
            "run".into(),
            "-b".into(),
            bundle.display().to_string(),
            id.into(),
        ]);
        words.join(" ")
    }

    /// One `run`: its wall-clock time, or why it failed (exit status and stderr).
    fn run_once(&self, bundle: &Path, id: &str) -> std::result::Result<Duration, String> {
        let mut cmd = self.command(bundle, id);
        let start = Instant::now();
        let out = cmd.output();
        let elapsed = start.elapsed();
        match out {
            Ok(out) if out.status.success() => Ok(elapsed),
            Ok(out) => {
                // Leave no container behind in case the failure was after create.
                let _ = Command::new(&self.argv_prefix[0])
                    .args(&self.argv_prefix[1..])
                    .arg("--root")
                    .arg(&self.root)
                    .args(["delete", "-f", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let stderr = String::from_utf8_lossy(&out.stderr);
                let stdout = String::from_utf8_lossy(&out.stdout);
                let text = [stderr.trim(), stdout.trim()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(format!(
                    "{} exited with {}: {}",
                    self.command_line(bundle, id),
                    out.status,
                    if text.is_empty() {
                        "(no output)"
                    } else {
                        &text
                    }
                ))
            }
            Err(e) => Err(format!("{}: {e}", self.command_line(bundle, id))),
        }
    }
}

fn runtime(opts: &Options) -> Result<()> {
    let root = util::workspace_root();
    let target = util::target_dir();

    // Peers first, so a failed install stops us before the long build.
    if opts.install_peers {
        let wanted: Vec<(&str, &str)> = PEERS.iter().map(|(_, pkg, path)| (*pkg, *path)).collect();
        util::ensure_packages(&wanted)?;
    }
    let mut notes: Vec<String> = Vec::new();
    let mut peers: Vec<(String, PathBuf)> = Vec::new();
    for (name, pkg, _) in PEERS {
        match find_in_path(name) {
            Some(path) => peers.push((name.to_string(), path)),
            None => {
                let note = format!(
                    "{name}: skipped, not installed (`apt-get install {pkg}` or pass --install-peers)"
                );
                println!("bench: {note}");
                notes.push(note);
            }
        }
    }

    println!("bench: building berth (release)");
    util::run_inherit(util::cargo().args(["build", "--release", "-p", "berth-cli"]))?;
    let berth = target.join("release/berth");
    if !berth.is_file() {
        bail!("{} missing after the build", berth.display());
    }
    let images = images::build(&target)?;

    // Scratch dir: one bundle, one --root per runtime.
    let tmp =
        TempDir(std::env::temp_dir().join(format!("berth-bench-runtime-{}", std::process::id())));
    if tmp.0.exists() {
        std::fs::remove_dir_all(&tmp.0)?;
    }
    let bundle = tmp.0.join("bundle");
    std::fs::create_dir_all(&bundle).with_context(|| format!("create {}", bundle.display()))?;
    util::run(
        Command::new("cp")
            .arg("-a")
            .arg(images.rootfs())
            .arg(bundle.join("rootfs")),
    )?;
    util::run(
        Command::new(&berth)
            .args(["runtime", "spec", "-b"])
            .arg(&bundle),
    )?;
    let config_path = bundle.join("config.json");
    let config_summary = edit_config(&config_path)?;

    let berth_version = format!(
        "{} ({})",
        util::run(Command::new(&berth).arg("--version"))?.trim(),
        git_describe(&root)
    );
    let mut runtimes = vec![Runtime {
        name: "berth".into(),
        argv_prefix: vec![berth.display().to_string(), "runtime".into()],
        root: tmp.0.join("root-berth"),
        version: berth_version,
        samples: Vec::new(),
    }];
    for (name, path) in peers {
        let version = match util::run(Command::new(&path).arg("--version")) {
            Ok(v) => first_lines(&v, 2),
            Err(e) => format!("unknown ({e:#})"),
        };
        runtimes.push(Runtime {
            root: tmp.0.join(format!("root-{name}")),
            name,
            argv_prefix: vec![path.display().to_string()],
            version,
            samples: Vec::new(),
        });
    }
    for rt in &runtimes {
        std::fs::create_dir_all(&rt.root)?;
    }
    let versions: Vec<(String, String)> = runtimes
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let command_lines: Vec<(String, String)> = runtimes
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.command_line(&bundle, &format!("bench-{}-<i>", r.name)),
            )
        })
        .collect();
    let load_before = loadavg();

    // Warm-up (also the check that each runtime accepts the bundle at all).
    println!("bench: {} warm-up run(s) each", opts.warmup.max(1));
    for i in 0..opts.warmup.max(1) {
        interleaved_round(
            &mut runtimes,
            &bundle,
            &format!("warmup{i}"),
            false,
            &mut notes,
        )?;
    }
    println!(
        "bench: {} timed run(s) each of {} (interleaved)",
        opts.runs,
        runtimes
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in 0..opts.runs {
        interleaved_round(&mut runtimes, &bundle, &i.to_string(), true, &mut notes)?;
        if (i + 1) % 50 == 0 && i + 1 < opts.runs {
            println!("bench: {}/{}", i + 1, opts.runs);
        }
    }
    let load_after = loadavg();

    let stats: Vec<(String, Stats)> = runtimes
        .iter()
        .map(|r| (r.name.clone(), Stats::of(&r.samples)))
        .collect();
    let table = table(&stats);
    let ratios = ratios(&stats);
    println!("\n{table}");
    for r in &ratios {
        println!("{r}");
    }
    for n in &notes {
        println!("note: {n}");
    }

    let report = Report {
        opts,
        machine: machine(),
        load: format!("{load_before} (before), {load_after} (after)"),
        versions,
        config_summary,
        command_lines,
        table,
        ratios,
        notes,
    };
    let docs = root.join("docs/benchmarks.md");
    write_section(&docs, SECTION, &report.markdown()?)?;
    println!(
        "bench: wrote the \"{SECTION}\" section of {}",
        docs.display()
    );
    // docker run through berth-runc vs through runc: fewer runs, each takes ~0.5 s.
    let docker_runs = (opts.runs / 5).max(10);
    let rootfs_tar = images.dir.join("busybox-rootfs.tar");
    if let Some(skipped) = super::docker_runtime::bench(
        &berth,
        &rootfs_tar,
        docker_runs,
        opts.warmup.min(3),
        opts.install_peers,
    )? {
        println!("bench: {skipped}");
    }
    Ok(())
}

/// One run of each runtime still in, in order. A failing peer is reported and
/// dropped; a failing berth ends the benchmark.
fn interleaved_round(
    runtimes: &mut Vec<Runtime>,
    bundle: &Path,
    tag: &str,
    record: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    let mut failed = Vec::new();
    for (idx, rt) in runtimes.iter_mut().enumerate() {
        let id = format!("bench-{}-{tag}", rt.name);
        match rt.run_once(bundle, &id) {
            Ok(d) if record => rt.samples.push(d),
            Ok(_) => {}
            Err(why) if idx == 0 => bail!("berth failed: {why}"),
            Err(why) => {
                let phase = if record { "timed run" } else { "warm-up" };
                let note = format!("{}: excluded, failed in {phase} {tag}: {why}", rt.name);
                println!("bench: {note}");
                notes.push(note);
                failed.push(idx);
            }
        }
    }
    for idx in failed.into_iter().rev() {
        runtimes.remove(idx);
    }
    Ok(())
}

/// Set the process to a non-terminal `/bin/true`; return a one-paragraph summary of the config.
fn edit_config(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut config: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let process = config
        .get_mut("process")
        .and_then(|p| p.as_object_mut())
        .context("config.json from `berth runtime spec` has no process")?;
    process.insert("terminal".into(), false.into());
    process.insert("args".into(), serde_json::json!(["/bin/true"]));
    std::fs::write(path, serde_json::to_string_pretty(&config)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;

    let linux = &config["linux"];
    let namespaces: Vec<&str> = linux["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["type"].as_str()).collect())
        .unwrap_or_default();
    let mounts: Vec<&str> = config["mounts"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["destination"].as_str()).collect())
        .unwrap_or_default();
    let seccomp = &linux["seccomp"];
    let seccomp = if seccomp.is_object() {
        let rules = seccomp["syscalls"].as_array().map_or(0, Vec::len);
        let names: usize = seccomp["syscalls"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["names"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        format!(
            "berth's default seccomp profile (default action {}, {rules} rules naming {names} syscalls)",
            seccomp["defaultAction"].as_str().unwrap_or("?")
        )
    } else {
        "no seccomp".into()
    };
    let caps = process_caps(&config);
    Ok(format!(
        "`berth runtime spec` output with `process.terminal = false` and `process.args = [\"/bin/true\"]`, \
         nothing else changed: rootfs `rootfs` (a copy of the busybox test rootfs, readonly: {}), \
         namespaces {}, mounts {}, {seccomp}, capabilities {caps}, noNewPrivileges {}, no cgroupsPath \
         (each runtime picks its default), no resource limits.",
        config["root"]["readonly"].as_bool().unwrap_or(false),
        namespaces.join(", "),
        mounts.join(", "),
        config["process"]["noNewPrivileges"].as_bool().unwrap_or(false),
    ))
}

fn process_caps(config: &serde_json::Value) -> String {
    config["process"]["capabilities"]["bounding"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "(none)".into())
}

fn table(stats: &[(String, Stats)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| runtime | runs | min ms | median ms | mean ms | p90 ms | max ms |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (name, s) in stats {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.n, s.min, s.median, s.mean, s.p90, s.max
        );
    }
    out
}

fn ratios(stats: &[(String, Stats)]) -> Vec<String> {
    let Some((_, berth)) = stats.first() else {
        return Vec::new();
    };
    if stats.len() == 1 {
        return vec!["no peer ran, so no ratios".into()];
    }
    stats[1..]
        .iter()
        .map(|(name, s)| {
            let r = s.median / berth.median;
            let verdict = if r >= 1.0 {
                format!("berth is {r:.2}x as fast")
            } else {
                format!("berth takes {:.2}x as long", 1.0 / r)
            };
            format!(
                "{name} / berth (median): {:.2} ms / {:.2} ms = {r:.2} ({verdict})",
                s.median, berth.median
            )
        })
        .collect()
}

struct Report<'a> {
    opts: &'a Options,
    machine: Vec<(String, String)>,
    load: String,
    versions: Vec<(String, String)>,
    config_summary: String,
    command_lines: Vec<(String, String)>,
    table: String,
    ratios: Vec<String>,
    notes: Vec<String>,
}

impl Report<'_> {
    fn markdown(&self) -> Result<String> {
        let date = util::run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into());
        let mut md = String::new();
        let _ = writeln!(md, "{SECTION}\n");
        let _ = writeln!(
            md,
            "Wall-clock time of one `run` of `/bin/true` in a busybox bundle, from spawning the runtime's \
             command line to its exit (create namespaces, mounts, cgroups, seccomp, exec, wait, delete). \
             {} timed runs per runtime after {} warm-up run(s), interleaved (one run of each runtime in turn) \
             so machine noise hits all alike; a fresh container id per run, a separate `--root` per runtime, \
             output captured, stdin /dev/null. Regenerate with `cargo xtask bench runtime --runs {}{}`.\n",
            self.opts.runs,
            self.opts.warmup.max(1),
            self.opts.runs,
            if self.opts.install_peers { " --install-peers" } else { "" },
        );
        let _ = writeln!(md, "- date: {date}");
        for (k, v) in &self.machine {
            let _ = writeln!(md, "- {k}: {v}");
        }
        let _ = writeln!(md, "- load average: {}", self.load);
        for (name, v) in &self.versions {
            let _ = writeln!(md, "- {name}: {v}");
        }
        let _ = writeln!(md);
        md.push_str(&self.table);
        let _ = writeln!(md);
        for r in &self.ratios {
            let _ = writeln!(md, "- {r}");
        }
        let _ = writeln!(md);
        if !self.notes.is_empty() {
            let _ = writeln!(md, "Peers left out or changed:\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {}", n.replace('\n', " "));
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(md, "Bundle: {}\n", self.config_summary);
        let _ = writeln!(
            md,
            "Command lines (`<i>` = warmup0.. then 0..{}; the same bundle and config.json for all):\n",
            self.opts.runs - 1
        );
        let _ = writeln!(md, "```");
        for (_, line) in &self.command_lines {
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(md, "```\n");
        Ok(md)
    }
}
