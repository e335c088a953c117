//! `cargo xtask`: berth's project tasks.
//!
//! - `demo`: install what is needed, build berth, run a busybox container.
//! - `test [--host|--vm]`: fmt check, clippy, unit tests, the
//!   privileged integration suite on this host, and the same suite in a VM
//!   (cgroup v2) for the runtime.
//! - `fuzz [TARGET] [--seconds N] [--jobs J]`: run the libFuzzer targets in fuzz/.
//! - `test-images`: build the offline busybox test images under target/.
//! - `test-vm [--shell] [-- FILTER]`: the privileged suite in a throwaway VM.
//! - `bench runtime|pull|unpack`: berth beside runc/crun (start-up), skopeo and a
//!   raw write (pull), GNU tar (layer unpack); written to docs/benchmarks.md.

mod bench;
mod fuzz;
mod images;
mod util;
mod vm;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use util::{cargo, run_inherit, target_dir};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::exit(1);
        }
    }
}

const USAGE: &str = "usage: cargo xtask <demo | test [--host|--vm] | fuzz [TARGET] [--seconds N] | test-images | test-vm [--shell] [-- FILTER] | bench runtime|pull|unpack [--runs N]>";

fn dispatch(args: &[String]) -> Result<()> {
    let Some(task) = args.first() else {
        bail!("{USAGE}");
    };
    let rest = &args[1..];
    match task.as_str() {
        "demo" => demo(),
        "test" => test(rest),
        "test-images" => images::build(&target_dir()).map(|_| ()),
        "test-vm" => test_vm(rest),
        "bench" => bench::main(rest),
        "fuzz" => fuzz::main(rest),
        other => bail!("unknown task {other:?}\n{USAGE}"),
    }
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (it creates namespaces, mounts and cgroups)");
    }
    Ok(())
}

fn build_berth(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "berth-cli"]);
    if release {
        cmd.arg("--release");
    }
    run_inherit(&mut cmd)?;
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join("berth"))
}

/// Build berth and run a busybox container through `berth runtime run`.
fn demo() -> Result<()> {
    require_root("the demo")?;
    let images = images::build(&target_dir())?;
    let berth = build_berth(false)?;
    let dir = target_dir().join("demo");
    let bundle = dir.join("bundle");
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle)?;
    }
    std::fs::create_dir_all(&bundle)?;
    run_inherit(
        Command::new("cp")
            .arg("-a")
            .arg(images.rootfs())
            .arg(bundle.join("rootfs")),
    )?;
    run_inherit(
        Command::new(&berth)
            .args(["runtime", "spec", "-b"])
            .arg(&bundle),
    )?;
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
    config["process"]["terminal"] = serde_json::Value::Bool(false);
    config["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "echo \"hello from berth: I am PID $$ on host '$(hostname)', links: $(ls /sys/class/net)\"; grep -E 'Seccomp:|NoNewPrivs' /proc/self/status"
    ]);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    println!("$ berth runtime run -b {} demo", bundle.display());
    let status = Command::new(&berth)
        .args(["runtime", "--root"])
        .arg(dir.join("state"))
        .args(["run", "-b"])
        .arg(&bundle)
        .arg("demo")
        .status()
        .context("run berth")?;
    if !status.success() {
        bail!("the demo container failed ({status})");
    }
    Ok(())
}

/// Paths of the integration test binaries, built without running them.
fn integration_test_binaries() -> Result<Vec<PathBuf>> {
    let out = util::run(cargo().args([
        "test",
        "-p",
        "berth-integration",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut bins = Vec::new();
    for line in out.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["profile"]["test"] == true {
            if let Some(exe) = msg["executable"].as_str() {
                bins.push(PathBuf::from(exe));
            }
        }
    }
    if bins.is_empty() {
        bail!("no integration test binaries were built");
    }
    Ok(bins)
}

/// Integration test files (integration/tests/NAME.rs) that run in the VM.
const VM_SUITES: &[&str] = &["runtime", "harness", "vm_sandbox"];

/// Run the privileged suite in a VM; fails if the host shows any of the VM's kernel state after.
fn run_vm_suite(filter: Option<&str>, shell: bool) -> Result<()> {
    require_root("test-vm")?;
    let images = images::build(&target_dir())?;
    let berth = build_berth(false)?;
    // Suites that need only the kernel; the image tests need a registry
    // server and skopeo, which the VM's initramfs does not carry.
    let bins: Vec<PathBuf> = integration_test_binaries()?
        .into_iter()
        .filter(|b| {
            let name = b.file_name().and_then(|n| n.to_str()).unwrap_or("");
            VM_SUITES.iter().any(|s| name.starts_with(&format!("{s}-")))
        })
        .collect();
    let share = target_dir().join("vm/share");
    if share.exists() {
        std::fs::remove_dir_all(&share)?;
    }
    std::fs::create_dir_all(&share)?;
    let script = vm::prepare_share(&share, &berth, &bins, &images.dir, filter)?;
    let code = vm::run(&vm::VmOptions {
        share,
        script,
        shell,
        timeout: Duration::from_secs(900),
        cache_dir: target_dir().join("vm"),
    })?;
    let leftovers = vm::host_leftovers();
    if !leftovers.is_empty() {
        bail!(
            "the VM's kernel state leaked to the host: {}",
            leftovers.join(", ")
        );
    }
    if code != 0 {
        bail!("the test suite in the VM failed (exit {code})");
    }
    println!(
        "xtask: VM suite passed; the host has none of its bridges, nft tables or overlay mounts"
    );
    Ok(())
}

fn test_vm(args: &[String]) -> Result<()> {
    let shell = args.iter().any(|a| a == "--shell");
    let filter = args
        .iter()
        .position(|a| a == "--")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    run_vm_suite(filter, shell)
}

/// fmt, clippy, doc, unit tests, the privileged suite on this host, and the VM run.
fn test(args: &[String]) -> Result<()> {
    let host = !args.iter().any(|a| a == "--vm");
    let vm = !args.iter().any(|a| a == "--host");
    if host {
        println!("== cargo fmt --check");
        run_inherit(cargo().args(["fmt", "--all", "--check"]))?;
        println!("== cargo clippy -D warnings");
        run_inherit(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        println!("== cargo doc -D warnings (doc links and markup)");
        run_inherit(
            cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )?;
        require_root("the privileged integration suite")?;
        // Real peers the tests talk to: a registry, htpasswd for its auth,
        // skopeo and umoci for interoperability, and containerd, Docker and Podman.
        util::ensure_packages(&[
            ("docker-registry", "/usr/bin/docker-registry"),
            ("apache2-utils", "/usr/bin/htpasswd"),
            ("skopeo", "/usr/bin/skopeo"),
            ("umoci", "/usr/bin/umoci"),
            ("nftables", "/usr/sbin/nft"),
            ("iproute2", "/usr/sbin/ip"),
            // The host's ps, which `top CONTAINER PS-OPTIONS` runs (as Docker's).
            ("procps", "/usr/bin/ps"),
            // Clients that drive berth-runc as their runc (integration/tests/interop.rs).
            ("containerd", "/usr/bin/containerd"),
            ("docker.io", "/usr/sbin/dockerd"),
            ("podman", "/usr/bin/podman"),
        ])?;
        images::build(&target_dir())?;
        build_berth(false)?;
        println!("== cargo test (unit tests and the privileged integration suite, on this host)");
        run_inherit(cargo().args(["test", "--workspace"]))?;
        println!("== fuzz targets, 60 s each");
        fuzz::main(&[])?;
    }
    if vm {
        println!("== the privileged suite in a VM (cgroup v2)");
        run_vm_suite(None, false)?;
    }
    Ok(())
}
