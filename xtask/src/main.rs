//! `cargo xtask`: berth's project tasks.
//!
//! - `demo`: install what is needed, build berth, run a busybox container.
//! - `test [--host-only]`: fmt check, clippy, unit tests, the privileged
//!   integration suite on this host, and the VM run.
//! - `test-images`: build the offline busybox test images under target/.
//! - `test-vm [--shell] [-- FILTER]`: the privileged suite in a throwaway VM.
//! - `bench runtime`: berth vs runc vs crun start-up, written to docs/benchmarks.md.

mod images;
mod util;

use anyhow::{bail, Result};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = dispatch(&args) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some(task) = args.first() else {
        bail!("usage: cargo xtask <demo|test|test-images|test-vm|bench>");
    };
    match task.as_str() {
        "test-images" => {
            images::build(&util::target_dir())?;
            Ok(())
        }
        other => bail!("unknown task {other:?}: use demo, test, test-images, test-vm or bench"),
    }
}
