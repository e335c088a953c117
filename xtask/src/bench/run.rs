//! `cargo xtask bench run`: wall-clock time of `berth run --rm --network none bb true`
//! against `docker run`, `podman run` and `runc run` / `crun run` of a bundle (where
//! installed and working), and the peak RSS of berth's per-container monitor against
//! conmon's and containerd-shim-runc-v2's; written to docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{
    date_utc, engine_peer, find_in_path, git_describe, loadavg, loaded_reference, machine,
    mounts_under, version_of, write_section, Options, Stats, TempDir,
};
use crate::{images, util};

/// Heading of this benchmark's section in docs/benchmarks.md.
const SECTION: &str = "## Container run";
const DEFAULT_RUNS: usize = 100;
const DEFAULT_WARMUP: usize = 3;
/// How many detached containers the monitor RSS is sampled on.
const RSS_SAMPLES: usize = 5;
/// The tag the busybox test image gets in the scratch berth store.
const IMAGE: &str = "bb";
pub(super) const USAGE: &str = "cargo xtask bench run [--runs N] [--warmup N] [--berth PATH]";

/// `cargo xtask bench run [--runs N] [--warmup N] [--berth PATH]`: loads the busybox test
/// image into a scratch berth store (a temporary `--root` and `--run-root`) and times
/// `berth run --rm --network none bb true`, side by side with `docker run` / `podman run`
/// of the same image and `runc run` / `crun run` (and `berth runtime run`, for reference)
/// of a bundle made from the busybox rootfs with `berth runtime spec`; N runs each
/// (default 100) interleaved, after a few warm-up rounds. Peers that are not installed or
/// do not work here are skipped, saying why. Then starts a few `berth run -d bb sleep 1000`
/// and reads the peak RSS (VmHWM) of their monitors, and the same for conmon /
/// containerd-shim-runc-v2 where a working podman / docker starts them. Writes the
/// `## Container run` section of docs/benchmarks.md.
/// `--berth PATH` benchmarks that binary instead of building berth-cli (release).
pub(super) fn main(args: &[String]) -> Result<()> {
    let mut rest = Vec::new();
    let mut berth = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(p) = a.strip_prefix("--berth=") {
            berth = Some(PathBuf::from(p));
        } else if a == "--berth" {
            berth = Some(PathBuf::from(it.next().context("--berth needs a path")?));
        } else {
            rest.push(a.clone());
        }
    }
    let opts = Options::parse(&rest, DEFAULT_RUNS, DEFAULT_WARMUP, false, USAGE)?;
    bench(&opts, berth)
}

/// How one contender starts a container.
enum Kind {
    /// `berth --root R --run-root RR run --rm --network none bb true`.
    BerthRun,
    /// `BIN run --rm --network none IMAGE true` (docker, podman).
    Engine { bin: PathBuf, image: String },
    /// `PREFIX --root ROOT run -b BUNDLE ID` (runc, crun, berth runtime).
    Oci { prefix: Vec<String>, root: PathBuf },
}

struct Contender {
    name: String,
    version: String,
    kind: Kind,
    samples: Vec<Duration>,
}

/// Paths shared by every run.
struct Env {
    berth: PathBuf,
    root: PathBuf,
    run_root: PathBuf,
    bundle: PathBuf,
}

impl Env {
    /// `berth --root R --run-root RR ARGS`.
    fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.berth);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run_root)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }
}

impl Contender {
    fn argv(&self, env: &Env, id: &str) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        match &self.kind {
            Kind::BerthRun => [
                s(&env.berth),
                "--root".into(),
                s(&env.root),
                "--run-root".into(),
                s(&env.run_root),
            ]
            .into_iter()
            .chain(
                ["run", "--rm", "--network", "none", IMAGE, "true"]
                    .into_iter()
                    .map(String::from),
            )
            .collect(),
            Kind::Engine { bin, image } => [s(bin), "run".into(), "--rm".into()]
                .into_iter()
                .chain(["--network".into(), "none".into()])
                .chain(super::PEER_ULIMITS.map(String::from))
                .chain([image.clone(), "true".into()])
                .collect(),
            Kind::Oci { prefix, root } => {
                let mut v = prefix.clone();
                v.extend([
                    "--root".into(),
                    s(root),
                    "run".into(),
                    "-b".into(),
                    s(&env.bundle),
                    id.into(),
                ]);
                v
            }
        }
    }

    /// One run: its wall-clock time, or why it failed (exit status and output).
    fn run_once(&self, env: &Env, id: &str) -> std::result::Result<Duration, String> {
        let argv = self.argv(env, id);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let out = cmd.output();
        let elapsed = start.elapsed();
        match out {
            Ok(out) if out.status.success() => Ok(elapsed),
            Ok(out) => {
                if let Kind::Oci { prefix, root } = &self.kind {
                    // Leave no container behind in case the failure was after create.
                    let _ = Command::new(&prefix[0])
                        .args(&prefix[1..])
                        .arg("--root")
                        .arg(root)
                        .args(["delete", "-f", id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
                let text = [&out.stderr, &out.stdout]
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n");
                Err(format!(
                    "{} exited with {}: {}",
                    argv.join(" "),
                    out.status,
                    if text.is_empty() {
                        "(no output)"
                    } else {
                        &text
                    }
                ))
            }
            Err(e) => Err(format!("{}: {e}", argv.join(" "))),
        }
    }
}

/// On every way out: `berth rm -f` whatever containers are left in the scratch store and
/// lazily unmount anything still mounted under the scratch dir, before `TempDir` removes it.
struct Cleanup<'a> {
    env: &'a Env,
    tmp: &'a Path,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Ok(ids) = util::run(&mut self.env.berth(&["ps", "-aq", "--no-trunc"])) {
            for id in ids.split_whitespace() {
                let _ = self
                    .env
                    .berth(&["rm", "-f", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for m in mounts_under(self.tmp).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

fn bench(opts: &Options, given_berth: Option<PathBuf>) -> Result<()> {
    let root = util::workspace_root();
    let target = util::target_dir();

    let berth = super::berth_binary(given_berth.as_deref())?;
    let berth_version = match &given_berth {
        None => format!(
            "{} (release build of {})",
            version_of(&berth, &["--version"]),
            git_describe(&root)
        ),
        Some(_) => format!(
            "{} (the binary given with --berth {})",
            version_of(&berth, &["--version"]),
            berth.display()
        ),
    };
    let images = images::build(&target)?;

    let tmp = TempDir(std::env::temp_dir().join(format!("berth-bench-run-{}", std::process::id())));
    if tmp.0.exists() {
        std::fs::remove_dir_all(&tmp.0)?;
    }
    std::fs::create_dir_all(&tmp.0)?;
    let env = Env {
        berth: berth.clone(),
        root: tmp.0.join("root"),
        run_root: tmp.0.join("run"),
        bundle: tmp.0.join("bundle"),
    };
    // Dropped before `tmp`: containers and mounts go before the directory does.
    let _cleanup = Cleanup {
        env: &env,
        tmp: &tmp.0,
    };

    // The image: the busybox OCI layout as a tar, loaded and tagged `bb`.
    let archive = tmp.0.join("busybox-oci.tar");
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(images.dir.join("busybox-oci"))
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    )?;
    let loaded = util::run(&mut env.berth(&["load", "-i", &archive.display().to_string()]))?;
    let id = loaded_reference(&loaded)
        .with_context(|| format!("berth load printed no image: {}", loaded.trim()))?;
    util::run(&mut env.berth(&["tag", &id, IMAGE]))?;
    // Peers load the docker-archive `berth save` makes: docker 20.10 cannot load
    // an OCI layout.
    let peer_archive = tmp.0.join("busybox-docker.tar");
    util::run(&mut env.berth(&["save", "-o", &peer_archive.display().to_string(), IMAGE]))?;
    println!("bench: loaded the busybox test image as {IMAGE} ({id})");

    // The bundle for the OCI runtimes, as `bench runtime` makes it.
    std::fs::create_dir_all(&env.bundle)?;
    util::run(
        Command::new("cp")
            .arg("-a")
            .arg(images.rootfs())
            .arg(env.bundle.join("rootfs")),
    )?;
    util::run(
        Command::new(&berth)
            .args(["runtime", "spec", "-b"])
            .arg(&env.bundle),
    )?;
    edit_config(&env.bundle.join("config.json"))?;

    let mut notes: Vec<String> = Vec::new();
    let mut contenders = vec![Contender {
        name: "berth run".into(),
        version: berth_version.clone(),
        kind: Kind::BerthRun,
        samples: Vec::new(),
    }];
    let mut engine_images: Vec<(PathBuf, String)> = Vec::new();
    // Docker installed but no daemon running: a private one, for the comparison.
    let _dockerd = super::dockerd::for_peers("run", &[]);
    for name in ["docker", "podman"] {
        match engine_peer(name, &peer_archive) {
            Ok((bin, version, image)) => {
                engine_images.push((bin.clone(), image.clone()));
                contenders.push(Contender {
                    name: format!("{name} run"),
                    version,
                    kind: Kind::Engine { bin, image },
                    samples: Vec::new(),
                });
            }
            Err(why) => note(&mut notes, format!("{name} run: skipped: {why}")),
        }
    }
    for name in ["runc", "crun"] {
        match find_in_path(name) {
            Some(bin) => contenders.push(Contender {
                name: format!("{name} run"),
                version: version_of(&bin, &["--version"]),
                kind: Kind::Oci {
                    prefix: vec![bin.display().to_string()],
                    root: tmp.0.join(format!("root-{name}")),
                },
                samples: Vec::new(),
            }),
            None => note(
                &mut notes,
                format!("{name} run: skipped: {name} is not installed"),
            ),
        }
    }
    contenders.push(Contender {
        name: "berth runtime run".into(),
        version: berth_version.clone(),
        kind: Kind::Oci {
            prefix: vec![berth.display().to_string(), "runtime".into()],
            root: tmp.0.join("root-berth-runtime"),
        },
        samples: Vec::new(),
    });
    for c in &contenders {
        if let Kind::Oci { root, .. } = &c.kind {
            std::fs::create_dir_all(root)?;
        }
    }
    let versions: Vec<(String, String)> = contenders
        .iter()
        .map(|c| (c.name.clone(), c.version.clone()))
        .collect();
    let command_lines: Vec<String> = contenders
        .iter()
        .map(|c| {
            c.argv(&env, &format!("bench-{}-<i>", c.name.replace(' ', "-")))
                .join(" ")
        })
        .collect();
    let load_before = loadavg();

    println!("bench: {} warm-up round(s)", opts.warmup.max(1));
    for i in 0..opts.warmup.max(1) {
        round(
            &mut contenders,
            &env,
            &format!("warmup{i}"),
            false,
            &mut notes,
        )?;
    }
    println!(
        "bench: {} timed run(s) each of {} (interleaved)",
        opts.runs,
        contenders
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in 0..opts.runs {
        round(&mut contenders, &env, &i.to_string(), true, &mut notes)?;
        if (i + 1) % 25 == 0 && i + 1 < opts.runs {
            println!("bench: {}/{}", i + 1, opts.runs);
        }
    }
    let load_after = loadavg();
    let left = util::run(&mut env.berth(&["ps", "-aq"]))?;
    if !left.trim().is_empty() {
        note(
            &mut notes,
            format!(
                "berth run --rm left containers behind: {}",
                left.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        );
    }

    // Peak RSS of the monitors: berth's steady state (berth-monitor, when it is
    // next to berth), then a copy of berth alone, whose monitor relays in-process:
    // its peak is the setup phase's, which the exec into berth-monitor leaves behind.
    println!("bench: peak RSS of {RSS_SAMPLES} berth monitors");
    let mut rss = vec![berth_monitors(&env)?];
    if rss[0].slim {
        let lone = tmp.0.join("lone/berth");
        std::fs::create_dir_all(tmp.0.join("lone"))?;
        if std::fs::hard_link(&berth, &lone).is_err() {
            std::fs::copy(&berth, &lone).with_context(|| format!("copy {}", berth.display()))?;
        }
        println!("bench: peak RSS of {RSS_SAMPLES} in-process berth monitors (setup phase)");
        let alone = Env {
            berth: lone,
            root: env.root.clone(),
            run_root: env.run_root.clone(),
            bundle: env.bundle.clone(),
        };
        rss.push(berth_monitors(&alone)?);
    }
    for (shim, engine) in [("conmon", "podman"), ("containerd-shim-runc-v2", "docker")] {
        if find_in_path(shim).is_none() {
            note(&mut notes, format!("{shim}: skipped: not installed"));
            continue;
        }
        let Some((bin, image)) = engine_images
            .iter()
            .find(|(b, _)| b.file_name().is_some_and(|n| n == engine))
        else {
            note(
                &mut notes,
                format!("{shim}: skipped: installed, but there is no working {engine} to start it"),
            );
            continue;
        };
        match peer_monitors(shim, bin, image) {
            Ok(m) => rss.push(m),
            Err(e) => note(&mut notes, format!("{shim}: skipped: {e:#}")),
        }
    }
    for (bin, image) in &engine_images {
        let _ = Command::new(bin)
            .args(["rmi", "-f", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    let left = util::run(&mut env.berth(&["ps", "-aq"]))?;
    let mounts = mounts_under(&tmp.0);
    let leftovers = if left.trim().is_empty() && mounts.is_empty() {
        "nothing: `berth ps -a` empty and no mount under the scratch dir in /proc/self/mountinfo"
            .to_string()
    } else {
        format!(
            "containers [{}], mounts [{}]",
            left.split_whitespace().collect::<Vec<_>>().join(" "),
            mounts.join(" ")
        )
    };
    println!("bench: left behind after the runs: {leftovers}");

    let stats: Vec<(String, Stats)> = contenders
        .iter()
        .map(|c| (c.name.clone(), Stats::of(&c.samples)))
        .collect();
    let table = table(&stats);
    let ratios = ratios(&stats);
    let rss_table = rss_table(&rss);
    println!("\n{table}");
    for r in &ratios {
        println!("{r}");
    }
    println!("\n{rss_table}");
    println!("{}", rss[0].breakdown);
    for n in &notes {
        println!("note: {n}");
    }

    let report = Report {
        opts,
        given_berth: given_berth.as_deref(),
        berth: &berth,
        machine: machine(),
        load: format!("{load_before} (before), {load_after} (after)"),
        versions,
        command_lines,
        table,
        ratios,
        rss_table,
        rss: &rss,
        leftovers,
        notes,
        tmp: &tmp.0,
    };
    let docs = root.join("docs/benchmarks.md");
    write_section(&docs, SECTION, &report.markdown())?;
    println!(
        "bench: wrote the \"{SECTION}\" section of {}",
        docs.display()
    );
    Ok(())
}

fn note(notes: &mut Vec<String>, n: String) {
    println!("bench: {n}");
    notes.push(n);
}

/// One run of each contender still in, in order. A failing peer is reported and dropped;
/// a failing `berth run` ends the benchmark.
fn round(
    contenders: &mut Vec<Contender>,
    env: &Env,
    tag: &str,
    record: bool,
    notes: &mut Vec<String>,
) -> Result<()> {
    let mut failed = Vec::new();
    for (idx, c) in contenders.iter_mut().enumerate() {
        let id = format!("bench-{}-{tag}", c.name.replace(' ', "-"));
        match c.run_once(env, &id) {
            Ok(d) if record => c.samples.push(d),
            Ok(_) => {}
            Err(why) if idx == 0 => bail!("berth run failed: {why}"),
            Err(why) => {
                let phase = if record { "timed run" } else { "warm-up" };
                let note = format!("{}: excluded, failed in {phase} {tag}: {why}", c.name);
                println!("bench: {note}");
                notes.push(note);
                failed.push(idx);
            }
        }
    }
    for idx in failed.into_iter().rev() {
        contenders.remove(idx);
    }
    Ok(())
}

/// A non-terminal `/bin/true`, the rest as `berth runtime spec` wrote it.
fn edit_config(path: &Path) -> Result<()> {
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
        .with_context(|| format!("write {}", path.display()))
}

/// Peak RSS samples of one kind of monitor.
struct Monitors {
    name: String,
    /// VmHWM, VmRSS and Pss (smaps_rollup), KiB, one per container.
    hwm: Vec<u64>,
    rss: Vec<u64>,
    pss: Vec<u64>,
    /// Whether it is berth's slim steady-state monitor, `berth-monitor`.
    slim: bool,
    /// What the first one's resident memory is made of (markdown).
    breakdown: String,
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: i32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Pss of a process (shared pages divided among their users), KiB.
fn pss_kib(pid: i32) -> Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("read /proc/{pid}/smaps_rollup"))?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no Pss in /proc/{pid}/smaps_rollup"))
}

/// Start RSS_SAMPLES `berth run -d bb sleep 1000`, read VmHWM of each monitor a second later,
/// then `berth rm -f` them.
fn berth_monitors(env: &Env) -> Result<Monitors> {
    let mut ids = Vec::new();
    let result = (|| -> Result<Monitors> {
        for _ in 0..RSS_SAMPLES {
            let out = util::run(&mut env.berth(&[
                "run",
                "-d",
                "--network",
                "none",
                IMAGE,
                "sleep",
                "1000",
            ]))?;
            ids.push(out.trim().to_string());
        }
        std::thread::sleep(Duration::from_secs(1));
        let mut m = Monitors {
            name: String::new(),
            hwm: Vec::new(),
            rss: Vec::new(),
            pss: Vec::new(),
            slim: false,
            breakdown: String::new(),
        };
        for id in &ids {
            let record = env.root.join("containers").join(id).join("container.json");
            let text = std::fs::read_to_string(&record)
                .with_context(|| format!("read {}", record.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            let pid = v["state"]["monitor_pid"]
                .as_i64()
                .filter(|p| *p > 0)
                .with_context(|| format!("no running monitor in {}", record.display()))?
                as i32;
            m.hwm.push(status_kib(pid, "VmHWM")?);
            m.rss.push(status_kib(pid, "VmRSS")?);
            m.pss.push(pss_kib(pid)?);
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .with_context(|| format!("read /proc/{pid}/exe"))?;
            m.slim = exe.file_name().is_some_and(|n| n == "berth-monitor");
            m.name = if m.slim {
                "berth monitor, steady state (`berth-monitor`, execed into by `berth __monitor` after the start)".into()
            } else {
                "berth monitor, in-process (`berth __monitor`, no berth-monitor beside berth): its peak is the setup phase's".into()
            };
            if m.breakdown.is_empty() {
                m.breakdown = breakdown(pid, &exe)?;
            }
        }
        Ok(m)
    })();
    for id in &ids {
        let _ = env
            .berth(&["rm", "-f", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    result
}

/// The same for conmon (podman) or containerd-shim-runc-v2 (docker).
fn peer_monitors(shim: &str, engine: &Path, image: &str) -> Result<Monitors> {
    let mut ids = Vec::new();
    let result = (|| -> Result<Monitors> {
        for _ in 0..RSS_SAMPLES {
            let out = util::run(Command::new(engine).args([
                "run",
                "-d",
                "--network",
                "none",
                super::PEER_ULIMITS[0],
                super::PEER_ULIMITS[1],
                super::PEER_ULIMITS[2],
                super::PEER_ULIMITS[3],
                image,
                "sleep",
                "1000",
            ]))?;
            ids.push(out.trim().to_string());
        }
        std::thread::sleep(Duration::from_secs(1));
        let mut m = Monitors {
            name: shim.into(),
            hwm: Vec::new(),
            rss: Vec::new(),
            pss: Vec::new(),
            slim: false,
            breakdown: String::new(),
        };
        for id in &ids {
            let pid = pid_by_cmdline(shim, id)
                .with_context(|| format!("no {shim} process naming container {id}"))?;
            m.hwm.push(status_kib(pid, "VmHWM")?);
            m.rss.push(status_kib(pid, "VmRSS")?);
            m.pss.push(pss_kib(pid)?);
        }
        Ok(m)
    })();
    for id in &ids {
        let _ = Command::new(engine)
            .args(["rm", "-f", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    result
}

/// A process whose command line starts with `prog` (as a path or name) and mentions `id`.
fn pid_by_cmdline(prog: &str, id: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let words: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let first = words.first()?;
        (first.rsplit('/').next() == Some(prog) && words.iter().any(|w| w.contains(id)))
            .then_some(pid)
    })
}

/// What a process's resident memory is made of: smaps_rollup, resident KiB by mapping
/// (from /proc/PID/smaps), thread count, and the size of the binary.
fn breakdown(pid: i32, binary: &Path) -> Result<String> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("read /proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("read /proc/{pid}/smaps"))?;
    // Resident KiB per mapping name (file path, [heap], [stack], or anonymous), and per
    // name split into file-backed clean pages and private dirty/anonymous ones.
    let mut by_name: Vec<(String, u64, u64)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            current = line
                .split_whitespace()
                .nth(5)
                .unwrap_or("[anonymous]")
                .to_string();
            continue;
        }
        let kib = |w: Option<&str>| w.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (rss, dirty) = match first {
            "Rss:" => (kib(words.next()), 0),
            "Private_Dirty:" => (0, kib(words.next())),
            _ => continue,
        };
        match by_name.iter_mut().find(|(n, _, _)| *n == current) {
            Some(e) => {
                e.1 += rss;
                e.2 += dirty;
            }
            None => by_name.push((current.clone(), rss, dirty)),
        }
    }
    by_name.sort_by_key(|e| std::cmp::Reverse(e.1));
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let size = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0);
    let text_size = util::run(Command::new("size").arg(binary))
        .ok()
        .and_then(|s| {
            let line = s
                .lines()
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()?;
            Some(line)
        });
    let mut md = String::new();
    let _ = writeln!(
        md,
        "One berth monitor (pid {pid}, {threads} thread(s)) a second after start, from \
         /proc/{pid}/smaps_rollup: Rss {} KiB = file-backed {} KiB + anonymous {} KiB; \
         Private_Dirty {} KiB, Shared_Clean {} KiB, Private_Clean {} KiB; Pss {} KiB. \
         Its executable, `{}`, is {:.1} MiB on disk{}.\n",
        field("Rss"),
        field("Rss").saturating_sub(field("Anonymous")),
        field("Anonymous"),
        field("Private_Dirty"),
        field("Shared_Clean"),
        field("Private_Clean"),
        field("Pss"),
        binary.file_name().unwrap_or_default().to_string_lossy(),
        size as f64 / (1024.0 * 1024.0),
        text_size.map_or(String::new(), |t| format!(
            " (text {:.1} MiB, by `size`)",
            t as f64 / (1024.0 * 1024.0)
        )),
    );
    let _ = writeln!(
        md,
        "| mapping | resident KiB | of which private dirty KiB |"
    );
    let _ = writeln!(md, "|---|---:|---:|");
    for (name, rss, dirty) in by_name.iter().filter(|e| e.1 > 0).take(8) {
        let _ = writeln!(md, "| `{name}` | {rss} | {dirty} |");
    }
    let rest: (u64, u64) = by_name
        .iter()
        .skip(8)
        .fold((0, 0), |acc, e| (acc.0 + e.1, acc.1 + e.2));
    if rest.0 > 0 {
        let _ = writeln!(md, "| (everything else) | {} | {} |", rest.0, rest.1);
    }
    Ok(md)
}

fn table(stats: &[(String, Stats)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| command | runs | min ms | median ms | mean ms | p90 ms | max ms |"
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

/// Ratios of medians, peer / `berth run`, with the issue's aims where they apply.
fn ratios(stats: &[(String, Stats)]) -> Vec<String> {
    let Some((_, berth)) = stats.first() else {
        return Vec::new();
    };
    let median = |name: &str| stats.iter().find(|(n, _)| n == name).map(|(_, s)| s.median);
    let mut out: Vec<String> = stats[1..]
        .iter()
        .map(|(name, s)| {
            let r = s.median / berth.median;
            let verdict = if r >= 1.0 {
                format!("berth run is {r:.2}x as fast")
            } else {
                format!("berth run takes {:.2}x as long", 1.0 / r)
            };
            format!(
                "{name} / berth run (median): {:.2} ms / {:.2} ms = {r:.2} ({verdict})",
                s.median, berth.median
            )
        })
        .collect();
    out.push(match median("docker run") {
        Some(d) => {
            let r = d / berth.median;
            format!(
                "aim \"at least 5x faster than docker run\": docker run / berth run = {r:.2}: {}",
                if r >= 5.0 { "met" } else { "not met" }
            )
        }
        None => {
            "aim \"at least 5x faster than docker run\": not measured (docker run did not run here)"
                .into()
        }
    });
    out.push(match median("crun run") {
        Some(c) => {
            let r = berth.median / c;
            format!(
                "aim \"within 2x of crun run\": berth run / crun run = {r:.2}: {}",
                if r <= 2.0 { "met" } else { "not met" }
            )
        }
        None => {
            let mut s = "aim \"within 2x of crun run\": not measured (crun run did not run here)"
                .to_string();
            if let Some(r) = median("runc run") {
                let _ = write!(
                    s,
                    "; against runc run instead, berth run / runc run = {:.2} ({} 2x)",
                    berth.median / r,
                    if berth.median / r <= 2.0 {
                        "within"
                    } else {
                        "not within"
                    }
                );
            }
            s
        }
    });
    out
}

fn kib_stats(v: &[u64]) -> (u64, f64, u64) {
    let mut v = v.to_vec();
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        return (0, f64::NAN, 0);
    }
    let median = if n % 2 == 1 {
        v[n / 2] as f64
    } else {
        (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
    };
    (v[0], median, v[n - 1])
}

fn rss_table(rss: &[Monitors]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| monitor | samples | peak RSS (VmHWM) min KiB | median KiB | max KiB | RSS (VmRSS) median KiB | Pss median KiB |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for m in rss {
        let (min, median, max) = kib_stats(&m.hwm);
        let (_, rss_median, _) = kib_stats(&m.rss);
        let (_, pss_median, _) = kib_stats(&m.pss);
        let _ = writeln!(
            out,
            "| {} | {} | {min} | {median:.0} | {max} | {rss_median:.0} | {pss_median:.0} |",
            m.name,
            m.hwm.len()
        );
    }
    out
}

struct Report<'a> {
    opts: &'a Options,
    given_berth: Option<&'a Path>,
    berth: &'a Path,
    machine: Vec<(String, String)>,
    load: String,
    versions: Vec<(String, String)>,
    command_lines: Vec<String>,
    table: String,
    ratios: Vec<String>,
    rss_table: String,
    rss: &'a [Monitors],
    leftovers: String,
    notes: Vec<String>,
    tmp: &'a Path,
}

impl Report<'_> {
    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "{SECTION}\n");
        let _ = writeln!(
            md,
            "Wall-clock time of starting a container that runs `true`, from spawning the command line \
             to its exit: `berth run --rm --network none bb true` (create the record and the writable \
             snapshot, spawn the monitor, mount the rootfs, write the bundle, create and start the \
             container, wait, tear down, remove) side by side with `docker run` / `podman run` of the \
             same image and `runc run` / `crun run` of a bundle. The image is the busybox test image \
             (`<target>/test-images/busybox-oci` from `cargo xtask test-images`, as a tar) loaded into a \
             scratch berth store (temporary `--root` and `--run-root`) and tagged `bb`; the bundle is a \
             copy of its rootfs with `berth runtime spec`'s config.json, `process.args = [\"/bin/true\"]`, \
             `terminal = false` (as in `## Runtime start-up`). `berth runtime run` of that bundle is \
             timed too, for reference: it is the runtime part of `berth run`, so the difference is the \
             engine's own work. {} timed runs each after {} warm-up round(s), interleaved (one run of \
             each in turn); output captured, stdin /dev/null. Regenerate with \
             `cargo xtask bench run --runs {}{}`.\n",
            self.opts.runs,
            self.opts.warmup.max(1),
            self.opts.runs,
            match self.given_berth {
                Some(p) => format!(" --berth {}", p.display()),
                None => String::new(),
            },
        );
        let _ = writeln!(md, "- date: {}", date_utc());
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
        let _ = writeln!(
            md,
            "### Monitor memory\n\n\
             Peak resident set (VmHWM in /proc/PID/status) of the process that watches one running \
             container: {RSS_SAMPLES} containers started with `berth run -d --network none bb sleep 1000`, \
             the monitor's pid read from `<root>/containers/<id>/container.json` (`state.monitor_pid`), \
             VmHWM read after they had run for a second, then `berth rm -f`. Aim: under 2 MiB \
             (2048 KiB). After the start, `berth __monitor` execs (same pid, still the init's \
             parent) into the slim `berth-monitor` that relays until the exit; an execve starts a \
             new VmHWM, so the first row is the steady state only. The setup phase's peak is the \
             in-process row: the same containers from a copy of berth alone in a directory, whose \
             monitor relays in-process. VmRSS counts the shared pages of libc and the binary in \
             full; Pss divides them among the processes that map them.\n"
        );
        md.push_str(&self.rss_table);
        let _ = writeln!(md);
        if let Some(b) = self.rss.first() {
            let (_, median, _) = kib_stats(&b.hwm);
            let _ = writeln!(
                md,
                "- aim \"peak monitor RSS under 2 MiB\": median {median:.0} KiB = {:.2} MiB: {}\n",
                median / 1024.0,
                if median < 2048.0 { "met" } else { "not met" }
            );
            md.push_str(&b.breakdown);
            let _ = writeln!(md);
        }
        if !self.notes.is_empty() {
            let _ = writeln!(md, "Skipped or left out:\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {}", n.replace('\n', " "));
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(
            md,
            "Left behind in the scratch store after the runs: {}.\n",
            self.leftovers
        );
        let _ = writeln!(
            md,
            "Command lines (`<i>` = warmup0.. then 0..{}; scratch dir {}, removed afterwards):\n",
            self.opts.runs - 1,
            self.tmp.display()
        );
        let _ = writeln!(md, "```");
        for line in &self.command_lines {
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(
            md,
            "# monitor memory, {RSS_SAMPLES} times, then `rm -f` each (again with {} for the in-process monitor):\n{} --root {} --run-root {} run -d --network none {IMAGE} sleep 1000",
            self.tmp.join("lone/berth").display(),
            self.berth.display(),
            self.tmp.join("root").display(),
            self.tmp.join("run").display(),
        );
        let _ = writeln!(md, "```\n");
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_reference_parses_both_forms() {
        assert_eq!(
            loaded_reference("Loaded image: busybox:latest\n").as_deref(),
            Some("busybox:latest")
        );
        assert_eq!(
            loaded_reference("Loaded image ID: sha256:abc\n").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(loaded_reference(""), None);
    }

    #[test]
    fn kib_stats_median() {
        assert_eq!(kib_stats(&[3, 1, 2]), (1, 2.0, 3));
        assert_eq!(kib_stats(&[4, 1, 2, 3]), (1, 2.5, 4));
    }
}
