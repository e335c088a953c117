//! berth's engine: the objects a user manipulates (images today; containers,
//! volumes and networks as they land), composed from the lower crates.
//!
//! Every `berth` command is a short-lived process: the engine opens the state
//! under `--root` (default `/var/lib/berth`) and `--run-root` (default
//! `/run/berth`), does its work under file locks, and returns. Nothing runs in
//! the background.

pub mod build;
pub mod containers;
pub mod devices;
pub mod error;
pub mod images;
pub mod prune;
pub mod spec;

/// Go-style durations (`1m30s`), as Dockerfiles and `--health-*` flags spell them.
pub use berth_builder::parse_duration;
pub use berth_volumes as volumes;
pub use error::{Error, Result};
