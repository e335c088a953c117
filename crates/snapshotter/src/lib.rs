//! Layer unpacking and overlayfs snapshots for berth.
//!
//! This crate owns the on-disk root filesystems of images and containers, modelled on
//! containerd's overlay snapshotter:
//!
//! * [`Snapshotter`] keeps snapshots in `<root>/<numeric id>/{fs,work}` with their
//!   metadata in one JSON file updated under an exclusive file lock (see
//!   `docs/snapshotter.md`). Snapshots are `Active` (writable), `View` (read-only) or
//!   `Committed` (immutable, named by the caller, e.g. by the layer's chain id, so
//!   images sharing a chain share the snapshot).
//! * [`Snapshotter::prepare`] / [`Snapshotter::view`] return [`Mount`]s (overlay, or a
//!   bind for a snapshot without parent) that [`mount_all`] or [`MountGuard`] mount.
//!   Deep chains use short link names (`<root>/l/<short>`) so the overlay option string
//!   fits in a page.
//! * [`apply_layer`] / [`Snapshotter::apply`] unpack an untrusted layer tar (gzip, zstd
//!   or plain) with every write made relative to a directory fd resolved with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`, converting OCI whiteouts to
//!   overlay whiteouts.
//! * [`diff_dir`] / [`Snapshotter::diff`] turn an overlay upper dir back into a
//!   deterministic OCI layer tar; [`changes`] / [`Snapshotter::changes`] list what it
//!   changed, as `docker diff`.
//!
//! Everything is synchronous; the crate needs root for overlay mounts, `trusted.*`
//! xattrs, whiteout device nodes and ownership changes.

mod apply;
mod changes;
mod diff;
mod error;
mod fsutil;
mod meta;
mod mount;
mod snapshotter;

pub use apply::{apply_layer, buffered, ApplyStats};
pub use changes::{changes, Change, ChangeKind};
pub use diff::{diff_dir, diff_dir_skipping, DiffStats};
pub use error::{Error, Result};
pub use mount::{mount_all, unmount, Mount, MountGuard};
pub use snapshotter::{CheckReport, Info, Kind, Snapshotter, Usage};
