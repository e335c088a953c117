//! `cargo xtask bench unpack`: the benchmark image's gzip layers unpacked by
//! berth-snapshotter's `apply_layer` against GNU `tar -xzf`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::pull::BenchImage;
use super::{
    date_utc, first_lines, git_describe, loadavg, machine, mb, sync_all, write_section, Options,
    Stats, TempDir,
};
use crate::util;

/// Heading of this benchmark's section in docs/benchmarks.md.
const SECTION: &str = "## Layer unpack";
const DEFAULT_RUNS: usize = 5;
const DEFAULT_WARMUP: usize = 1;
pub(super) const USAGE: &str = "cargo xtask bench unpack [--runs N] [--warmup N]";

/// `cargo xtask bench unpack [--runs N] [--warmup N]`: per round, unpacks the 4 gzip
/// layers of the benchmark image (see `bench pull`) with berth-snapshotter's
/// `apply_layer` and with GNU `tar -xzf`, each layer into its own fresh directory (as
/// separate snapshots would be), removing the directories after each run (untimed).
/// Reports the time for all 4 layers and the throughput in MB of uncompressed tar per
/// second; writes the `## Layer unpack` section of docs/benchmarks.md.
pub(super) fn main(args: &[String]) -> Result<()> {
    unpack(&Options::parse(
        args,
        DEFAULT_RUNS,
        DEFAULT_WARMUP,
        false,
        USAGE,
    )?)
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Berth,
    Tar,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Berth => "berth apply_layer",
            Tool::Tar => "GNU tar -xzf",
        }
    }

    /// Unpack every layer into `dest/layerN`; the time from the first open to the last exit.
    fn run_once(self, image: &BenchImage, dest: &Path) -> Result<Duration> {
        let dirs: Vec<_> = (1..=image.layers.len())
            .map(|i| dest.join(format!("layer{i}")))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d)?;
        }
        let start = Instant::now();
        for (layer, dir) in image.layers.iter().zip(&dirs) {
            let blob = image.blob_path(&layer.blob.digest);
            match self {
                Tool::Berth => {
                    let file = File::open(&blob)?;
                    let stats = berth_snapshotter::apply_layer(dir, BufReader::new(file))
                        .with_context(|| format!("apply_layer {}", blob.display()))?;
                    if stats.digest != layer.diff_id || stats.size != layer.tar_size {
                        bail!(
                            "apply_layer of {} saw {} ({} bytes), not {} ({} bytes)",
                            layer.blob.digest,
                            stats.digest,
                            stats.size,
                            layer.diff_id,
                            layer.tar_size
                        );
                    }
                }
                Tool::Tar => {
                    let out = Command::new("tar")
                        .arg("-xzf")
                        .arg(&blob)
                        .arg("-C")
                        .arg(dir)
                        .stdin(Stdio::null())
                        .output()
                        .context("run tar")?;
                    if !out.status.success() {
                        bail!(
                            "tar -xzf {} failed ({}): {}",
                            blob.display(),
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
            }
        }
        let elapsed = start.elapsed();
        // Untimed check that every regular file arrived.
        for (layer, dir) in image.layers.iter().zip(&dirs) {
            let n = count_files(dir)?;
            if n != layer.files {
                bail!(
                    "{}: {n} regular files in {}, the layer has {}",
                    self.name(),
                    dir.display(),
                    layer.files
                );
            }
        }
        Ok(elapsed)
    }
}

fn count_files(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            n += count_files(&e.path())?;
        } else if t.is_file() {
            n += 1;
        }
    }
    Ok(n)
}

fn unpack(opts: &Options) -> Result<()> {
    let root = util::workspace_root();
    let image = BenchImage::ensure()?;
    let tmp =
        TempDir(std::env::temp_dir().join(format!("berth-bench-unpack-{}", std::process::id())));
    if tmp.0.exists() {
        std::fs::remove_dir_all(&tmp.0)?;
    }
    std::fs::create_dir_all(&tmp.0)?;
    let tools = [Tool::Berth, Tool::Tar];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
    let load_before = loadavg();
    for round in 0..opts.warmup + opts.runs {
        let record = round >= opts.warmup;
        let tag = if record {
            (round - opts.warmup).to_string()
        } else {
            format!("warmup{round}")
        };
        for (i, tool) in tools.iter().enumerate() {
            let dest = tmp.0.join(format!(
                "{}-{tag}",
                if *tool == Tool::Berth { "berth" } else { "tar" }
            ));
            sync_all();
            let result = tool.run_once(&image, &dest);
            let _ = std::fs::remove_dir_all(&dest);
            let d = result.with_context(|| format!("{} (run {tag})", tool.name()))?;
            println!("bench: {tag} {}: {:.2} s", tool.name(), d.as_secs_f64());
            if record {
                samples[i].push(d);
            }
        }
    }
    let load_after = loadavg();
    drop(tmp);

    let bytes = image.tar_bytes();
    let stats: Vec<Stats> = samples.iter().map(|s| Stats::of(s)).collect();
    let mbps = |s: &Stats| mb(bytes) / (s.median / 1e3);
    let mut table = String::from(
        "| tool | runs | min s | median s | mean s | max s | MB/s uncompressed (median) |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (tool, s) in tools.iter().zip(&stats) {
        let _ = writeln!(
            table,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            tool.name(),
            s.n,
            s.min / 1e3,
            s.median / 1e3,
            s.mean / 1e3,
            s.max / 1e3,
            mbps(s)
        );
    }
    let (b, t) = (mbps(&stats[0]), mbps(&stats[1]));
    let ratio = format!(
        "berth / tar throughput (median): {b:.0} MB/s / {t:.0} MB/s = {:.2} (aim: at least 0.8)",
        b / t
    );
    println!("\n{table}\n{ratio}");

    let tar_version = util::run(Command::new("tar").arg("--version"))
        .map(|v| first_lines(&v, 1))
        .unwrap_or_else(|e| format!("unknown ({e:#})"));
    let gzip_version = util::run(Command::new("gzip").arg("--version"))
        .map(|v| first_lines(&v, 1))
        .unwrap_or_else(|e| format!("unknown ({e:#})"));
    let mut md = String::new();
    let _ = writeln!(md, "{SECTION}\n");
    let _ = writeln!(
        md,
        "Wall-clock time to unpack the 4 gzip layers of the pull benchmark's image ({:.1} MB \
         of gzip, {:.1} MB of tar), each layer into its own fresh, empty directory (as separate \
         snapshots would be) on the ext4 disk under /tmp, one layer after the other; throughput \
         is MB (10^6 bytes) of uncompressed tar per second. Per round one run of each tool; {} \
         timed round(s) after {} warm-up round(s); `sync` before each run, the directories \
         removed after each run (untimed); layer files in the page cache. Regenerate with \
         `cargo xtask bench unpack --runs {}`.\n",
        mb(image.layers.iter().map(|l| l.blob.size).sum()),
        mb(bytes),
        opts.runs,
        opts.warmup,
        opts.runs
    );
    let _ = writeln!(
        md,
        "- berth: `berth_snapshotter::apply_layer(dir, BufReader::new(File::open(layer)))` \
         called in a release build of the xtask: one thread doing gzip decoding (flate2), \
         sha256 of the tar stream (the diff id, checked against the config), and the \
         confined extraction (every parent opened with openat2 RESOLVE_IN_ROOT | \
         RESOLVE_NO_SYMLINKS, `*at` calls, ownership, modes, mtimes, xattrs, whiteout \
         conversion).\n\
         - tar: `tar -xzf LAYER -C DIR` as root (so it keeps owners and modes, like berth); \
         GNU tar runs `gzip -d` as a second process, so decompression and extraction overlap \
         on two cores, and it computes no digest and does no path confinement beyond its \
         default refusal of `..` members.\n"
    );
    md.push_str(&image.layer_table());
    let _ = writeln!(md);
    let _ = writeln!(md, "- date: {}", date_utc());
    for (k, v) in machine() {
        let _ = writeln!(md, "- {k}: {v}");
    }
    let _ = writeln!(
        md,
        "- load average: {load_before} (before), {load_after} (after)"
    );
    let _ = writeln!(md, "- berth-snapshotter: {}", git_describe(&root));
    let _ = writeln!(md, "- tar: {tar_version}; gzip: {gzip_version}");
    let _ = writeln!(md);
    md.push_str(&table);
    let _ = writeln!(md, "\n- {ratio}\n");
    let docs = root.join("docs/benchmarks.md");
    write_section(&docs, SECTION, &md)?;
    println!(
        "bench: wrote the \"{SECTION}\" section of {}",
        docs.display()
    );
    Ok(())
}
