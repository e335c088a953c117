//! Client for the OCI distribution API v2: pull and push images between a registry
//! and the local [`ContentStore`](crate::content::ContentStore).
//!
//! The API is blocking. Internally a small multi-threaded tokio runtime drives
//! `reqwest` (rustls with the system CA store); each parallel layer download runs on
//! its own OS thread that blocks on the runtime for network reads and writes the
//! bytes synchronously into the content store's ingest writer, so hashing and disk
//! writes overlap with the network without an async file layer.
//!
//! Authentication follows the `WWW-Authenticate` challenge flow: anonymous first,
//! then Basic or a Bearer token fetched from the challenge's realm (cached per
//! registry and scope).

mod auth;
mod client;
mod credentials;
mod download;
mod follow;
mod progress;
mod pull;
mod push;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use auth::{parse_www_authenticate, Challenge};
pub use credentials::Credentials;
pub use download::{file_name, Download};
pub use follow::Follower;

use crate::digest::Digest;
use crate::reference::Reference;
use std::path::PathBuf;

/// Errors of the registry client.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused our credentials (or we had none).
    #[error("unauthorized: {registry} refused access to repository {repository:?}; {hint}")]
    Unauthorized {
        /// Registry host as named in the reference.
        registry: String,
        /// Repository the request was for (empty for a login check).
        repository: String,
        /// What the user can do about it.
        hint: String,
    },
    /// A manifest reference or blob digest does not exist on the registry.
    #[error("not found: {what} does not exist on {registry}; check the name, tag or digest")]
    NotFound {
        /// The manifest reference or blob digest asked for.
        what: String,
        /// Registry host.
        registry: String,
    },
    /// The registry could not be reached (DNS, refused connection, TLS, timeout).
    #[error("cannot connect to registry {registry}: {source}; check the address, that the registry is running, and --insecure-registry for plain http")]
    Connect {
        /// Registry host.
        registry: String,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected HTTP status.
    #[error("registry {registry} answered HTTP {status}: {body_excerpt}")]
    Http {
        /// Registry host.
        registry: String,
        /// HTTP status code.
        status: u16,
        /// The start of the response body (at most 200 characters).
        body_excerpt: String,
    },
    /// The registry's answer violates the distribution protocol.
    #[error("protocol error from registry {registry}: {reason}")]
    Protocol {
        /// Registry host.
        registry: String,
        /// What was wrong.
        reason: String,
    },
    /// Reading or writing the content store failed, or a blob did not verify.
    #[error(transparent)]
    Store(#[from] crate::error::Error),
    /// The credentials file could not be read or written.
    #[error("credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: PathBuf,
        /// What failed and what to do.
        reason: String,
    },
    /// The transfer of a blob broke off mid-way; running the command again resumes it.
    #[error("download of {digest} from {registry} was interrupted after {received} bytes: {reason}; run the pull again to resume")]
    Interrupted {
        /// Registry host.
        registry: String,
        /// The blob.
        digest: Digest,
        /// Bytes in the ingest so far.
        received: u64,
        /// The transport error.
        reason: String,
    },
}

/// Options for a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts (`host` or `host:port`) to reach over plain http; `localhost`,
    /// `127.0.0.1` and `::1` always use plain http.
    pub insecure_registries: Vec<String>,
    /// Credentials used for pulls and pushes.
    pub credentials: Credentials,
    /// Number of parallel layer downloads (at least 1).
    pub max_concurrent: usize,
    /// Draw an indicatif progress bar per layer on stderr when true; quiet otherwise.
    pub progress: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            credentials: Credentials::default(),
            max_concurrent: 3,
            progress: false,
        }
    }
}

/// What [`Registry::pull`] stored.
#[derive(Debug, Clone)]
pub struct PullResult {
    /// The reference pulled, with the digest of the selected manifest filled in.
    pub reference: Reference,
    /// The manifest after platform selection.
    pub manifest: oci_spec::image::Descriptor,
    /// The index the tag pointed at, if any.
    pub index: Option<oci_spec::image::Descriptor>,
    /// Digest of the image config blob.
    pub config: Digest,
    /// The layers, in manifest order.
    pub layers: Vec<oci_spec::image::Descriptor>,
    /// Bytes fetched over the network for blobs (skipped and resumed bytes not counted).
    pub bytes_downloaded: u64,
}

pub use client::Registry;

/// Hears about a pull's progress (see [`Registry::pull_observed`]); called from
/// the download threads.
pub trait PullObserver: Sync {
    /// The image config (verified) and the manifest's layers, before any layer downloads.
    fn config(&self, _config: &[u8], _layers: &[oci_spec::image::Descriptor]) {}
    /// Layer `index` of the manifest is in the store, verified.
    fn layer_ready(&self, _index: usize, _layer: &oci_spec::image::Descriptor) {}
    /// Layer `index` starts downloading: `follower` reads it from its first byte as it
    /// arrives and ends once it is verified (before `layer_ready`, and possibly before
    /// the blob is durably in the store: should that fail, the pull fails). Not called
    /// for layers the store already has or whose download completed earlier.
    fn layer_stream(
        &self,
        _index: usize,
        _layer: &oci_spec::image::Descriptor,
        _follower: Follower,
    ) {
    }
}

/// A [`PullObserver`] that ignores everything.
pub struct NoObserver;

impl PullObserver for NoObserver {}
