//! Errors of the image store.

use crate::digest::Digest;

/// Everything that can go wrong in the image store, the registry client and archives.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image reference could not be parsed or is not valid.
    #[error("invalid reference format {input:?}: {reason}")]
    InvalidReference {
        /// The text given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// A digest could not be parsed or uses an unsupported algorithm.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    /// Content did not hash to the digest it was expected to have.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the content should have had.
        expected: Digest,
        /// The digest of the bytes actually received.
        actual: Digest,
    },
    /// Content did not have the size it was expected to have.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob concerned.
        digest: Digest,
        /// Expected size in bytes.
        expected: u64,
        /// Size actually received (or at least received so far).
        actual: u64,
    },
    /// A blob is not in the content store.
    #[error("blob {0} not found in the content store")]
    BlobNotFound(Digest),
    /// No image with this name or id.
    #[error("no such image: {0}")]
    ImageNotFound(String),
    /// A manifest, index or image config is malformed or unsupported.
    #[error("invalid manifest {digest_or_ref}: {reason}")]
    InvalidManifest {
        /// Digest or reference of the document.
        digest_or_ref: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A manifest list / index has no entry for the wanted platform.
    #[error("no matching manifest for {wanted} in the manifest list entries of {reference} (available: {})", available.join(", "))]
    NoMatchingPlatform {
        /// The image reference.
        reference: String,
        /// The platform wanted, as os/arch[/variant].
        wanted: String,
        /// The platforms the index offers.
        available: Vec<String>,
    },
    /// An image cannot be removed because containers use it.
    #[error("image {image} is in use by {}", users.join(", "))]
    InUse {
        /// The image (name or id).
        image: String,
        /// Who uses it (container names or ids, as the caller describes them).
        users: Vec<String>,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, on which path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document could not be read or written.
    #[error("{context}: {source}")]
    Json {
        /// What was being parsed or written.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// An archive (docker save / OCI layout tar / rootfs tar) is malformed or unsafe.
    #[error("invalid archive: {reason}")]
    Archive {
        /// What is wrong with it.
        reason: String,
    },
    /// A registry request failed (for the registry client).
    #[error("registry {registry}: {reason}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What failed.
        reason: String,
    },
    /// The registry refused our credentials or demands some (for the registry client).
    #[error("unauthorized: {registry}: {reason}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The registry's message, if any.
        reason: String,
    },
}

/// Result with the image store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] with a context describing the operation and its path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Archive`] with the given reason.
    pub fn archive(reason: impl Into<String>) -> Error {
        Error::Archive {
            reason: reason.into(),
        }
    }
}

/// Attach a context to I/O results.
pub(crate) trait IoContext<T> {
    /// Map an `io::Error` to [`Error::Io`] with a lazily built context.
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: f(),
            source,
        })
    }
}
