//! OCI content store, image metadata, registry client and archives.
//!
//! - [`content`]: content-addressed blobs under `blobs/sha256` with verified,
//!   resumable, lock-protected ingest.
//! - [`reference`](mod@reference): image references normalised as Docker does.
//! - [`manifest`]: OCI / Docker schema2 manifests and indexes, host platform selection.
//! - [`images`]: image names -> manifest descriptors, image resolution, GC roots.
//! - [`registry`]: the distribution API v2 client.
//! - [`check`]: consistency check and repair of blobs, ingests and image records.
//! - [`archive`]: docker-archive and OCI layout save/load, rootfs import.

pub mod archive;
pub mod check;
pub mod content;
pub mod digest;
pub mod error;
pub mod images;
pub mod manifest;
pub mod reference;
pub mod registry;

pub use content::{ContentStore, Verified, Writer};
pub use digest::{Digest, Hasher};
pub use error::{Error, Result};
pub use images::{referenced_blobs, resolve_image, Image, ImageRecord, ImageStore};
pub use manifest::{host_platform, parse_manifest, select_platform, Manifest};
pub use reference::Reference;
