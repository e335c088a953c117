//! `cargo xtask test-vm`: runs the privileged integration tests as root in a throwaway QEMU VM.
//!
//! The VM boots Debian's generic kernel (`linux-image-amd64`, fetched with `apt-get download` and
//! unpacked with `dpkg-deb -x` into the cache dir, never installed) straight from its ELF `vmlinux`
//! (PVH entry), with an initramfs built here from busybox-static, kmod, the kernel modules a
//! container engine needs and a few host tools (ip, nft, bash, dash, util-linux mount/unshare).
//! The host's share dir is mounted read-only over virtio-9p at `/mnt/share`; a fresh sparse ext4
//! disk is mounted at `/scratch` (overlayfs upper/work dirs cannot live on 9p). The guest runs
//! cgroup v2 only. The guest script's exit code comes back as a marker line on the serial
//! console (and, as a fallback, as a file on the scratch disk read with `debugfs`).
//! See docs/testing.md.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `cargo xtask test-vm`.
pub struct VmOptions {
    /// Host dir shared read-only with the guest over virtio-9p at /mnt/share; holds the binaries and test assets.
    pub share: PathBuf,
    /// Shell script text run by the guest as root with bash, cwd = /mnt/share; its exit status is the result.
    pub script: String,
    /// Drop into an interactive shell in the guest instead of running the script (`--shell`).
    pub shell: bool,
    /// Kill the VM after this long and report a failure with the last console lines.
    pub timeout: Duration,
    /// Where the cached kernel, modules and initramfs live (e.g. `<workspace>/target/vm`).
    pub cache_dir: PathBuf,
}

/// Kernel modules loaded before the script starts: what /init needs for the share and the
/// scratch disk, plus `br_netfilter` (never autoloaded; container engines load it explicitly) and
/// overlay. They and [`MODULES`] go into the initramfs with their dependencies.
const BOOT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "9pnet_virtio",
    "9p",
    "ext4",
    "crc32c_generic",
    "overlay",
    "br_netfilter",
];

/// Further modules a container engine uses. /init loads them in the background while the script
/// starts (the script's single-threaded tests leave the second vCPU idle); anything needed before
/// that finishes is autoloaded by the kernel through kmod's modprobe. Missing ones are skipped.
const MODULES: &[&str] = &[
    // container filesystems and networking
    "loop",
    "bridge",
    "veth",
    "dummy",
    "tun",
    "macvlan",
    // nftables incl. NAT / masquerade / conntrack
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_redir",
    "nft_ct",
    "nft_compat",
    "nft_fib_inet",
    "nft_reject_inet",
    "nft_limit",
    "nf_conntrack",
    "nf_nat",
    // iptables (nft and legacy backends), for tools that still use it
    "ip_tables",
    "ip6_tables",
    "iptable_nat",
    "iptable_filter",
    "ip6table_nat",
    "ip6table_filter",
    "xt_MASQUERADE",
    "xt_conntrack",
    "xt_addrtype",
    "xt_comment",
    "xt_mark",
    "xt_nat",
    "xt_tcpudp",
];

/// Host tools copied into the initramfs with their shared libraries: (name, required).
const TOOLS: &[(&str, bool)] = &[
    ("kmod", true),
    ("bash", true),
    ("dash", true),
    ("ip", true),
    ("nft", true),
    ("mount", true),
    ("umount", true),
    ("unshare", false),
    ("nsenter", false),
    ("pivot_root", false),
    ("xtables-nft-multi", false),
    ("xtables-legacy-multi", false),
];

/// Host environment variables passed into the guest script's environment when set.
const PASS_ENV: &[&str] = &["BERTH_TEST_FAIL", "RUST_BACKTRACE", "RUST_LOG"];

/// Bump when the initramfs layout changes in a way the input hash cannot see.
const INITRD_FORMAT: u32 = 1;
/// Size of the sparse scratch disk.
const SCRATCH_BYTES: u64 = 4 << 30;
/// Console lines shown when the VM fails.
const TAIL_LINES: usize = 40;
/// Guest RAM in MiB.
const MEM_MIB: u32 = 2048;

const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 quiet mitigations=off no_timer_check \
    tsc=reliable i8042.noaux i8042.nokbd i8042.nopnp cryptomgr.notests random.trust_cpu=on \
    8250.nr_uarts=1 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all rdinit=/init";

/// PID 1 of the guest (busybox sh). Stage 1 re-roots onto a bind mount of the initramfs so that
/// `/` is a real mount (pivot_root from the initramfs rootfs itself fails with EINVAL).
const INIT: &str = r#"#!/bin/busybox sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
if [ "$BERTH_STAGE" != 2 ]; then
    # re-root: / becomes a bind mount of the rootfs, which pivot_root and make-rshared accept
    /bin/busybox mount --bind / /.root && cd /.root && /bin/busybox mount --move . / && BERTH_STAGE=2 exec /bin/busybox chroot . /init
    echo "berth-vm: re-rooting failed, staying on rootfs"
fi
unset BERTH_STAGE
mount -t proc proc /proc
t_init=$(cut -d' ' -f1 /proc/uptime)
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue 2>/dev/null
ln -sf /proc/self/fd /dev/fd; ln -sf fd/0 /dev/stdin; ln -sf fd/1 /dev/stdout; ln -sf fd/2 /dev/stderr
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
for c in cpu cpuset memory pids io; do echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; done
mount --make-rshared /
echo /usr/sbin/modprobe > /proc/sys/kernel/modprobe
/usr/sbin/modprobe -a $(cat /etc/berth-modules-boot)
(/usr/sbin/modprobe -a $(cat /etc/berth-modules) </dev/null >/dev/null 2>&1 &)
t_mods=$(cut -d' ' -f1 /proc/uptime)
ip link set lo up
hostname berth-vm
sysctl -qw kernel.panic_on_oops=1 2>/dev/null
mkdir -p /mnt/share /scratch
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose share /mnt/share || echo "berth-vm: cannot mount the 9p share"
mount -t ext4 -o noinit_itable /dev/vda /scratch || echo "berth-vm: cannot mount the scratch disk"
mkdir -p /scratch/tmp && chmod 1777 /scratch/tmp
# shared libraries of the binaries under test that the initramfs lacks (prepare_share puts them there)
if [ -d /mnt/share/lib ]; then
    for l in /mnt/share/lib/*; do [ -e "$l" ] && [ ! -e "/usr/lib/x86_64-linux-gnu/${l##*/}" ] && ln -s "$l" /usr/lib/x86_64-linux-gnu/; done
fi
for w in $(cat /proc/cmdline); do
    case "$w" in berth.nonce=*) nonce=${w#*=};; berth.mode=*) mode=${w#*=};; berth.rows=*) rows=${w#*=};; berth.cols=*) cols=${w#*=};; esac
done
export TMPDIR=/scratch/tmp BERTH_IN_VM=1 TERM=${TERM:-linux}
[ -f /scratch/.berth-vm/env ] && . /scratch/.berth-vm/env
cd /mnt/share
if [ "$mode" = shell ]; then
    export PS1='berth-vm:\w# '
    [ -n "$rows" ] && stty -F /dev/ttyS0 rows "$rows" cols "$cols" 2>/dev/null
    echo "berth-vm: shell as root; /mnt/share (ro), /scratch (ext4), TMPDIR=$TMPDIR. Exit the shell to power off."
    setsid -c /usr/bin/bash -i 0<>/dev/ttyS0 1>&0 2>&0
    rc=$?
else
    echo "BERTH-VM-START-$nonce init=${t_init}s modules=${t_mods}s script=$(cut -d' ' -f1 /proc/uptime)s"
    /usr/bin/bash /scratch/.berth-vm/script.sh </dev/null
    rc=$?
fi
echo "$rc" > /scratch/.berth-vm/exit-code
sync
echo "BERTH-VM-EXIT-$nonce=$rc"
poweroff -f
"#;

/// Runs `opts.script` (or a shell) in a fresh VM and returns the script's exit code.
///
/// Installs missing host packages, fetches and caches the kernel, (re)builds the cached
/// initramfs when its inputs changed, creates a fresh scratch disk and boots QEMU. The console
/// is streamed to stdout. Fails when the VM hangs past `opts.timeout` (the VM is killed) or
/// stops without reporting an exit code; the error includes the last 40 console lines.
pub fn run(opts: &VmOptions) -> Result<i32> {
    let share = opts
        .share
        .canonicalize()
        .with_context(|| format!("share dir {}", opts.share.display()))?;
    if !share.is_dir() {
        bail!("share {} is not a directory", share.display());
    }
    ensure_host_packages()?;
    fs::create_dir_all(&opts.cache_dir)
        .with_context(|| format!("creating {}", opts.cache_dir.display()))?;
    let cache_dir = opts.cache_dir.canonicalize()?;
    let kernel = ensure_kernel(&cache_dir)?;
    let initrd = ensure_initrd(&cache_dir, &kernel)?;
    remove_stale_run_dirs(&cache_dir);
    let nonce = nonce();
    let run_dir = cache_dir.join(format!("run-{}-{nonce}", std::process::id()));
    let result = (|| {
        let disk = make_scratch_disk(&run_dir, &opts.script)?;
        boot(opts, &share, &kernel, &initrd, &disk, &nonce)
    })();
    let _ = fs::remove_dir_all(&run_dir);
    result
}

/// Removes `run-<pid>-*` dirs (scratch disks) of runs whose process is gone (e.g. killed by Ctrl-C).
fn remove_stale_run_dirs(cache: &Path) {
    for e in fs::read_dir(cache).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix("run-").and_then(|r| r.split('-').next());
        if let Some(pid) = pid {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Builds the share dir contents for a test run: copies `berth_bin` to share/bin/berth (and the
/// berth-monitor beside it to share/bin/berth-monitor), each test binary to `share/tests/<name>`,
/// symlinks or copies `assets` to share/test-images, and returns the guest script that runs each test binary
/// (with `--test-threads=1` plus the optional filter) with BERTH_BIN=/mnt/share/bin/berth, BERTH_TEST_ASSETS=/mnt/share/test-images, TMPDIR=/scratch/tmp,
/// printing a header per binary and exiting non-zero if any failed.
///
/// Assets are hard-linked where possible and copied otherwise (a symlink would point outside the
/// 9p export). Shared libraries of the binaries go to share/lib; the guest links in those its
/// initramfs lacks. The script is also written to share/run-tests.sh (handy in `--shell`), and it
/// sets BERTH_IN_VM=1, BERTH_VM_LEAVE_STATE=1 and passes BERTH_TEST_FAIL through from the host.
pub fn prepare_share(
    share: &Path,
    berth_bin: &Path,
    test_bins: &[PathBuf],
    assets: &Path,
    filter: Option<&str>,
) -> Result<String> {
    fs::create_dir_all(share).with_context(|| format!("creating {}", share.display()))?;
    for sub in ["bin", "tests", "lib", "test-images", "run-tests.sh"] {
        let p = share.join(sub);
        if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        }
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("cleaning {}", p.display()))?;
    }
    fs::create_dir_all(share.join("bin"))?;
    fs::create_dir_all(share.join("tests"))?;
    fs::create_dir_all(share.join("lib"))?;
    fs::copy(berth_bin, share.join("bin/berth"))
        .with_context(|| format!("copying {}", berth_bin.display()))?;
    // The slim container monitor `berth __monitor` execs into, found next to berth.
    let slim = berth_bin.with_file_name("berth-monitor");
    fs::copy(&slim, share.join("bin/berth-monitor"))
        .with_context(|| format!("copying {}", slim.display()))?;
    let mut names = Vec::new();
    let mut libs = BTreeSet::new();
    libs.extend(ldd(berth_bin)?);
    libs.extend(ldd(&slim)?);
    for bin in test_bins {
        let name = bin
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("bad test binary path {}", bin.display()))?
            .to_string();
        if names.contains(&name) {
            bail!("two test binaries are named {name}");
        }
        fs::copy(bin, share.join("tests").join(&name))
            .with_context(|| format!("copying {}", bin.display()))?;
        libs.extend(ldd(bin)?);
        names.push(name);
    }
    for lib in libs {
        let name = lib.file_name().context("library without a name")?;
        fs::copy(&lib, share.join("lib").join(name))
            .with_context(|| format!("copying {}", lib.display()))?;
    }
    if assets.exists() {
        copy_tree(assets, &share.join("test-images"))?;
    } else {
        fs::create_dir_all(share.join("test-images"))?;
    }

    let mut s = String::new();
    s.push_str("# generated by xtask (vm::prepare_share): runs the privileged integration tests in the VM\n");
    s.push_str("export BERTH_BIN=/mnt/share/bin/berth BERTH_TEST_ASSETS=/mnt/share/test-images TMPDIR=/scratch/tmp\n");
    s.push_str("export BERTH_IN_VM=1 BERTH_VM_LEAVE_STATE=1\n");
    if let Ok(v) = std::env::var("BERTH_TEST_FAIL") {
        let _ = writeln!(s, "export BERTH_TEST_FAIL={}", sh_quote(&v));
    }
    s.push_str("mkdir -p \"$TMPDIR\"\nfailed=()\n");
    let filter_arg = filter
        .map(|f| format!(" {}", sh_quote(f)))
        .unwrap_or_default();
    for name in &names {
        let q = sh_quote(name);
        let _ = writeln!(
            s,
            "echo; echo \"==== berth-vm: test binary {name} ====\"\n\
             /mnt/share/tests/{q} --test-threads=1{filter_arg}\n\
             rc=$?; if [ $rc -ne 0 ]; then echo \"==== berth-vm: {name} FAILED (exit $rc) ====\"; failed+=({q}); fi"
        );
    }
    s.push_str(
        "echo\nif [ ${#failed[@]} -ne 0 ]; then echo \"==== berth-vm: failed test binaries: ${failed[*]} ====\"; exit 1; fi\n\
         echo \"==== berth-vm: all test binaries passed ====\"\n",
    );
    fs::write(share.join("run-tests.sh"), &s)?;
    Ok(s)
}

/// Reports kernel state on the host that the VM-only test `kernel_state_is_sandboxed` creates in
/// the guest: a link `berthvmtest0`, an nft table `berth_vm_test`, an overlay mount whose path
/// contains `berth-vm`. Empty when the host is clean.
pub fn host_leftovers() -> Vec<String> {
    let mut found = Vec::new();
    // `ip` sees the caller's network namespace; /sys/class/net that of the sysfs mount
    let by_ip = Command::new("ip")
        .args(["-o", "link", "show", "dev", "berthvmtest0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if by_ip || Path::new("/sys/class/net/berthvmtest0").exists() {
        found.push("network link berthvmtest0 exists on the host".to_string());
    }
    if let Ok(out) = Command::new("nft").args(["list", "tables"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains("berth_vm_test") {
                found.push(format!("nft table on the host: {}", line.trim()));
            }
        }
    }
    if let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") {
        for line in mountinfo.lines() {
            // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTS
            let fields: Vec<&str> = line.split(' ').collect();
            let fstype = line.split(" - ").nth(1).and_then(|r| r.split(' ').next());
            if let (Some(mp), Some("overlay")) = (fields.get(4), fstype) {
                if mp.contains("berth-vm") {
                    found.push(format!("overlay mount on the host: {mp}"));
                }
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// host packages

/// Installs the Debian packages the VM needs, when missing.
fn ensure_host_packages() -> Result<()> {
    let wanted = [
        "busybox-static",
        "cpio",
        "kmod",
        "e2fsprogs",
        "xz-utils",
        "nftables",
        "iproute2",
        "qemu-system-x86",
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing packages {}; install them as root (apt-get install --no-install-recommends {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    println!("vm: installing {}", missing.join(" "));
    let plain: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| *p != "qemu-system-x86")
        .collect();
    if !plain.is_empty() {
        apt_install(&plain, None)?;
    }
    if missing.contains(&"qemu-system-x86") {
        install_qemu()?;
    }
    Ok(())
}

fn package_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ok installed"))
        .unwrap_or(false)
}

fn package_version(pkg: &str) -> Option<String> {
    let o = Command::new("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", pkg])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() || !s.contains("ok installed") {
        return None;
    }
    s.split_whitespace().last().map(str::to_string)
}

/// Upstream major version of a Debian version string ("1:10.0.2+ds-2~bpo12+1" -> 10).
fn upstream_major(version: &str) -> Option<u32> {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn apt_install(pkgs: &[&str], target_release: Option<&str>) -> Result<()> {
    let attempt = || {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
        ]);
        if let Some(t) = target_release {
            cmd.args(["-t", t]);
        }
        cmd.args(pkgs);
        cmd.status()
    };
    if attempt().context("running apt-get")?.success() {
        return Ok(());
    }
    println!("vm: apt-get install failed; running apt-get update and retrying");
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    if !attempt()?.success() {
        bail!("apt-get install {} failed", pkgs.join(" "));
    }
    Ok(())
}

/// Installs qemu-system-x86. On bookworm with a qemu-utils >= 8 (from backports) installed,
/// bookworm's QEMU 7.2 cannot be installed next to it, so QEMU comes from bookworm-backports.
fn install_qemu() -> Result<()> {
    let codename = fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VERSION_CODENAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let newer_qemu = ["qemu-utils", "qemu-block-extra", "qemu-system-common"]
        .iter()
        .filter_map(|p| package_version(p))
        .any(|v| upstream_major(&v).is_some_and(|m| m >= 8));
    if codename != "bookworm" || !newer_qemu {
        return apt_install(&["qemu-system-x86"], None);
    }
    println!("vm: qemu >= 8 is installed (backports); installing qemu-system-x86 from bookworm-backports");
    let policy = Command::new("apt-cache")
        .args(["policy", "qemu-system-x86"])
        .output()?;
    if String::from_utf8_lossy(&policy.stdout).contains("bookworm-backports") {
        return apt_install(&["qemu-system-x86"], Some("bookworm-backports"));
    }
    // Add backports only for this install; update only that source (keeping the other lists).
    let src = Path::new("/etc/apt/sources.list.d/berth-xtask-bookworm-backports.sources");
    fs::write(
        src,
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )?;
    let result = (|| {
        run_cmd(Command::new("apt-get").args([
            "update",
            "-q",
            "-o",
            &format!("Dir::Etc::sourcelist={}", src.display()),
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            "APT::Get::List-Cleanup=0",
        ]))?;
        apt_install(&["qemu-system-x86"], Some("bookworm-backports"))
    })();
    let _ = fs::remove_file(src);
    result
}

// ---------------------------------------------------------------------------------------------
// kernel

struct Kernel {
    version: String,
    root: PathBuf,
    vmlinux: PathBuf,
}

/// Fetches (once) Debian's generic kernel: `apt-get download`, `dpkg-deb -x`, depmod, ELF vmlinux.
fn ensure_kernel(cache: &Path) -> Result<Kernel> {
    // `apt-cache depends` costs ~0.7 s: ask it at most once a day
    let choice = cache.join("kernel-package");
    let fresh = fs::metadata(&choice)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(24 * 3600));
    let cached = fs::read_to_string(&choice)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|p| {
            cache
                .join(format!(
                    "kernel-{}/.complete",
                    p.trim_start_matches("linux-image-")
                ))
                .exists()
        });
    let pkg = match cached {
        Some(p) if fresh => p,
        _ => {
            let pkg = kernel_package().or_else(|e| {
                // offline: fall back to the newest cached kernel
                newest_cached_kernel(cache).ok_or(e)
            })?;
            fs::write(&choice, &pkg)?;
            pkg
        }
    };
    let version = pkg
        .strip_prefix("linux-image-")
        .ok_or_else(|| anyhow!("unexpected kernel package {pkg}"))?
        .to_string();
    let dir = cache.join(format!("kernel-{version}"));
    let kernel = Kernel {
        version: version.clone(),
        root: dir.join("root"),
        vmlinux: dir.join("vmlinux"),
    };
    if dir.join(".complete").exists() {
        return Ok(kernel);
    }
    println!("vm: fetching kernel {pkg} into {}", dir.display());
    let _ = fs::remove_dir_all(&dir);
    let dl = dir.join("download");
    fs::create_dir_all(&dl)?;
    // let apt's sandbox user write there (else apt warns and downloads unsandboxed as root)
    let _ = Command::new("chown").arg("_apt").arg(&dl).status();
    run_cmd(
        Command::new("apt-get")
            .args(["download", "-q", &pkg])
            .current_dir(&dl),
    )?;
    let deb = fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("apt-get download {pkg} produced no .deb"))?;
    run_cmd(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&kernel.root),
    )?;
    fs::remove_dir_all(&dl)?;
    run_cmd(
        Command::new("depmod")
            .arg("-b")
            .arg(&kernel.root)
            .arg(&version),
    )?;
    let bz = kernel.root.join(format!("boot/vmlinuz-{version}"));
    extract_vmlinux(&bz, &kernel.vmlinux)?;
    fs::write(dir.join(".complete"), &pkg)?;
    Ok(kernel)
}

/// The versioned package linux-image-amd64 depends on, e.g. linux-image-6.1.0-48-amd64.
fn kernel_package() -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("running apt-cache depends linux-image-amd64")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| {
            p.strip_prefix("linux-image-")
                .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(str::to_string)
        .ok_or_else(|| anyhow!("apt-cache depends linux-image-amd64 names no kernel package"))
}

fn newest_cached_kernel(cache: &Path) -> Option<String> {
    let mut found: Vec<(std::time::SystemTime, String)> = fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(".complete").exists())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_prefix("kernel-")?.to_string();
            Some((
                e.metadata().ok()?.modified().ok()?,
                format!("linux-image-{name}"),
            ))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Decompresses the xz payload of a bzImage into the ELF vmlinux, which QEMU boots through its
/// PVH note without the (slow under TCG) in-guest decompression.
fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let data = fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let magic = b"\xfd7zXZ\x00";
    let off = data
        .windows(magic.len())
        .position(|w| w == magic)
        .ok_or_else(|| anyhow!("no xz payload in {}", bzimage.display()))?;
    let tmp = out.with_extension("tmp");
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&tmp)?)
        .spawn()
        .context("running xz")?;
    let mut stdin = child.stdin.take().context("xz stdin")?;
    let payload = data[off..].to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    let status = child.wait()?;
    let _ = writer.join();
    let head = fs::read(&tmp)
        .map(|d| d.get(..4) == Some(b"\x7fELF"))
        .unwrap_or(false);
    if !status.success() || !head {
        bail!(
            "could not extract an ELF vmlinux from {}",
            bzimage.display()
        );
    }
    fs::rename(&tmp, out)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// initramfs

/// Returns the cached initramfs for these inputs, building it when the inputs changed.
fn ensure_initrd(cache: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let busybox = PathBuf::from("/bin/busybox");
    let mut tools = Vec::new();
    for (name, required) in TOOLS {
        match which(name) {
            Some(p) => tools.push((name.to_string(), p)),
            None if *required => bail!("host tool {name} not found"),
            None => {}
        }
    }
    // shared libraries of the tools (+ libgcc_s for Rust binaries), at their canonical paths
    let mut libs = BTreeSet::new();
    for (_, path) in &tools {
        libs.extend(ldd(&path.canonicalize()?)?);
    }
    let libdir = libs
        .iter()
        .find(|l| l.file_name().is_some_and(|n| n == "libc.so.6"))
        .and_then(|l| l.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu"));
    let gcc = libdir.join("libgcc_s.so.1");
    if gcc.exists() {
        libs.insert(gcc); // Rust binaries (panic unwinding) need it
    }
    // Everything the initramfs content depends on, as text; its hash names the cached file.
    let mut key = format!(
        "format={INITRD_FORMAT}\nkernel={}\nboot modules={}\nmodules={}\ninit={:016x}\n",
        kernel.version,
        BOOT_MODULES.join(","),
        MODULES.join(","),
        fnv1a(INIT.as_bytes())
    );
    let files = std::iter::once(("busybox".to_string(), busybox.clone()))
        .chain(tools.clone())
        .chain(libs.iter().map(|l| ("lib".to_string(), l.clone())));
    for (name, path) in files {
        let m = fs::metadata(&path).with_context(|| format!("{}", path.display()))?;
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let _ = writeln!(
            key,
            "{name} {} size={} mtime={mtime}",
            path.display(),
            m.len()
        );
    }
    let hash = format!("{:016x}", fnv1a(key.as_bytes()));
    let out = cache.join(format!("initrd-{hash}.cpio"));
    if out.exists() {
        return Ok(out);
    }
    let t0 = Instant::now();
    println!("vm: building initramfs {}", out.display());
    for e in fs::read_dir(cache)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("initrd-") {
            let _ = fs::remove_file(e.path());
        }
    }
    let stage = cache.join(format!("initrd-stage-{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    let r = build_initrd(&stage, kernel, &busybox, &tools, &libs, &libdir, &out);
    let _ = fs::remove_dir_all(&stage);
    r?;
    fs::write(cache.join(format!("initrd-{hash}.key")), &key)?;
    println!(
        "vm: initramfs built in {:.1}s ({} KiB)",
        t0.elapsed().as_secs_f64(),
        fs::metadata(&out)?.len() / 1024
    );
    Ok(out)
}

fn build_initrd(
    st: &Path,
    kernel: &Kernel,
    busybox: &Path,
    tools: &[(String, PathBuf)],
    libs: &BTreeSet<PathBuf>,
    libdir: &Path,
    out: &Path,
) -> Result<()> {
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/lib64",
        "usr/lib/x86_64-linux-gnu",
        "etc",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "mnt/share",
        "scratch",
        "var",
        ".root",
    ] {
        fs::create_dir_all(st.join(d))?;
    }
    symlink("usr/lib", &st.join("lib"))?;
    symlink("usr/lib64", &st.join("lib64"))?;
    symlink("../run", &st.join("var/run"))?;
    symlink("/tmp", &st.join("var/tmp"))?;

    // busybox + applet links in /bin (real tools below override them)
    copy_file(busybox, &st.join("bin/busybox"))?;
    let list = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            symlink("busybox", &st.join("bin").join(applet))?;
        }
    }

    // host tools at their canonical path, plus /bin and /sbin links, plus their libraries
    for (name, path) in tools {
        let real = path.canonicalize()?;
        copy_file(&real, &st.join(rel(&real)))?;
        for dir in ["bin", "sbin"] {
            let link = st.join(dir).join(name);
            let _ = fs::remove_file(&link);
            symlink(&real, &link)?;
        }
    }
    for lib in libs {
        copy_file(lib, &st.join(rel(lib)))?;
    }
    for (link, target) in [
        ("bin/sh", "/usr/bin/dash"),
        ("bin/bash", "/usr/bin/bash"),
        ("sbin/modprobe", "/usr/bin/kmod"),
        ("usr/sbin/modprobe", "../bin/kmod"),
        ("usr/sbin/insmod", "../bin/kmod"),
        ("usr/sbin/rmmod", "../bin/kmod"),
        ("usr/sbin/lsmod", "../bin/kmod"),
        ("usr/sbin/depmod", "../bin/kmod"),
        ("usr/sbin/modinfo", "../bin/kmod"),
    ] {
        let p = st.join(link);
        let _ = fs::remove_file(&p);
        symlink(target, &p)?;
    }
    if tools.iter().any(|(n, _)| n == "xtables-nft-multi") {
        for t in [
            "iptables",
            "iptables-save",
            "iptables-restore",
            "ip6tables",
            "ip6tables-save",
            "ip6tables-restore",
        ] {
            let p = st.join("usr/sbin").join(t);
            let _ = fs::remove_file(&p);
            symlink("xtables-nft-multi", &p)?;
        }
        let xt = libdir.join("xtables");
        if xt.is_dir() {
            copy_tree(&xt, &st.join(rel(&xt)))?;
        }
    }
    if tools.iter().any(|(n, _)| n == "xtables-legacy-multi") {
        let p = st.join("usr/sbin/iptables-legacy");
        let _ = fs::remove_file(&p);
        symlink("xtables-legacy-multi", &p)?;
    }

    // kernel modules: the closure of MODULES, then depmod inside the initramfs
    let (mut boot, mut later) = (Vec::new(), Vec::new());
    let moddir = format!("lib/modules/{}", kernel.version);
    let kmods = kernel.root.join(&moddir);
    for (m, is_boot) in BOOT_MODULES
        .iter()
        .map(|m| (m, true))
        .chain(MODULES.iter().map(|m| (m, false)))
    {
        let o = Command::new("modprobe")
            .arg("-d")
            .arg(&kernel.root)
            .args(["-S", &kernel.version, "--show-depends", m])
            .output()
            .context("running modprobe --show-depends")?;
        if !o.status.success() {
            println!(
                "vm: note: kernel {} has no module {m}, skipped",
                kernel.version
            );
            continue;
        }
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if let Some(ko) = line
                .strip_prefix("insmod ")
                .and_then(|r| r.split_whitespace().next())
            {
                let ko = Path::new(ko);
                let r = ko
                    .strip_prefix(&kmods)
                    .with_context(|| format!("module outside tree: {}", ko.display()))?;
                let dst = st.join("usr").join(&moddir).join(r);
                if !dst.exists() {
                    copy_file(ko, &dst)?;
                }
            }
        }
        if is_boot {
            boot.push(*m);
        } else {
            later.push(*m);
        }
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let src = kmods.join(f);
        if src.exists() {
            copy_file(&src, &st.join("usr").join(&moddir).join(f))?;
        }
    }
    run_cmd(
        Command::new("depmod")
            .arg("-b")
            .arg(st)
            .arg(&kernel.version),
    )?;
    fs::write(st.join("etc/berth-modules-boot"), boot.join("\n") + "\n")?;
    fs::write(st.join("etc/berth-modules"), later.join("\n") + "\n")?;

    fs::write(
        st.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )?;
    fs::write(
        st.join("etc/group"),
        "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    )?;
    fs::write(
        st.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files\n",
    )?;
    fs::write(
        st.join("etc/hosts"),
        "127.0.0.1 localhost berth-vm\n::1 localhost\n",
    )?;
    fs::write(st.join("init"), INIT)?;
    set_mode(&st.join("init"), 0o755)?;

    // newc cpio, uncompressed: the kernel then needs no decompression (matters under TCG)
    let mut entries = Vec::new();
    walk(st, Path::new(""), &mut entries)?;
    let tmp = out.with_extension("tmp");
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(st)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&tmp)?)
        .spawn()
        .context("running cpio")?;
    {
        let mut stdin = cpio.stdin.take().context("cpio stdin")?;
        for e in &entries {
            stdin.write_all(e.as_os_str().as_encoded_bytes())?;
            stdin.write_all(b"\n")?;
        }
    }
    if !cpio.wait()?.success() {
        bail!("cpio failed");
    }
    fs::rename(&tmp, out)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// scratch disk and boot

/// A fresh sparse ext4 image holding the script and env in /.berth-vm; mounted at /scratch.
fn make_scratch_disk(run_dir: &Path, script: &str) -> Result<PathBuf> {
    let content = run_dir.join("content");
    let meta = content.join(".berth-vm");
    fs::create_dir_all(&meta)?;
    fs::write(meta.join("script.sh"), script)?;
    let mut env = String::new();
    for name in PASS_ENV {
        if let Ok(v) = std::env::var(name) {
            let _ = writeln!(env, "export {name}={}", sh_quote(&v));
        }
    }
    fs::write(meta.join("env"), env)?;
    let img = run_dir.join("scratch.img");
    fs::File::create(&img)?.set_len(SCRATCH_BYTES)?;
    run_cmd(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                "berth-scratch",
                "-O",
                "^has_journal",
                "-E",
            ])
            .arg("lazy_itable_init=1,root_owner=0:0")
            .arg("-d")
            .arg(&content)
            .arg(&img),
    )?;
    Ok(img)
}

fn pick_accel() -> &'static str {
    match std::env::var("BERTH_VM_ACCEL").as_deref() {
        Ok("kvm") => return "kvm",
        Ok("tcg") => return "tcg",
        _ => {}
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return "tcg"; // PVM only runs PVM guest kernels; Debian's kernel crashes there
    }
    let usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if usable {
        "kvm"
    } else {
        "tcg"
    }
}

#[derive(Default)]
struct Console {
    tail: VecDeque<String>,
    exit: Option<i32>,
    started: bool,
}

fn boot(
    opts: &VmOptions,
    share: &Path,
    kernel: &Kernel,
    initrd: &Path,
    disk: &Path,
    nonce: &str,
) -> Result<i32> {
    let accel = pick_accel();
    println!("vm: accelerator={accel}");
    let mut cmdline = format!("{KERNEL_CMDLINE} berth.nonce={nonce}");
    if opts.shell {
        cmdline.push_str(" berth.mode=shell");
        if let Some((rows, cols)) = terminal_size() {
            let _ = write!(cmdline, " berth.rows={rows} berth.cols={cols}");
        }
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    match accel {
        "kvm" => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        _ => cmd.args(["-accel", "tcg", "-cpu", "max"]),
    };
    cmd.args(["-M", "q35", "-smp", "2", "-m", &MEM_MIB.to_string()])
        .args(["-nodefaults", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinux)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &cmdline])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=share,security_model=none,readonly=on,id=share",
            qemu_escape(share)
        ))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe,discard=unmap",
            qemu_escape(disk)
        ));
    if opts.shell {
        // serial console + monitor on the terminal (Ctrl-A x quits QEMU); no timeout
        cmd.args(["-display", "none", "-serial", "mon:stdio"]);
        println!("vm: starting a shell in the VM (Ctrl-A x kills QEMU)");
        let status = cmd.status().context("running qemu-system-x86_64")?;
        if !status.success() {
            bail!("qemu exited with {status}");
        }
        return Ok(read_exit_file(disk).unwrap_or(0));
    }
    cmd.args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned = Instant::now();
    let mut child = cmd.spawn().context("running qemu-system-x86_64")?;
    let console = Arc::new(Mutex::new(Console::default()));
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let reader = {
        let console = Arc::clone(&console);
        let start_marker = format!("BERTH-VM-START-{nonce}");
        let exit_marker = format!("BERTH-VM-EXIT-{nonce}=");
        std::thread::spawn(move || {
            stream_console(stdout, &console, &start_marker, &exit_marker, spawned)
        })
    };
    let err_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            eprintln!("qemu: {line}");
        }
    });
    let deadline = spawned + opts.timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        let reported = console.lock().map(|c| c.exit.is_some()).unwrap_or(false);
        if reported {
            // the guest synced and is powering off; the scratch disk is thrown away anyway
            let _ = child.kill();
            break Some(child.wait()?);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = reader.join();
    let _ = err_reader.join();
    let console = console
        .lock()
        .map_err(|_| anyhow!("console lock poisoned"))?;
    let tail = || {
        let lines: Vec<&str> = console.tail.iter().map(String::as_str).collect();
        if lines.is_empty() {
            return "the console printed nothing".to_string();
        }
        format!("last {} console lines:\n{}", lines.len(), lines.join("\n"))
    };
    let Some(status) = status else {
        bail!(
            "VM timed out after {}s and was killed; {}",
            opts.timeout.as_secs(),
            tail()
        );
    };
    let code = console.exit.or_else(|| read_exit_file(disk));
    match code {
        Some(code) => {
            println!(
                "vm: guest script exited with {code} ({:.1}s total)",
                spawned.elapsed().as_secs_f64()
            );
            Ok(code)
        }
        None if !console.started => bail!(
            "VM stopped ({status}) before running the script; {}",
            tail()
        ),
        None => bail!(
            "VM stopped ({status}) without reporting the script's exit code; {}",
            tail()
        ),
    }
}

/// Copies the console to stdout line by line, keeps the last lines, and picks up the markers.
fn stream_console(
    mut out: impl Read,
    console: &Mutex<Console>,
    start_marker: &str,
    exit_marker: &str,
    spawned: Instant,
) {
    let mut buf = [0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    let handle_line = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw).replace('\r', "");
        let mut c = match console.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some(guest) = text.trim_end().strip_prefix(start_marker) {
            c.started = true;
            println!(
                "vm: boot to first command {:.2}s (guest uptime at{})",
                spawned.elapsed().as_secs_f64(),
                guest.replace('=', " ")
            );
            return;
        }
        if let Some(code) = text.trim_end().strip_prefix(exit_marker) {
            c.exit = code.trim().parse().ok();
            return;
        }
        let mut lock = stdout.lock();
        let _ = writeln!(lock, "{text}");
        let _ = lock.flush();
        c.tail.push_back(text);
        if c.tail.len() > TAIL_LINES {
            c.tail.pop_front();
        }
    };
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            handle_line(&line[..line.len() - 1]);
        }
    }
    if !pending.is_empty() {
        handle_line(&pending);
    }
}

/// Reads /.berth-vm/exit-code from the scratch image without mounting it.
fn read_exit_file(disk: &Path) -> Option<i32> {
    let out = Command::new("debugfs")
        .args(["-R", "cat /.berth-vm/exit-code"])
        .arg(disk)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn terminal_size() -> Option<(u32, u32)> {
    let out = Command::new("stty")
        .arg("size")
        .stdin(Stdio::inherit())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = s.split_whitespace().map(|v| v.parse().ok());
    Some((it.next()??, it.next()??))
}

// ---------------------------------------------------------------------------------------------
// helpers

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Shared libraries (resolved paths, incl. the dynamic loader) that `bin` needs; empty if static.
fn ldd(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("running ldd {}", bin.display()))?;
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            // keep the file name ldd reports, in the canonical directory (merged /usr)
            let p = Path::new(p);
            let dir = p.parent().and_then(|d| d.canonicalize().ok());
            if let (Some(dir), Some(name)) = (dir, p.file_name()) {
                libs.push(dir.join(name));
            }
        }
    }
    Ok(libs)
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `/usr/bin/x` -> `usr/bin/x`, for placing host files into the staging tree.
fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    if let Some(d) = dst.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(())
}

/// Recursive copy: files hard-linked when possible (copied otherwise), symlinks recreated.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst)?;
    for e in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        let ft = fs::symlink_metadata(&from)?.file_type();
        if ft.is_symlink() {
            symlink(fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        }
    }
    Ok(())
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for n in names {
        let p = rel.join(n);
        out.push(p.clone());
        if fs::symlink_metadata(root.join(&p))?.is_dir() {
            walk(root, &p, out)?;
        }
    }
    Ok(())
}

fn symlink(target: impl AsRef<Path>, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target.as_ref(), link)
        .with_context(|| format!("symlink {}", link.display()))
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Single-quotes `s` for sh/bash.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Escapes a path for a QEMU option value (commas are doubled).
fn qemu_escape(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", std::process::id(), t & 0xffff_ffff_ffff)
}
