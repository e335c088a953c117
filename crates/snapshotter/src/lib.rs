//! Layer unpacking and overlayfs snapshots.
//!
//! Will own: committed snapshots keyed by chain id and shared between images; prepare/view/commit/mounts/remove/usage/walk on overlayfs; safe unpacking of untrusted layer tarballs (whiteouts to overlay form, nothing written outside the snapshot); diff of an upper dir back into an OCI layer.
