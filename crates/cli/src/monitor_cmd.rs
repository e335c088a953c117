//! `berth __monitor` (internal): a container's monitor, spawned by `run` and
//! `start`; with `--resume`, the exec back from berth-monitor after an exit.

use std::path::Path;

use berth_engine::containers::monitor;

/// Arguments of `berth __monitor`.
#[derive(clap::Args, Debug)]
pub struct MonitorArgs {
    /// Container id.
    id: String,
    /// Wait for one attach client before starting.
    #[arg(long)]
    wait_attach: bool,
    /// Handle the exit of a run berth-monitor relayed (its exec back).
    #[arg(long, requires_all = ["exit_code", "listener"])]
    resume: bool,
    /// The run's exit code (with --resume).
    #[arg(long, allow_negative_numbers = true)]
    exit_code: Option<i32>,
    /// The attach listener's descriptor (with --resume).
    #[arg(long)]
    listener: Option<i32>,
    /// An attached client's descriptor (with --resume; repeated).
    #[arg(long)]
    client: Vec<i32>,
    /// The delay before a next restart, in ms (with --resume).
    #[arg(long, default_value_t = 100)]
    backoff_ms: u64,
    /// When the run started, CLOCK_MONOTONIC in ms (with --resume).
    #[arg(long, default_value_t = 0)]
    run_started_ms: u64,
}

/// Run the monitor; returns the process exit code.
pub fn main(root: &Path, run_root: &Path, a: MonitorArgs) -> i32 {
    match (a.resume, a.exit_code, a.listener) {
        (true, Some(exit_code), Some(listener)) => monitor::resume(
            root,
            run_root,
            &a.id,
            monitor::Resume {
                exit_code,
                listener,
                clients: a.client,
                backoff_ms: a.backoff_ms,
                run_started_ms: a.run_started_ms,
            },
        ),
        _ => monitor::main(root, run_root, &a.id, a.wait_attach),
    }
}
