//! `cargo xtask bench build`: wall-clock time of building one Dockerfile (FROM the busybox
//! test image, ENV, ARG, 5 RUNs, COPY of a 20 MB file, WORKDIR, CMD) with `berth build`,
//! against `docker build`, `podman build` and `buildah bud` where installed and working:
//! cold (`--no-cache`), fully cached, and after a change to the last RUN. Written to
//! docs/benchmarks.md.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{
    date_utc, engine_peer, find_in_path, git_describe, loadavg, loaded_reference, machine,
    mounts_under, version_of, write_section, Options, Stats, TempDir,
};
use crate::{images, util};

const SECTION: &str = "## Build";
const DEFAULT_RUNS: usize = 5;
const IMAGE: &str = "bb";
const COPY_BYTES: usize = 20 * 1024 * 1024;
pub(super) const USAGE: &str = "cargo xtask bench build [--runs N] [--berth PATH]";

/// The benchmark's cases, in the order they run in each round.
const CASES: [&str; 3] = ["cold (--no-cache)", "fully cached", "last RUN changed"];

/// The Dockerfile; `tag` makes the last RUN differ between builds.
fn dockerfile(base: &str, tag: &str) -> String {
    format!(
        "FROM {base}\nENV APP=bench\nARG LEVEL=1\nRUN echo one > /one\nRUN echo two > /two\n\
         RUN echo three > /three\nRUN echo four > /four\nRUN echo $LEVEL-{tag} > /five\n\
         COPY big.bin /data/big.bin\nWORKDIR /data\nCMD [\"ls\", \"-l\"]\n"
    )
}

/// One builder: how it is invoked and its samples per case.
struct Tool {
    name: String,
    version: String,
    /// The command prefix up to the build verb's options (context and tag appended).
    argv: Vec<String>,
    /// The base image reference in this tool's store.
    base: String,
    /// The context directory (own Dockerfile, shared big.bin by hard link).
    context: PathBuf,
    samples: [Vec<Duration>; 3],
    /// Image ids the builds printed (removed from the peers' stores at the end).
    built: Vec<String>,
}

impl Tool {
    fn build(&mut self, no_cache: bool, last: &str) -> std::result::Result<Duration, String> {
        std::fs::write(
            self.context.join("Dockerfile"),
            dockerfile(&self.base, last),
        )
        .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]);
        if no_cache {
            cmd.arg("--no-cache");
        }
        cmd.args(["-q", "-t", "bench-build"])
            .arg(&self.context)
            .stdin(Stdio::null());
        let start = Instant::now();
        let out = cmd.output().map_err(|e| e.to_string())?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !id.is_empty() && !self.built.contains(&id) {
            self.built.push(id);
        }
        Ok(took)
    }
}

/// `cargo xtask bench build [--runs N] [--berth PATH]`.
pub(super) fn main(args: &[String]) -> Result<()> {
    let mut rest = Vec::new();
    let mut given = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(p) = a.strip_prefix("--berth=") {
            given = Some(PathBuf::from(p));
        } else if a == "--berth" {
            given = Some(PathBuf::from(it.next().context("--berth needs a path")?));
        } else {
            rest.push(a.clone());
        }
    }
    let opts = Options::parse(&rest, DEFAULT_RUNS, 1, false, USAGE)?;
    let root = util::workspace_root();
    let target = util::target_dir();
    let berth = super::berth_binary(given.as_deref())?;
    let berth_version = format!(
        "{} ({})",
        version_of(&berth, &["--version"]),
        match &given {
            None => format!("release build of {}", git_describe(&root)),
            Some(p) => format!("the binary given with --berth {}", p.display()),
        }
    );
    let test_images = images::build(&target)?;
    let tmp =
        TempDir(std::env::temp_dir().join(format!("berth-bench-build-{}", std::process::id())));
    if tmp.0.exists() {
        std::fs::remove_dir_all(&tmp.0)?;
    }
    std::fs::create_dir_all(&tmp.0)?;
    let _unmount = Unmount(tmp.0.clone());
    let archive = tmp.0.join("busybox-oci.tar");
    util::run(
        Command::new("tar")
            .arg("-C")
            .arg(test_images.dir.join("busybox-oci"))
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    )?;
    // The 20 MB file: incompressible, the same bytes for every tool.
    let big = tmp.0.join("big.bin");
    {
        let mut f = std::fs::File::create(&big)?;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = vec![0u8; COPY_BYTES];
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all(&buf)?;
    }
    let context_for = |name: &str| -> Result<PathBuf> {
        let dir = tmp.0.join(format!("ctx-{name}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::hard_link(&big, dir.join("big.bin"))?;
        Ok(dir)
    };

    // berth: a scratch store with the busybox image tagged `bb`.
    let berth_root = ["--root", "--run-root"]
        .iter()
        .zip(["root", "run"])
        .flat_map(|(f, d)| [f.to_string(), tmp.0.join(d).display().to_string()])
        .collect::<Vec<_>>();
    let berth_cmd = |args: &[&str]| {
        let mut c = Command::new(&berth);
        c.args(&berth_root).args(args);
        c
    };
    let loaded = util::run(&mut berth_cmd(&[
        "load",
        "-i",
        &archive.display().to_string(),
    ]))?;
    let id = loaded_reference(&loaded)
        .with_context(|| format!("berth load printed no image: {}", loaded.trim()))?;
    util::run(&mut berth_cmd(&["tag", &id, IMAGE]))?;
    // Peers load the docker-archive `berth save` makes: docker 20.10 cannot load
    // an OCI layout.
    let peer_archive = tmp.0.join("busybox-docker.tar");
    util::run(&mut berth_cmd(&[
        "save",
        "-o",
        &peer_archive.display().to_string(),
        IMAGE,
    ]))?;
    let mut argv = vec![berth.display().to_string()];
    argv.extend(berth_root.iter().cloned());
    argv.push("build".into());
    let mut tools = vec![Tool {
        name: "berth build".into(),
        version: berth_version,
        argv,
        base: IMAGE.into(),
        context: context_for("berth")?,
        samples: Default::default(),
        built: Vec::new(),
    }];
    let mut notes = Vec::new();
    // Docker installed but no daemon running: a private one, for the comparison.
    let _dockerd = super::dockerd::for_peers("build", &[]);
    for name in ["docker", "podman"] {
        match engine_peer(name, &peer_archive) {
            Ok((bin, version, image)) => tools.push(Tool {
                name: format!("{name} build"),
                version,
                argv: vec![bin.display().to_string(), "build".into()],
                base: image,
                context: context_for(name)?,
                samples: Default::default(),
                built: Vec::new(),
            }),
            Err(why) => notes.push(format!("{name} build: {why}")),
        }
    }
    match buildah_peer(&archive) {
        Ok((bin, version, image)) => tools.push(Tool {
            name: "buildah bud".into(),
            version,
            argv: vec![bin.display().to_string(), "bud".into()],
            base: image,
            context: context_for("buildah")?,
            samples: Default::default(),
            built: Vec::new(),
        }),
        Err(why) => notes.push(format!("buildah bud: {why}")),
    }

    // Rounds: cold, cached, last RUN changed; tools interleaved within each case.
    let mut failed: Vec<String> = Vec::new();
    for round in 0..(opts.warmup + opts.runs) {
        let warm = round < opts.warmup;
        let tag = format!("five-{round}");
        for case in 0..CASES.len() {
            for t in tools.iter_mut() {
                if failed.contains(&t.name) {
                    continue;
                }
                let res = match case {
                    0 => t.build(true, &tag),
                    1 => t.build(false, &tag),
                    _ => t.build(false, &format!("{tag}-changed")),
                };
                match res {
                    Ok(d) if !warm => t.samples[case].push(d),
                    Ok(_) => {}
                    Err(e) => {
                        notes.push(format!("{}: left out, a build failed: {e}", t.name));
                        failed.push(t.name.clone());
                    }
                }
            }
        }
        println!("bench: round {round} done");
    }
    // The peers' stores keep the base image (as `bench run` leaves it), not
    // the images built here (each build's id, tagged or left dangling).
    for t in &tools[1..] {
        let _ = Command::new(&t.argv[0])
            .args(["rmi", "-f", "bench-build"])
            .args(&t.built)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    tools.retain(|t| !failed.contains(&t.name));
    let md = report(&opts, &tools, &notes, given.as_deref());
    print!("{md}");
    write_section(&root.join("docs/benchmarks.md"), SECTION, &md)?;
    println!("bench: wrote the {SECTION:?} section of docs/benchmarks.md");
    Ok(())
}

/// `buildah` with the busybox image pulled from the OCI archive, or why it is skipped.
fn buildah_peer(archive: &Path) -> std::result::Result<(PathBuf, String, String), String> {
    let bin = find_in_path("buildah").ok_or("buildah is not installed")?;
    let version = version_of(&bin, &["--version"]);
    let image = "localhost/berth-bench-bb:latest".to_string();
    util::run(
        Command::new(&bin)
            .arg("pull")
            .arg("-q")
            .arg(format!("oci-archive:{}", archive.display())),
    )
    .and_then(|id| util::run(Command::new(&bin).args(["tag", id.trim(), &image])))
    .map_err(|e| format!("loading the busybox test image failed: {e:#}"))?;
    Ok((bin, version, image))
}

/// Lazily unmounts anything left mounted under the scratch dir (before `TempDir` removes it).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for m in mounts_under(&self.0).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

fn report(opts: &Options, tools: &[Tool], notes: &[String], given: Option<&Path>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{SECTION}\n");
    let _ = writeln!(
        md,
        "Wall-clock time of `build -q -t bench-build CONTEXT` of one Dockerfile: `FROM` the busybox \
         test image, `ENV`, `ARG`, 5 `RUN`s, `COPY` of a 20 MB incompressible file, `WORKDIR`, `CMD` \
         (8 steps that run or copy something, 3 metadata steps). Cases, in this order in each round: \
         **cold** (`--no-cache`: every step runs, layers are written), **fully cached** (the same \
         Dockerfile again: no step runs), **last RUN changed** (the last RUN's text differs from \
         every earlier build: it and the COPY, WORKDIR and CMD after it run again). berth uses a \
         scratch store (temporary `--root`/`--run-root`); peers use their own stores with the same \
         image loaded. {} round(s) after {} warm-up round(s); tools interleaved. Regenerate with \
         `cargo xtask bench build --runs {}{}`.\n",
        opts.runs,
        opts.warmup,
        opts.runs,
        given.map_or(String::new(), |p| format!(" --berth {}", p.display()))
    );
    let _ = writeln!(md, "- date: {}", date_utc());
    for (k, v) in machine() {
        let _ = writeln!(md, "- {k}: {v}");
    }
    let _ = writeln!(md, "- load average: {}", loadavg());
    for t in tools {
        let _ = writeln!(md, "- {}: {}", t.name, t.version);
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| builder | case | n | min ms | median ms | p90 ms | max ms |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
    for t in tools {
        for (c, name) in CASES.iter().enumerate() {
            let s = Stats::of(&t.samples[c]);
            let _ = writeln!(
                md,
                "| {} | {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                t.name, s.n, s.min, s.median, s.p90, s.max
            );
        }
    }
    let _ = writeln!(md);
    if let Some(b) = tools.first() {
        let cached = Stats::of(&b.samples[1]).median;
        let _ = writeln!(
            md,
            "- aim \"fully cached rebuild under 100 ms\": berth median {cached:.1} ms: {}",
            if cached < 100.0 { "met" } else { "not met" }
        );
        for t in &tools[1..] {
            for (c, name) in CASES.iter().enumerate() {
                let ours = Stats::of(&b.samples[c]).median;
                let theirs = Stats::of(&t.samples[c]).median;
                let _ = writeln!(md, "- {name}: {} / berth = {:.1}x", t.name, theirs / ours);
            }
        }
        if tools.len() == 1 {
            let _ = writeln!(md, "- no peer ran, so there are no ratios (see below)");
        }
    }
    let _ = writeln!(md);
    if !notes.is_empty() {
        let _ = writeln!(md, "Skipped or left out:\n");
        for n in notes {
            let _ = writeln!(md, "- {}", n.replace('\n', " "));
        }
        let _ = writeln!(md);
    }
    md
}
