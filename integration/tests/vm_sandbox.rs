//! The privileged suite must run in a kernel it may change freely: this test creates a bridge,
//! an nft table and an overlay mount. It only runs inside the test VM (`cargo xtask test-vm`
//! sets `BERTH_IN_VM=1`); there it leaves the state behind when `BERTH_VM_LEAVE_STATE=1`, so the
//! xtask can check afterwards that none of it appeared on the host (`vm::host_leftovers`).

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_integration::expect_success;

const BRIDGE: &str = "berthvmtest0";
const NFT_TABLE: &str = "berth_vm_test";

/// Runs a tool and returns its stdout; panics with its output when it fails.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    expect_success(&format!("{tool} {args:?}"), &out)
}

/// Runs a tool and ignores the outcome (clean-up of state a previous run may have left).
fn run_quiet(tool: &str, args: &[&str]) {
    let _ = Command::new(tool).args(args).output();
}

fn is_overlay_mount(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = path.to_string_lossy();
    mountinfo.lines().any(|l| {
        let mp = l.split(' ').nth(4);
        let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
        mp == Some(&*want) && fstype == Some("overlay")
    })
}

/// Creates a bridge, an nft table and an overlay mount; in the VM they must not reach the host.
#[test]
fn kernel_state_is_sandboxed() {
    if std::env::var("BERTH_IN_VM").as_deref() != Ok("1") {
        eprintln!("note: kernel_state_is_sandboxed skipped: it changes kernel state and only runs in the test VM (BERTH_IN_VM=1, `cargo xtask test-vm`)");
        return;
    }
    let leave = std::env::var("BERTH_VM_LEAVE_STATE").as_deref() == Ok("1");

    // state left by an earlier run in the same kernel
    run_quiet("ip", &["link", "del", BRIDGE]);
    run_quiet("nft", &["delete", "table", "inet", NFT_TABLE]);

    // a bridge
    run("ip", &["link", "add", BRIDGE, "type", "bridge"]);
    assert!(
        Path::new("/sys/class/net").join(BRIDGE).exists(),
        "bridge {BRIDGE} missing after creation"
    );

    // an nft table
    run("nft", &["add", "table", "inet", NFT_TABLE]);
    let tables = run("nft", &["list", "tables"]);
    assert!(
        tables
            .lines()
            .any(|l| l.trim() == format!("table inet {NFT_TABLE}")),
        "nft table missing: {tables}"
    );

    // an overlay mount under $TMPDIR (the path contains "berth-vm")
    let tmp = PathBuf::from(std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into()));
    let base = tmp.join(format!("berth-vm-sandbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(base.join(d)).expect("create overlay dirs");
    }
    std::fs::write(base.join("lower/hello"), "hello\n").expect("write lower file");
    let merged = base.join("merged");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.join("lower").display(),
        base.join("upper").display(),
        base.join("work").display()
    );
    run(
        "mount",
        &[
            "-t",
            "overlay",
            "overlay",
            "-o",
            &opts,
            &merged.to_string_lossy(),
        ],
    );
    assert!(
        is_overlay_mount(&merged),
        "overlay not mounted at {}",
        merged.display()
    );
    assert_eq!(
        std::fs::read_to_string(merged.join("hello")).expect("read through overlay"),
        "hello\n"
    );
    std::fs::write(merged.join("new"), "x").expect("write through overlay");
    assert!(
        base.join("upper/new").exists(),
        "write did not reach the upper dir"
    );

    if leave {
        eprintln!(
            "note: BERTH_VM_LEAVE_STATE=1: leaving bridge {BRIDGE}, nft table inet {NFT_TABLE} and overlay {} in place",
            merged.display()
        );
        return;
    }
    run("umount", &[&merged.to_string_lossy()]);
    std::fs::remove_dir_all(&base).expect("remove overlay dirs");
    run("nft", &["delete", "table", "inet", NFT_TABLE]);
    run("ip", &["link", "del", BRIDGE]);
    assert!(!Path::new("/sys/class/net").join(BRIDGE).exists());
}
