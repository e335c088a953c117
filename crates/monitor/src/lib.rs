//! What a running container's monitor needs once its container runs: the
//! attach frame protocol, the JSON-lines log writer and the relay loop
//! ([`supervise`]), plus the hand-over to and from the slim `berth-monitor`
//! binary built on this crate alone (libc and std, so that it stays small).
//! The setup before a start and the work after an exit stay in the engine.

pub mod attach;
pub mod handover;
pub mod json_log;
mod supervise;

pub use supervise::{adopt, broadcast, supervise, Client, Stdio};
