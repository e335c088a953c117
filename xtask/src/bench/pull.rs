//! `cargo xtask bench pull`: a ~200 MB, 4-layer image pulled from a local
//! registry by berth and by its peers, against the raw limit on the same bytes;
//! and the generated image itself, which `bench unpack` uses too.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};

use super::{
    date_utc, find_in_path, first_lines, git_describe, loadavg, machine, mb, settle, write_section,
    Options, Stats, TempDir,
};
use crate::util;

/// Heading of this benchmark's section in docs/benchmarks.md.
const SECTION: &str = "## Pull";
const DEFAULT_RUNS: usize = 5;
const DEFAULT_WARMUP: usize = 1;
pub(super) const USAGE: &str =
    "cargo xtask bench pull [--runs N] [--warmup N] [--berth PATH] [--only TOOL,...]";

/// The names `--only` takes.
const ONLY_NAMES: [&str; 5] = ["berth", "skopeo", "docker", "podman", "raw"];

/// Repository and tag of the image in the local registry (`127.0.0.1:PORT/` + this).
const REMOTE_PATH: &str = "bench/big:1";

/// `cargo xtask bench pull [--runs N] [--warmup N]`: generates the benchmark image once
/// (cached under `<target>/bench/`), loads it into a scratch berth store and pushes it to
/// a `docker-registry` started on 127.0.0.1 (free port, temp storage), then, per round,
/// pulls it into an empty destination with each tool in turn (berth, skopeo, docker and
/// podman where installed, the raw limit), deleting the destination after each run.
/// `--warmup` rounds (default 1) are not recorded. Writes the `## Pull` section of
/// docs/benchmarks.md.
/// `--berth PATH` benchmarks that binary instead of building berth-cli (release).
/// `--only skopeo,raw` runs berth and just those tools (names as in the table, `raw`
/// for the raw limit) and prints the results without touching the docs.
/// `BERTH_BENCH_WRAP="perf record -g -o F --"` runs berth's pulls under that command.
pub(super) fn main(args: &[String]) -> Result<()> {
    let mut rest = Vec::new();
    let mut berth = None;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(p) = a.strip_prefix("--berth=") {
            berth = Some(PathBuf::from(p));
        } else if a == "--berth" {
            berth = Some(PathBuf::from(it.next().context("--berth needs a path")?));
        } else if let Some(v) = a.strip_prefix("--only=") {
            only = Some(v.to_string());
        } else if a == "--only" {
            only = Some(it.next().context("--only needs tool names")?.clone());
        } else {
            rest.push(a.clone());
        }
    }
    let opts = Options::parse(&rest, DEFAULT_RUNS, DEFAULT_WARMUP, false, USAGE)?;
    let only = match only {
        None => None,
        Some(v) => {
            let names: Vec<String> = v.split(',').map(|t| t.trim().to_string()).collect();
            if let Some(bad) = names.iter().find(|n| !ONLY_NAMES.contains(&n.as_str())) {
                bail!(
                    "--only: unknown tool {bad:?} (known: {})",
                    ONLY_NAMES.join(", ")
                );
            }
            Some(names)
        }
    };
    pull(&opts, berth, only.as_deref())
}

// ---------------------------------------------------------------------------
// The benchmark image.

/// Bump when the generator changes: the cache is keyed by it.
const IMAGE_VERSION: u32 = 1;
/// Uncompressed (tar) size of each layer, MiB, base first.
const LAYER_MIB: [u64; 4] = [100, 75, 50, 25];
/// Share of the file bytes that are random (incompressible); the rest is text.
const RANDOM_SHARE: f64 = 0.7;
/// Fixed mtime of every entry (the image is reproducible).
const MTIME: u64 = 1_700_000_000;
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A blob of the image: `sha256:<hex>`, size, media type.
#[derive(Clone, Debug)]
pub(super) struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// A layer: its gzip blob, diff id, uncompressed tar size and regular file count.
#[derive(Clone, Debug)]
pub(super) struct Layer {
    pub blob: Blob,
    pub diff_id: String,
    pub tar_size: u64,
    pub files: u64,
}

/// The generated image, as an OCI layout directory (`dir`) and the same layout as a tar
/// (`archive`, for `berth load`).
pub(super) struct BenchImage {
    pub dir: PathBuf,
    pub archive: PathBuf,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Layer>,
}

impl BenchImage {
    /// The generated image, made once and cached under `<target>/bench/image-v<N>`.
    pub fn ensure() -> Result<BenchImage> {
        let base = util::target_dir().join("bench");
        let dir = base.join(format!("image-v{IMAGE_VERSION}"));
        if let Ok(img) = BenchImage::read(&dir) {
            println!(
                "bench: using the cached benchmark image in {}",
                dir.display()
            );
            return Ok(img);
        }
        let tmp = base.join(format!("image-v{IMAGE_VERSION}.tmp"));
        for d in [&dir, &tmp] {
            if d.exists() {
                std::fs::remove_dir_all(d).with_context(|| format!("remove {}", d.display()))?;
            }
        }
        println!(
            "bench: generating the benchmark image ({} layers, {} MiB uncompressed) in {}",
            LAYER_MIB.len(),
            LAYER_MIB.iter().sum::<u64>(),
            dir.display()
        );
        let start = Instant::now();
        generate(&tmp)?;
        std::fs::rename(&tmp, &dir)?;
        println!("bench: generated in {:.1} s", start.elapsed().as_secs_f64());
        BenchImage::read(&dir)
    }

    /// Read `image.json` (written last by `generate`) and check every blob is there.
    fn read(dir: &Path) -> Result<BenchImage> {
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("image.json"))?)?;
        let blob = |v: &serde_json::Value| -> Result<Blob> {
            Ok(Blob {
                digest: v["digest"].as_str().context("digest")?.to_string(),
                size: v["size"].as_u64().context("size")?,
                media_type: v["mediaType"].as_str().context("mediaType")?.to_string(),
            })
        };
        let mut layers = Vec::new();
        for l in summary["layers"].as_array().context("layers")? {
            layers.push(Layer {
                blob: blob(l)?,
                diff_id: l["diffId"].as_str().context("diffId")?.to_string(),
                tar_size: l["tarSize"].as_u64().context("tarSize")?,
                files: l["files"].as_u64().context("files")?,
            });
        }
        let img = BenchImage {
            dir: dir.to_path_buf(),
            archive: dir.join("image.oci.tar"),
            manifest: blob(&summary["manifest"])?,
            config: blob(&summary["config"])?,
            layers,
        };
        for b in img.blobs() {
            let len = std::fs::metadata(img.blob_path(&b.digest))?.len();
            if len != b.size {
                bail!("{} has {len} bytes, not {}", b.digest, b.size);
            }
        }
        std::fs::metadata(&img.archive)?;
        Ok(img)
    }

    /// Path of a blob in the layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// Every blob a pull fetches: manifest, config, layers.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut v = vec![&self.manifest, &self.config];
        v.extend(self.layers.iter().map(|l| &l.blob));
        v
    }

    /// Sum of the blob sizes: the bytes a pull moves.
    pub fn pulled_bytes(&self) -> u64 {
        self.blobs().iter().map(|b| b.size).sum()
    }

    /// Sum of the layers' uncompressed tar sizes.
    pub fn tar_bytes(&self) -> u64 {
        self.layers.iter().map(|l| l.tar_size).sum()
    }

    /// Markdown table of the layers.
    pub fn layer_table(&self) -> String {
        let mut md = String::from(
            "| layer | regular files | tar MB | gzip MB | digest |\n|---:|---:|---:|---:|---|\n",
        );
        for (i, l) in self.layers.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} | `{}` |",
                i + 1,
                l.files,
                mb(l.tar_size),
                mb(l.blob.size),
                &l.blob.digest[..19]
            );
        }
        let _ = writeln!(
            md,
            "| all | {} | {:.1} | {:.1} | manifest `{}` |",
            self.layers.iter().map(|l| l.files).sum::<u64>(),
            mb(self.tar_bytes()),
            mb(self.layers.iter().map(|l| l.blob.size).sum()),
            &self.manifest.digest[..19]
        );
        md
    }

    /// One paragraph on how the image is made.
    pub fn description(&self) -> String {
        format!(
            "The benchmark image (generated once by the xtask with a fixed seed, cached under \
             `<target>/bench/image-v{IMAGE_VERSION}/`): an OCI image of {} gzip layers \
             (flate2, default level 6, as `docker push` would make them) with an OCI config \
             listing their diff ids and an OCI manifest; {:.1} MB to pull in all. Each layer is a \
             tar of directories of generated files under `/opt/bench/layerN/`: 95% of the files \
             are 64 B - 64 KiB and 5% are 64 KiB - 8 MiB (log-uniform), about {:.0}% of the bytes \
             random (incompressible) and the rest text built from a vocabulary of 4096 \
             pseudo-words, plus a symlink for every 50th file.",
            self.layers.len(),
            mb(self.pulled_bytes()),
            RANDOM_SHARE * 100.0
        )
    }
}

/// splitmix64: a small, fast, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform in `lo..hi`.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        (lo as f64 * (hi as f64 / lo as f64).powf(self.unit())) as u64
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Text of `size` bytes: lines of pseudo-words, some as `key = value;`.
fn text(rng: &mut Rng, vocab: &[String], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    while out.len() < size {
        let words = 3 + rng.below(12);
        if rng.below(4) == 0 {
            let k = &vocab[rng.below(vocab.len() as u64) as usize];
            let _ = write!(out, "{k}_{} = ", rng.below(1000));
        }
        for w in 0..words {
            if w > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(vocab[rng.below(vocab.len() as u64) as usize].as_bytes());
        }
        out.extend_from_slice(if rng.below(3) == 0 { b";\n" } else { b".\n" });
    }
    out.truncate(size);
    out
}

/// A writer that hashes and counts what goes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    n: u64,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            n: 0,
        }
    }

    /// The inner writer, `sha256:<hex>` and the byte count.
    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex(&self.hasher.finalize())),
            self.n,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Write `bytes` as a blob of the layout at `dir`; return its descriptor.
fn write_blob(dir: &Path, bytes: &[u8], media_type: &str) -> Result<Blob> {
    let digest = format!("sha256:{}", hex(&Sha256::digest(bytes)));
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
    Ok(Blob {
        digest,
        size: bytes.len() as u64,
        media_type: media_type.into(),
    })
}

fn descriptor(b: &Blob) -> serde_json::Value {
    serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.size})
}

/// Generate the image as an OCI layout in `dir` (plus `image.oci.tar` and `image.json`).
fn generate(dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let mut rng = Rng(0x6265_7274_6862_656e);
    let vocab: Vec<String> = (0..4096)
        .map(|_| {
            let len = 2 + rng.below(9);
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let mut layers = Vec::new();
    for (i, mib) in LAYER_MIB.iter().enumerate() {
        let layer = write_layer(dir, i + 1, mib << 20, &mut rng, &vocab)?;
        println!(
            "bench: layer {}: {} files, {:.1} MB tar, {:.1} MB gzip",
            i + 1,
            layer.files,
            mb(layer.tar_size),
            mb(layer.blob.size)
        );
        layers.push(layer);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let created = "2023-11-14T22:13:20Z";
    let config = serde_json::json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/opt/bench",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "history": layers.iter().enumerate().map(|(i, _)| serde_json::json!({
            "created": created,
            "created_by": format!("cargo xtask bench: generated layer {}", i + 1),
        })).collect::<Vec<_>>(),
    });
    let config = write_blob(dir, &serde_json::to_vec(&config)?, MEDIA_CONFIG)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(&config),
        "layers": layers.iter().map(|l| descriptor(&l.blob)).collect::<Vec<_>>(),
    });
    let manifest = write_blob(dir, &serde_json::to_vec(&manifest)?, MEDIA_MANIFEST)?;
    let mut index_entry = descriptor(&manifest);
    index_entry["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": REMOTE_PATH});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [index_entry]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;

    // The same layout as a tar, for `berth load -i`.
    let archive = dir.join("image.oci.tar");
    let mut t = tar::Builder::new(BufWriter::new(File::create(&archive)?));
    t.mode(tar::HeaderMode::Deterministic);
    t.append_path_with_name(dir.join("oci-layout"), "oci-layout")?;
    t.append_path_with_name(dir.join("index.json"), "index.json")?;
    let mut all: Vec<&Blob> = vec![&manifest, &config];
    all.extend(layers.iter().map(|l| &l.blob));
    for b in &all {
        let hex = b.digest.trim_start_matches("sha256:");
        t.append_path_with_name(blobs.join(hex), format!("blobs/sha256/{hex}"))?;
    }
    t.into_inner()?.into_inner()?.sync_all()?;

    let blob_json = |b: &Blob| serde_json::json!({"digest": b.digest, "size": b.size, "mediaType": b.media_type});
    let summary = serde_json::json!({
        "manifest": blob_json(&manifest),
        "config": blob_json(&config),
        "layers": layers.iter().map(|l| {
            let mut v = blob_json(&l.blob);
            v["diffId"] = l.diff_id.clone().into();
            v["tarSize"] = l.tar_size.into();
            v["files"] = l.files.into();
            v
        }).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("image.json"), serde_json::to_vec_pretty(&summary)?)?;
    Ok(())
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

/// One gzip layer of about `target` uncompressed bytes of files.
fn write_layer(
    dir: &Path,
    n: usize,
    target: u64,
    rng: &mut Rng,
    vocab: &[String],
) -> Result<Layer> {
    let tmp = dir.join(format!("layer{n}.tmp"));
    let file = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let compressed = HashWriter::new(BufWriter::with_capacity(1 << 20, file));
    let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::default());
    let mut t = tar::Builder::new(HashWriter::new(gz));
    let root = format!("opt/bench/layer{n}");
    for d in ["opt/", "opt/bench/", &format!("{root}/")] {
        t.append_data(
            &mut tar_header(tar::EntryType::Directory, 0o755, 0),
            d,
            std::io::empty(),
        )?;
    }
    let (mut written, mut random, mut files) = (0u64, 0u64, 0u64);
    let mut subdir = String::new();
    while written < target {
        if files % 40 == 0 {
            subdir = format!("{root}/d{:03}/s{}", files / 40, rng.below(4));
            let parent = &subdir[..subdir.rfind('/').unwrap_or(0)];
            for d in [parent, &subdir] {
                t.append_data(
                    &mut tar_header(tar::EntryType::Directory, 0o755, 0),
                    format!("{d}/"),
                    std::io::empty(),
                )?;
            }
        }
        let size = if rng.below(100) < 95 {
            rng.log_uniform(64, 64 << 10)
        } else {
            rng.log_uniform(64 << 10, 8 << 20)
        }
        .clamp(1, target - written);
        let is_random = (random as f64) < RANDOM_SHARE * (written + size) as f64;
        let (data, ext) = if is_random {
            let mut v = vec![0u8; size as usize];
            rng.fill(&mut v);
            random += size;
            (v, "bin")
        } else {
            (text(rng, vocab, size as usize), "txt")
        };
        let name = format!("f{files:05}.{ext}");
        let path = format!("{subdir}/{name}");
        let mode = if rng.below(10) == 0 { 0o755 } else { 0o644 };
        t.append_data(
            &mut tar_header(tar::EntryType::Regular, mode, size),
            &path,
            data.as_slice(),
        )?;
        if files % 50 == 0 {
            t.append_link(
                &mut tar_header(tar::EntryType::Symlink, 0o777, 0),
                format!("{path}.link"),
                &name,
            )?;
        }
        written += size;
        files += 1;
    }
    let (gz, diff_id, tar_size) = t.into_inner()?.finish();
    let (buffered, digest, size) = gz.finish()?.finish();
    buffered
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    let path = dir
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::rename(&tmp, &path)?;
    Ok(Layer {
        blob: Blob {
            digest,
            size,
            media_type: MEDIA_LAYER.into(),
        },
        diff_id,
        tar_size,
        files,
    })
}

// ---------------------------------------------------------------------------
// The registry.

/// A `docker-registry` on 127.0.0.1 with its storage in a scratch dir; killed on drop.
struct Registry {
    addr: String,
    child: Child,
}

impl Registry {
    fn start(dir: &Path) -> Result<Registry> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("find a free port")?
            .port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(dir)?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )?;
        let log = File::create(dir.join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry")?;
        let mut registry = Registry { addr, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            if let Some(status) = registry.child.try_wait()? {
                bail!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not come up on {}", registry.addr);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }
}

impl Registry {
    /// CPU time (user + system) the registry has used so far.
    fn cpu(&self) -> Duration {
        proc_cpu(self.child.id())
    }
}

/// CPU time (user + system) of `who` (RUSAGE_CHILDREN: the waited-for children).
fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time (user + system) of a running process, from /proc/PID/stat.
fn proc_cpu(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The benchmark.

enum Kind {
    Berth(PathBuf),
    Skopeo(PathBuf),
    Docker(PathBuf),
    Podman(PathBuf),
    Raw,
    /// The raw limit, then each layer inflated, hashed and written out as files.
    RawUnpack,
}

/// A tool under test and its timings.
struct Tool {
    name: &'static str,
    kind: Kind,
    version: String,
    samples: Vec<Duration>,
    /// CPU time (user + system) of each timed run: the tool's process and its
    /// children (the in-process raw limit: its thread).
    cpu: Vec<Duration>,
    /// The registry's CPU time during each timed run.
    registry_cpu: Vec<Duration>,
}

impl Tool {
    /// The command for one pull into `dest` (None for the in-process raw limit).
    fn command(&self, reference: &str, dest: &Path) -> Option<Command> {
        let mut cmd = match &self.kind {
            Kind::Berth(bin) => {
                // BERTH_BENCH_WRAP="perf record -g -o /tmp/p.data --" profiles berth's runs.
                let wrap = std::env::var("BERTH_BENCH_WRAP").unwrap_or_default();
                let mut words = wrap.split_whitespace();
                let mut c = match words.next() {
                    Some(w) => {
                        let mut c = Command::new(w);
                        c.args(words).arg(bin);
                        c
                    }
                    None => Command::new(bin),
                };
                c.arg("--root").arg(dest).args(["pull", "-q", reference]);
                c
            }
            Kind::Skopeo(bin) => {
                let mut c = Command::new(bin);
                c.args(["copy", "-q", "--src-tls-verify=false"])
                    .arg(format!("docker://{reference}"))
                    .arg(format!("oci:{}:x", dest.display()));
                c
            }
            Kind::Docker(bin) => {
                let mut c = Command::new(bin);
                c.args(["pull", "-q", reference]);
                c
            }
            Kind::Podman(bin) => {
                let mut c = Command::new(bin);
                c.arg("--root")
                    .arg(dest.join("root"))
                    .arg("--runroot")
                    .arg(PODMAN_RUNROOT)
                    .args(["pull", "-q", "--tls-verify=false", reference]);
                c
            }
            Kind::Raw | Kind::RawUnpack => return None,
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Some(cmd)
    }

    fn command_line(&self, reference: &str, dest: &Path) -> String {
        match self.command(reference, dest) {
            Some(cmd) => std::iter::once(cmd.get_program())
                .chain(cmd.get_args())
                .map(|s| s.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            None => {
                let raw = format!(
                    "(in the xtask) for each blob of <target>/bench/image-v{IMAGE_VERSION}/blobs/sha256: \
                     read 1 MiB at a time, sha256, write to {}/ingest/<hex>, fsync, check digest, \
                     rename to {}/blobs/sha256/<hex>; then fsync that directory",
                    dest.display(),
                    dest.display()
                );
                match self.kind {
                    Kind::RawUnpack => format!(
                        "{raw}; then for each layer blob: gzip-decode (flate2), sha256 of the tar \
                         stream, check the diff id, write its entries under {}/layers/<n>/ \
                         (directories, files, symlinks, hard links; no owners, modes or times)",
                        dest.display()
                    ),
                    _ => raw,
                }
            }
        }
    }

    /// One pull into the empty `dest`: its wall-clock time, or why it failed.
    fn run_once(
        &self,
        image: &BenchImage,
        reference: &str,
        dest: &Path,
    ) -> std::result::Result<(Duration, Duration), String> {
        let (elapsed, cpu) = match self.command(reference, dest) {
            None => {
                let cpu = rusage_cpu(libc::RUSAGE_THREAD);
                let start = Instant::now();
                raw_copy(image, dest).map_err(|e| format!("raw copy: {e:#}"))?;
                if matches!(self.kind, Kind::RawUnpack) {
                    raw_unpack(image, dest).map_err(|e| format!("raw unpack: {e:#}"))?;
                }
                let wall = start.elapsed();
                (wall, rusage_cpu(libc::RUSAGE_THREAD).saturating_sub(cpu))
            }
            Some(mut cmd) => {
                let cpu = rusage_cpu(libc::RUSAGE_CHILDREN);
                let start = Instant::now();
                let out = cmd.output();
                let elapsed = start.elapsed();
                let cpu = rusage_cpu(libc::RUSAGE_CHILDREN).saturating_sub(cpu);
                match out {
                    Ok(out) if out.status.success() => (elapsed, cpu),
                    Ok(out) => {
                        return Err(format!(
                            "{} exited with {}: {}",
                            self.command_line(reference, dest),
                            out.status,
                            first_lines(
                                &format!(
                                    "{}\n{}",
                                    String::from_utf8_lossy(&out.stderr),
                                    String::from_utf8_lossy(&out.stdout)
                                ),
                                5
                            )
                        ))
                    }
                    Err(e) => return Err(format!("{}: {e}", self.command_line(reference, dest))),
                }
            }
        };
        // Check that what we timed really fetched the image (untimed).
        let blob_dir = match self.kind {
            Kind::Berth(_) => Some(dest.join("content/blobs/sha256")),
            Kind::Skopeo(_) | Kind::Raw | Kind::RawUnpack => Some(dest.join("blobs/sha256")),
            Kind::Docker(_) | Kind::Podman(_) => None,
        };
        if let Some(blob_dir) = blob_dir {
            let mut want = vec![&image.config];
            want.extend(image.layers.iter().map(|l| &l.blob));
            for b in want {
                let p = blob_dir.join(b.digest.trim_start_matches("sha256:"));
                match std::fs::metadata(&p) {
                    Ok(m) if m.len() == b.size => {}
                    _ => {
                        return Err(format!(
                            "{}: {} missing after the pull",
                            self.name,
                            p.display()
                        ))
                    }
                }
            }
        }
        Ok((elapsed, cpu))
    }

    /// Undo one pull (untimed); `dest` is deleted later, when all runs are over.
    fn clean(&self, reference: &str, dest: &Path, leftovers: &mut Vec<PathBuf>) {
        if let Kind::Docker(bin) = &self.kind {
            let _ = Command::new(bin)
                .args(["rmi", "-f", reference])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Kind::Podman(_) = &self.kind {
            let _ = std::fs::remove_dir_all(PODMAN_RUNROOT);
        }
        if dest.exists() {
            leftovers.push(dest.to_path_buf());
        }
    }
}

/// Podman's run root: podman refuses one longer than 50 characters. The runs take
/// turns, so one path serves them all; it is emptied after each run.
const PODMAN_RUNROOT: &str = "/tmp/berth-bench-podman-run";

/// The raw limit: what a perfect pull does minus the network, single-threaded.
fn raw_copy(image: &BenchImage, dest: &Path) -> Result<()> {
    let blobs = dest.join("blobs/sha256");
    let ingest = dest.join("ingest");
    std::fs::create_dir_all(&blobs)?;
    std::fs::create_dir_all(&ingest)?;
    let mut buf = vec![0u8; 1 << 20];
    for b in image.blobs() {
        let name = b.digest.trim_start_matches("sha256:");
        let mut src = File::open(image.blob_path(&b.digest))?;
        let tmp = ingest.join(name);
        let mut out = File::create(&tmp)?;
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        loop {
            let k = src.read(&mut buf)?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            out.write_all(&buf[..k])?;
            n += k as u64;
        }
        out.sync_all()?;
        let got = format!("sha256:{}", hex(&hasher.finalize()));
        if got != b.digest || n != b.size {
            bail!("{}: got {got} ({n} bytes)", b.digest);
        }
        std::fs::rename(&tmp, blobs.join(name))?;
    }
    File::open(&blobs)?.sync_all()?;
    Ok(())
}

/// Reads through to `inner`, hashing what passes.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// What a pull that unpacks must do beyond [`raw_copy`], at its plainest: each
/// layer blob (as `raw_copy` stored it) gzip-decoded, its tar stream hashed for
/// the diff id, and its entries written out with no metadata and no
/// confinement; one thread, one layer after the other.
fn raw_unpack(image: &BenchImage, dest: &Path) -> Result<()> {
    for (n, layer) in image.layers.iter().enumerate() {
        let blob = dest
            .join("blobs/sha256")
            .join(layer.blob.digest.trim_start_matches("sha256:"));
        let gz = flate2::bufread::GzDecoder::new(std::io::BufReader::with_capacity(
            1 << 20,
            File::open(&blob)?,
        ));
        let mut tar = tar::Archive::new(Hashing {
            inner: gz,
            hasher: Sha256::new(),
        });
        let root = dest.join("layers").join(n.to_string());
        std::fs::create_dir_all(&root)?;
        for entry in tar.entries()? {
            let mut entry = entry?;
            let path = root.join(entry.path()?);
            match entry.header().entry_type() {
                tar::EntryType::Directory => std::fs::create_dir_all(&path)?,
                tar::EntryType::Regular => {
                    std::io::copy(&mut entry, &mut File::create(&path)?)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name()?.context("symlink without target")?;
                    std::os::unix::fs::symlink(target, &path)?;
                }
                tar::EntryType::Link => {
                    let target = entry.link_name()?.context("hard link without target")?;
                    std::fs::hard_link(root.join(target), &path)?;
                }
                other => bail!("{}: unexpected entry type {other:?}", path.display()),
            }
        }
        let mut rest = tar.into_inner();
        std::io::copy(&mut rest, &mut std::io::sink())?;
        let got = format!("sha256:{}", hex(&rest.hasher.finalize()));
        if got != layer.diff_id {
            bail!("layer {n}: diff id {got}, expected {}", layer.diff_id);
        }
    }
    Ok(())
}

fn version_of(bin: &Path, args: &[&str]) -> String {
    match util::run(Command::new(bin).args(args)) {
        Ok(v) => first_lines(&v, 1),
        Err(e) => format!("unknown ({e:#})"),
    }
}

fn pull(opts: &Options, given_berth: Option<PathBuf>, only: Option<&[String]>) -> Result<()> {
    let root = util::workspace_root();
    util::ensure_packages(&[
        ("docker-registry", "/usr/bin/docker-registry"),
        ("skopeo", "/usr/bin/skopeo"),
    ])?;

    let berth = super::berth_binary(given_berth.as_deref())?;
    let image = BenchImage::ensure()?;

    let tmp =
        TempDir(std::env::temp_dir().join(format!("berth-bench-pull-{}", std::process::id())));
    if tmp.0.exists() {
        std::fs::remove_dir_all(&tmp.0)?;
    }
    std::fs::create_dir_all(&tmp.0)?;
    // Declared after `tmp`, so dropped (killed) before its storage is removed.
    let registry_dir = tmp.0.join("registry");
    let registry = Registry::start(&registry_dir)?;
    let reference = format!("{}/{REMOTE_PATH}", registry.addr);
    println!("bench: registry on {}; pushing {reference}", registry.addr);
    let seed = tmp.0.join("seed");
    let b = |args: &[&str]| util::run(Command::new(&berth).arg("--root").arg(&seed).args(args));
    b(&["load", "-q", "-i", &image.archive.display().to_string()])?;
    b(&["tag", REMOTE_PATH, &reference])?;
    b(&["push", "-q", &reference])?;
    std::fs::remove_dir_all(&seed)?;

    let mut notes = Vec::new();
    let mut tools = vec![Tool {
        name: "berth",
        version: match &given_berth {
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
        },
        kind: Kind::Berth(berth.clone()),
        samples: Vec::new(),
        cpu: Vec::new(),
        registry_cpu: Vec::new(),
    }];
    let skopeo = find_in_path("skopeo").context("skopeo is not installed")?;
    tools.push(Tool {
        name: "skopeo",
        version: version_of(&skopeo, &["--version"]),
        kind: Kind::Skopeo(skopeo),
        samples: Vec::new(),
        cpu: Vec::new(),
        registry_cpu: Vec::new(),
    });
    // Docker installed but no daemon running: a private one, for the comparison.
    // berth always runs; `raw` names the raw limit.
    let wanted = |name: &str| {
        name == "berth"
            || only.is_none_or(|o| {
                o.iter()
                    .any(|x| x == name || (x == "raw" && name.starts_with("raw limit")))
            })
    };
    let _dockerd = wanted("docker").then(|| {
        super::dockerd::for_peers("pull", &["--insecure-registry=127.0.0.0/8".to_string()])
    });
    for name in ["docker", "podman"] {
        if !wanted(name) {
            continue;
        }
        let Some(bin) = find_in_path(name) else {
            let note = format!("{name} pull: skipped, {name} is not installed");
            println!("bench: {note}");
            notes.push(note);
            continue;
        };
        // Only a working one: `docker version` talks to the daemon.
        let args: &[&str] = if name == "docker" {
            &["version", "--format", "{{.Server.Version}}"]
        } else {
            &["--version"]
        };
        match util::run(Command::new(&bin).args(args)) {
            Ok(v) => tools.push(Tool {
                name,
                version: first_lines(&v, 1),
                kind: if name == "docker" {
                    Kind::Docker(bin)
                } else {
                    Kind::Podman(bin)
                },
                samples: Vec::new(),
                cpu: Vec::new(),
                registry_cpu: Vec::new(),
            }),
            Err(e) => {
                let note = format!("{name} pull: skipped, {name} does not work here: {e:#}");
                println!("bench: {note}");
                notes.push(note);
            }
        }
    }
    tools.push(Tool {
        name: "raw limit",
        version: "sha256 (sha2 crate) + write + fsync, in the release-built xtask".into(),
        kind: Kind::Raw,
        samples: Vec::new(),
        cpu: Vec::new(),
        registry_cpu: Vec::new(),
    });
    tools.push(Tool {
        name: "raw limit + unpack",
        version: "the raw limit, then flate2 (zlib-rs) + sha256 + tar crate entries written \
                  with std::fs, in the release-built xtask"
            .into(),
        kind: Kind::RawUnpack,
        samples: Vec::new(),
        cpu: Vec::new(),
        registry_cpu: Vec::new(),
    });
    tools.retain(|t| wanted(t.name));
    let dest_of =
        |name: &str, tag: &str| tmp.0.join(format!("dest-{}-{tag}", name.replace(' ', "-")));
    let command_lines: Vec<String> = tools
        .iter()
        .map(|t| t.command_line(&reference, &dest_of(t.name, "<i>")))
        .collect();
    let versions: Vec<(String, String)> = std::iter::once((
        "registry".to_string(),
        version_of(Path::new("/usr/bin/docker-registry"), &["--version"]),
    ))
    .chain(
        tools
            .iter()
            .map(|t| (t.name.to_string(), t.version.clone())),
    )
    .collect();

    let load_before = loadavg();
    let mut berth_unpacks = false;
    // Destinations are deleted after the last round, not between runs: on ext4
    // without a journal (this machine's root) the inodes of thousands of files
    // deleted a moment ago slow down every file creation that follows.
    let mut leftovers = Vec::new();
    let rounds = opts.warmup + opts.runs;
    for round in 0..rounds {
        let record = round >= opts.warmup;
        let tag = if record {
            (round - opts.warmup).to_string()
        } else {
            format!("warmup{round}")
        };
        let mut failed = Vec::new();
        for (idx, tool) in tools.iter_mut().enumerate() {
            let dest = dest_of(tool.name, &tag);
            settle(&[&registry_dir, &image.dir]);
            let registry_cpu = registry.cpu();
            let result = tool.run_once(&image, &reference, &dest);
            let registry_cpu = registry.cpu().saturating_sub(registry_cpu);
            if matches!(tool.kind, Kind::Berth(_)) {
                berth_unpacks |= std::fs::read_dir(dest.join("snapshots"))
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
            }
            tool.clean(&reference, &dest, &mut leftovers);
            match result {
                Ok((d, cpu)) => {
                    println!(
                        "bench: {tag} {}: {:.2} s (CPU {:.2} s, registry {:.2} s)",
                        tool.name,
                        d.as_secs_f64(),
                        cpu.as_secs_f64(),
                        registry_cpu.as_secs_f64()
                    );
                    if record {
                        tool.samples.push(d);
                        tool.cpu.push(cpu);
                        tool.registry_cpu.push(registry_cpu);
                    }
                }
                Err(why) if matches!(tool.kind, Kind::Berth(_) | Kind::Raw) => {
                    bail!("{} failed: {why}", tool.name)
                }
                Err(why) => {
                    let note = format!("{}: excluded, failed in run {tag}: {why}", tool.name);
                    println!("bench: {note}");
                    notes.push(note);
                    failed.push(idx);
                }
            }
        }
        for idx in failed.into_iter().rev() {
            tools.remove(idx);
        }
    }
    let load_after = loadavg();
    drop(registry);
    for dest in leftovers {
        let _ = std::fs::remove_dir_all(dest);
    }

    let bytes = image.pulled_bytes();
    let stats: Vec<(&str, Stats)> = tools
        .iter()
        .map(|t| (t.name, Stats::of(&t.samples)))
        .collect();
    let mut table = String::from(
        "| tool | runs | min s | median s | mean s | max s | MB/s (median) |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, s) in &stats {
        let _ = writeln!(
            table,
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            s.n,
            s.min / 1e3,
            s.median / 1e3,
            s.mean / 1e3,
            s.max / 1e3,
            mb(bytes) / (s.median / 1e3)
        );
    }
    let berth_median = stats[0].1.median / 1e3;
    let mut ratios = Vec::new();
    for (name, s) in &stats[1..] {
        let m = s.median / 1e3;
        let r = m / berth_median;
        if name.starts_with("raw limit") {
            let q = berth_median / m;
            let aim = if *name == "raw limit" {
                " (aim: at most 1.5)"
            } else {
                ""
            };
            ratios.push(format!(
                "berth / {name} (median): {berth_median:.2} s / {m:.2} s = {q:.2}{aim}"
            ));
        } else {
            let verdict = if r >= 1.0 {
                format!("berth is {r:.2}x as fast")
            } else {
                format!("berth takes {:.2}x as long", 1.0 / r)
            };
            ratios.push(format!(
                "{name} / berth (median): {m:.2} s / {berth_median:.2} s = {r:.2} ({verdict})"
            ));
        }
    }
    let mut cpu_table = String::from(
        "| tool | CPU s (median, user+sys) | registry CPU s (median) | together | together / 2 cores |\n|---|---:|---:|---:|---:|\n",
    );
    let median = |v: &[Duration]| {
        let mut v: Vec<f64> = v.iter().map(Duration::as_secs_f64).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    // Medians of berth's (CPU s, registry CPU s) and of the raw limit's CPU s.
    let (mut berth_cpu, mut raw_cpu) = (None, None);
    for t in &tools {
        let (cpu, reg) = (median(&t.cpu), median(&t.registry_cpu));
        match t.kind {
            Kind::Berth(_) => berth_cpu = Some((cpu, reg)),
            Kind::Raw => raw_cpu = Some(cpu),
            _ => {}
        }
        let note = if matches!(t.kind, Kind::Docker(_)) {
            " (the client only: the pull runs in dockerd)"
        } else {
            ""
        };
        let _ = writeln!(
            cpu_table,
            "| {}{note} | {cpu:.2} | {reg:.2} | {:.2} | {:.2} |",
            t.name,
            cpu + reg,
            (cpu + reg) / 2.0
        );
    }
    println!("\n{table}\n{cpu_table}");
    for r in &ratios {
        println!("{r}");
    }
    for n in &notes {
        println!("note: {n}");
    }

    let mut md = String::new();
    let _ = writeln!(md, "{SECTION}\n");
    let _ = writeln!(
        md,
        "Wall-clock time to pull a {:.0} MB, {}-layer image from a local registry (Debian's \
         `docker-registry` on 127.0.0.1, plain http, storage on the same disk) into an empty \
         destination on the same ext4 disk, from spawning the tool to its exit. Per round one \
         run of each tool in turn; {} timed round(s) after {} warm-up round(s). Before each run: \
         `sync`, the clean page cache dropped (`drop_caches` = 1), then the registry's files \
         and the raw limit's source blobs read back in, so every run starts with free memory \
         (writes that must first reclaim cached pages cost up to 3x as much here, and how much \
         depends on what ran before) and its inputs cached, alike for every tool. Every run has \
         its own destination, all deleted after the last round (deleting thousands of files \
         just before a run slows the file creations of the next one on an ext4 without a \
         journal, as this machine's root is). \
         Regenerate with `cargo xtask bench pull --runs {}{}`.\n",
        mb(bytes),
        image.layers.len(),
        opts.runs,
        opts.warmup,
        opts.runs,
        match &given_berth {
            Some(p) => format!(" --berth {}", p.display()),
            None => String::new(),
        }
    );
    let _ = writeln!(md, "{}\n", image.description());
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
    for (k, v) in &versions {
        let _ = writeln!(md, "- {k}: {v}");
    }
    let _ = writeln!(md);
    md.push_str(&table);
    let _ = writeln!(md);
    for r in &ratios {
        let _ = writeln!(md, "- {r}");
    }
    let _ = writeln!(
        md,
        "\nCPU time of the same runs: the tool's process and the children it waited for \
         (getrusage RUSAGE_CHILDREN around the run; the raw limit: its thread), and the \
         registry's (/proc/PID/stat before and after). On this machine's 2 cores no tool can \
         finish sooner than the last column, whatever it overlaps.\n"
    );
    md.push_str(&cpu_table);
    let _ = writeln!(md);
    let raw_wall = stats.iter().find(|(n, _)| *n == "raw limit");
    if let (Some((cpu, reg)), Some(raw), Some((_, raw_wall))) = (berth_cpu, raw_cpu, raw_wall) {
        let raw_wall = raw_wall.median / 1e3;
        let _ = writeln!(
            md,
            "What bounds each: the raw limit spent {raw:.2} s of its {raw_wall:.2} s on the CPU \
             and the rest waiting for its fsyncs, while berth's CPU time and the registry's, \
             spread over 2 cores, take {:.2} s of berth's {berth_median:.2} s. So berth / raw \
             limit depends on how fast the machine's disk flushes compared with how fast its \
             cores hash and inflate: a faster disk raises the ratio even when berth is no \
             slower.\n",
            (cpu + reg) / 2.0
        );
    }
    let _ = writeln!(
        md,
        "The raw limit is what a perfect pull must do minus the network: for each blob of the \
         image (manifest, config, the 4 layers: the same {bytes} bytes) read it from a local \
         copy (in the page cache, like the registry's files), compute its sha256 while writing \
         it to a new file in the destination, fsync the file, compare the digest and rename it \
         into place, then fsync the blob directory; one thread, one blob after the other, \
         1 MiB buffers, no HTTP, no JSON, no metadata. It does not decompress or unpack \
         anything, and neither does `skopeo copy` to an OCI layout.\n"
    );
    let _ = writeln!(
        md,
        "The raw limit + unpack adds, on the same thread, what a pull that unpacks must do \
         beyond it, at its plainest: each layer blob gzip-decoded (flate2 with zlib-rs, as \
         berth's), its tar stream hashed and checked against the diff id, and its entries \
         written out with std::fs (no owners, modes, times or xattrs, no path confinement, no \
         whiteouts, no fsync of the files). It is the floor of one thread doing a pull that \
         unpacks, minus the network; a tool using both cores can beat its wall time, not its \
         CPU time.\n"
    );
    let _ = writeln!(
        md,
        "{}\n",
        if berth_unpacks {
            "Not like for like: this `berth pull` also unpacks every layer into a snapshot \
             (`<root>/snapshots`, as `docker pull` / `podman pull` would), so its time is the \
             download plus the unpack that `## Layer unpack` times on its own; `skopeo copy` \
             and the raw limit only store the blobs. Like docker and podman, berth does not wait \
             for the unpacked files to reach the disk; unlike them, it unpacks again after a \
             restart any layer not flushed since (docs/decisions.md)."
        } else {
            "`berth pull` stored the blobs and image record only (no snapshots were \
             unpacked), like `skopeo copy` to an OCI layout."
        }
    );
    if !notes.is_empty() {
        let _ = writeln!(md, "Peers left out:\n");
        for n in &notes {
            let _ = writeln!(md, "- {}", n.replace('\n', " "));
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Command lines (`<i>` = warmup0.. then 0..{}; PORT a free port picked per run of the benchmark):\n",
        opts.runs - 1
    );
    let _ = writeln!(md, "```");
    for line in &command_lines {
        let _ = writeln!(
            md,
            "{}",
            line.replace(&registry_host(&reference), "127.0.0.1:PORT")
        );
    }
    let _ = writeln!(md, "```\n");
    if only.is_some() {
        println!("bench: --only given, docs/benchmarks.md left as it is");
        return Ok(());
    }
    let docs = root.join("docs/benchmarks.md");
    write_section(&docs, SECTION, &md)?;
    println!(
        "bench: wrote the \"{SECTION}\" section of {}",
        docs.display()
    );
    Ok(())
}

/// `127.0.0.1:PORT` of a reference.
fn registry_host(reference: &str) -> String {
    reference.split('/').next().unwrap_or(reference).to_string()
}
