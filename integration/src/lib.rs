//! Helpers shared by the privileged integration tests.
//!
//! Tests run the real `berth` binary (env `BERTH_BIN`, default
//! `target/debug/berth`) as root against real kernel features, with the
//! offline test images (env `BERTH_TEST_ASSETS`, default
//! `target/test-images`, built by `cargo xtask test-images`). Every test gets
//! its own state root and bundle in a temp dir (under `TMPDIR`), so tests can
//! run in parallel and a failed one leaves nothing that breaks the next.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod daemon;
pub mod fake_registry;
pub mod registry;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ lives in the workspace")
        .to_path_buf()
}

/// The `berth` binary under test.
pub fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/berth"))
}

/// The test images directory.
pub fn assets() -> PathBuf {
    let dir = std::env::var_os("BERTH_TEST_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/test-images"));
    assert!(
        dir.join("busybox-rootfs/bin/busybox").exists(),
        "test images missing in {}: run `cargo xtask test-images`",
        dir.display()
    );
    dir
}

/// Whether we can run privileged tests; prints why not otherwise.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipped: privileged integration tests need root");
        false
    }
}

/// A unique container id for this process.
pub fn unique_id(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An isolated runtime state root plus scratch space for bundles.
pub struct Env {
    /// Holds everything; removed on drop.
    pub tmp: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// A fresh environment in `TMPDIR`.
    pub fn new() -> Env {
        Env {
            tmp: tempfile::Builder::new()
                .prefix("berth-it-")
                .tempdir()
                .expect("create temp dir"),
        }
    }

    /// The runtime's `--root`.
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// A bundle named `name`: a copy of the busybox rootfs and the config of
    /// `berth runtime spec` with no terminal and hostname `berth-test`,
    /// then changed by `edit`.
    pub fn bundle(&self, name: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("create bundle dir");
        let status = Command::new("cp")
            .arg("-a")
            .arg(assets().join("busybox-rootfs"))
            .arg(dir.join("rootfs"))
            .status()
            .expect("run cp");
        assert!(status.success(), "copy rootfs");
        let out = Command::new(berth_bin())
            .args(["runtime", "spec", "-b"])
            .arg(&dir)
            .output()
            .expect("run berth runtime spec");
        assert!(
            out.status.success(),
            "berth runtime spec: {}",
            text(&out.stderr)
        );
        let mut config = read_json(&dir.join("config.json"));
        config["process"]["terminal"] = Value::Bool(false);
        config["hostname"] = Value::from("berth-test");
        edit(&mut config);
        write_json(&dir.join("config.json"), &config);
        dir
    }

    /// `berth runtime --root <root> ARGS...`, not yet run.
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(berth_bin());
        cmd.arg("runtime").arg("--root").arg(self.root()).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Run `berth runtime ARGS...` and collect its output.
    ///
    /// Output goes through files, not pipes: a detached container inherits
    /// berth's stdout and would keep a pipe open for as long as it runs.
    pub fn run(&self, args: &[&str]) -> Output {
        output_through_files(&mut self.berth(args))
    }

    /// `berth runtime run -b BUNDLE ID` in the foreground.
    pub fn run_container(&self, bundle: &Path, id: &str) -> Output {
        self.run(&["run", "-b", path_str(bundle), id])
    }

    /// The container's status from `berth runtime state`, or None if it does not exist.
    pub fn status(&self, id: &str) -> Option<String> {
        let out = self.run(&["state", id]);
        if !out.status.success() {
            return None;
        }
        let state: Value = serde_json::from_slice(&out.stdout).expect("state is JSON");
        state["status"].as_str().map(str::to_string)
    }

    /// The container's init pid from `berth runtime state`.
    pub fn pid(&self, id: &str) -> i32 {
        let out = self.run(&["state", id]);
        assert!(out.status.success(), "state {id}: {}", text(&out.stderr));
        let state: Value = serde_json::from_slice(&out.stdout).expect("state is JSON");
        state["pid"].as_i64().expect("pid") as i32
    }

    /// Wait until the container has `status` (panics after 10 s).
    pub fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status(id).as_deref() != Some(status) {
            assert!(Instant::now() < deadline, "{id} never became {status}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A path as &str (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Lossy UTF-8 of command output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Read a JSON file.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("parse json")
}

/// Write a JSON file.
pub fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).expect("encode")).expect("write json");
}

/// Set `process.args` of a config to `sh -c SCRIPT`.
pub fn sh(config: &mut Value, script: &str) {
    config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
}

/// Every cgroup directory (any hierarchy) whose name is `id`.
pub fn cgroup_dirs_named(id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, id: &str, depth: usize, out: &mut Vec<PathBuf>) {
        if depth > 8 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let path = entry.path();
                if entry.file_name().to_str() == Some(id) {
                    out.push(path.clone());
                }
                walk(&path, id, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), id, 0, &mut out);
    out
}

/// Assert that the command `what` succeeded (else panic with its output); returns
/// its stdout.
pub fn expect_success(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Poll `cond` every 50 ms until it holds; panics naming `what` after `secs`.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Host mount points (from /proc/self/mountinfo) that contain `needle`.
pub fn host_mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Run `cmd` to completion with stdout and stderr going to temp files (a
/// detached container keeps a pipe open for as long as it runs; a file does not block).
fn output_through_files(cmd: &mut Command) -> Output {
    let out = tempfile::tempfile().expect("temp file");
    let err = tempfile::tempfile().expect("temp file");
    let status = cmd
        .stdout(out.try_clone().expect("dup"))
        .stderr(err.try_clone().expect("dup"))
        .status()
        .expect("run berth");
    Output {
        status,
        stdout: read_all(out),
        stderr: read_all(err),
    }
}

fn read_all(mut file: std::fs::File) -> Vec<u8> {
    use std::io::{Read, Seek};
    let mut buf = Vec::new();
    file.rewind().expect("rewind");
    file.read_to_end(&mut buf).expect("read output");
    buf
}

/// Whether `pid` is a live process (not absent, not a zombie waiting for a reaper).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("X");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// An isolated engine state (`berth --root`) and config dir for image and container tests.
///
/// Each engine gets its own host-global network names in `<root>/config.json`
/// (default bridge device, user-network bridge prefix, nftables table,
/// default subnet) made from the pid and a counter, so parallel tests never
/// share (or touch a user's) `berth0` and `ip berth`; dropping the engine
/// deletes whatever bridges and table are left.
pub struct Engine {
    /// Holds the state root, config and scratch files; removed on drop.
    pub tmp: tempfile::TempDir,
    /// This engine's number in the process (names, subnets).
    pub index: usize,
    /// Third octet of this engine's test subnets (see [`Engine::subnet`]).
    octet: usize,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Containers a failed test left running hold veths on the bridges.
        if self.root().join("containers").exists() {
            let ids = self.run(&["ps", "-a", "-q"]);
            for id in text(&ids.stdout).split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
        }
        let names = self.net_names();
        for link in host_links() {
            if link == names.0 || link.starts_with(&names.1) {
                let _ = Command::new("ip").args(["link", "del", &link]).status();
            }
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &names.2])
            .stderr(Stdio::null())
            .status();
    }
}

/// Names of the host's network interfaces (`ip -br link`, `@peer` suffix cut).
pub fn host_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-br", "link"])
        .output()
        .expect("run ip");
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// `nft list tables` of the host, one table a line.
pub fn host_nft_tables() -> Vec<String> {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("run nft");
    let mut v: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    v.sort();
    v
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// The third octet of an engine's test subnets `10.201..=241.X.0/24`: X is
/// `slot * 32 + index`, the slot first taken from the process id (so suites running
/// at the same time almost surely differ), then the next slot whose subnets no host
/// route uses yet (a bridge left by a killed suite, for one).
fn free_third_octet(index: usize) -> usize {
    assert!(index < 32, "too many engines in one test process");
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    let used = |x: usize| {
        routes.lines().any(|l| {
            let dst = l.split_whitespace().next().unwrap_or("");
            let o: Vec<&str> = dst.split(['.', '/']).collect();
            o.len() >= 3
                && o[0] == "10"
                && o[1]
                    .parse::<usize>()
                    .is_ok_and(|b| (201..=241).contains(&b))
                && o[2] == x.to_string()
        })
    };
    let first = std::process::id() as usize % 8;
    (0..8)
        .map(|j| ((first + j) % 8) * 32 + index)
        .find(|&x| !used(x))
        .unwrap_or(first * 32 + index)
}

impl Engine {
    /// A fresh engine state in `TMPDIR`.
    pub fn new() -> Engine {
        static N: AtomicUsize = AtomicUsize::new(0);
        let index = N.fetch_add(1, Ordering::Relaxed);
        let e = Engine {
            tmp: tempfile::Builder::new()
                .prefix("berth-engine-")
                .tempdir()
                .expect("create temp dir"),
            index,
            octet: free_third_octet(index),
        };

        let (bridge, prefix, table) = e.net_names();
        std::fs::create_dir_all(e.root()).expect("create root");
        write_json(
            &e.root().join("config.json"),
            &serde_json::json!({
                "bridge": bridge,
                "bridge-prefix": prefix,
                "nft-table": table,
                "default-subnet": e.subnet_in(201),
            }),
        );
        e
    }

    /// (default bridge device, user-network bridge prefix, nftables table).
    pub fn net_names(&self) -> (String, String, String) {
        let tag = format!("{:x}x{:x}", std::process::id(), self.index);
        (
            format!("bt{tag}"),
            format!("bu{tag}"),
            format!("berth_t{}", tag.replace('x', "_")),
        )
    }

    /// A subnet of this engine's own for test network `k` (0..40):
    /// `10.(202+k).X.0/24`, X made of this engine's index and the process id, so
    /// neither another engine of this process nor (almost surely) a test suite
    /// running at the same time in another process uses it.
    pub fn subnet(&self, k: usize) -> String {
        assert!(k < 40);
        self.subnet_in(202 + k)
    }

    fn subnet_in(&self, second_octet: usize) -> String {
        format!("10.{second_octet}.{}.0/24", self.third_octet())
    }

    fn third_octet(&self) -> usize {
        self.octet
    }

    /// The first three octets of this engine's default-bridge subnet, e.g. `10.201.37`.
    pub fn default_subnet_prefix(&self) -> String {
        format!("10.201.{}", self.third_octet())
    }

    /// The `--root` directory.
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    /// `berth --root ROOT ARGS...` with its own XDG_CONFIG_HOME and HOME, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_at(&self.root(), args)
    }

    /// As [`Engine::command`], with another `--root` (a copy of this engine's
    /// state, say).
    pub fn command_at(&self, root: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(berth_bin());
        cmd.arg("--root")
            .arg(root)
            .arg("--run-root")
            .arg(self.tmp.path().join("run"))
            .args(args)
            .env("XDG_CONFIG_HOME", self.tmp.path().join("config"))
            .env("HOME", self.tmp.path().join("home"))
            .stdin(Stdio::null());
        cmd
    }

    /// Run `berth ARGS...` and collect its output (through files, see [`Env::run`]).
    pub fn run(&self, args: &[&str]) -> Output {
        output_through_files(&mut self.command(args))
    }

    /// Run and assert success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        expect_success(&format!("berth {args:?}"), &self.run(args))
    }

    /// Names of the snapshots in the snapshotter's metadata, sorted.
    pub fn snapshots(&self) -> Vec<String> {
        let meta = self.root().join("snapshots/metadata.json");
        let v: serde_json::Value = std::fs::read(&meta)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut out: Vec<String> = v["snapshots"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The content store's blobs (hex) and whether each one's bytes match its name.
    pub fn blobs(&self) -> Vec<(String, bool)> {
        let dir = self.root().join("content/blobs/sha256");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let data = std::fs::read(entry.path()).unwrap_or_default();
            let ok = fake_registry::digest_of(&data) == format!("sha256:{name}");
            out.push((name, ok));
        }
        out.sort();
        out
    }

    /// Snapshot directories (`<root>/snapshots/<id>/fs`) that exist.
    pub fn snapshot_dirs(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.root().join("snapshots"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("fs"))
            .filter(|p| p.is_dir())
            .collect();
        out.sort();
        out
    }

    /// A fresh engine with the busybox test image loaded and tagged `bb`.
    pub fn with_busybox() -> Engine {
        let e = Engine::new();
        let tar = e.busybox_oci_tar();
        let out = e.ok(&["load", "-i", tar.to_str().expect("utf-8 path")]);
        let id = out
            .split("Loaded image ID: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no image id in {out:?}"))
            .trim()
            .to_string();
        e.ok(&["tag", &id, "bb"]);
        e
    }

    /// `berth inspect NAME`, the first object.
    pub fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect is JSON");
        v[0].clone()
    }

    /// Assert nothing under this engine's root is mounted on the host.
    pub fn assert_no_mounts(&self) {
        let root = self.root();
        let mounts = host_mounts_containing(path_str(&root));
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }

    /// Assert `berth ARGS` fails with exit 125 and one line of stderr naming `needle`.
    pub fn fails(&self, args: &[&str], needle: &str) {
        let out = self.run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "berth {args:?}: {err}");
        assert!(
            err.contains(needle),
            "berth {args:?}: {err:?} lacks {needle:?}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    }

    /// The busybox test image as an OCI layout tar in this engine's scratch space.
    pub fn busybox_oci_tar(&self) -> PathBuf {
        let tar = self.tmp.path().join("busybox-oci.tar");
        if !tar.exists() {
            let status = Command::new("tar")
                .arg("-C")
                .arg(assets().join("busybox-oci"))
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .expect("run tar");
            assert!(status.success());
        }
        tar
    }
}

/// A character major no driver on this host has registered: opening a node
/// of it fails with ENXIO when device rules let the open through and with
/// EPERM when they refuse it, and touches no real device either way.
pub fn free_char_major() -> u32 {
    let devices = std::fs::read_to_string("/proc/devices").expect("read /proc/devices");
    let used: Vec<u32> = devices
        .lines()
        .take_while(|l| !l.starts_with("Block"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (234..=254)
        .rev()
        .find(|m| !used.contains(m))
        .expect("a free character major")
}
