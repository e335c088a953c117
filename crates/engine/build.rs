//! Builds `init/berth-init.c`, the init helper of `berth run --init`, as a
//! static executable (it runs inside any image, libc or not) and leaves it in
//! `$OUT_DIR/berth-init` for the engine to embed.

use std::path::PathBuf;

fn main() {
    let source = "init/berth-init.c";
    println!("cargo:rerun-if-changed={source}");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("berth-init");
    // The target's C compiler as `cc` finds it (CC, CC_<target>, TARGET_CC, or `cc`).
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .warnings(true)
        .get_compiler();
    let mut cmd = compiler.to_command();
    cmd.args(["-static", "-Os", "-s", "-o"])
        .arg(&out)
        .arg(source);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "berth-init: cannot run the C compiler {:?}: {e}; install one (Debian: apt-get install gcc libc6-dev) or set CC",
            compiler.path()
        )
    });
    assert!(
        status.success(),
        "berth-init: {cmd:?} failed ({status}); a static link needs the C library's archive (Debian: apt-get install libc6-dev)"
    );
}
