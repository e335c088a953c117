//! berth's OCI runtime: turns a runtime-spec bundle into a running, isolated
//! process.
//!
//! [`Runtime`] implements the runtime-spec lifecycle (create, start, state,
//! kill, delete) plus exec and a foreground `run`. A container gets new (or
//! joined) mount, pid, uts, ipc, network and cgroup namespaces, a pivoted
//! root with the spec's mounts, masked and read-only paths, a cgroup with the
//! spec's limits, rlimits, its user and groups, the five capability sets,
//! no_new_privs and a seccomp filter. The crate knows nothing of images or
//! networks: it is handed a bundle.
//!
//! The runtime is synchronous and forks (glibc's fork, so a caller may have
//! other threads); never call it from inside an async runtime's worker threads.

pub mod cgroups;
mod container;
pub mod devices;
mod error;
pub mod features;
mod hooks;
mod init;
mod process;
mod rootfs;
pub mod seccomp;
pub mod socket;
pub mod spec;
pub mod state;
mod sync;
mod tty;

pub use container::{CreateOptions, Created, ExecOptions, Exit, Runtime};
pub use error::{Error, Result};
pub use process::DEFAULT_PATH;
pub use state::{State, Status};
