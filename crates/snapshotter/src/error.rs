//! The crate's error type.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the snapshotter, unpacking and diffing.
///
/// Each variant names the operation and the object it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (e.g. "create snapshot dir").
        op: String,
        /// The path it was done on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata file could not be parsed or serialized.
    #[error("snapshot metadata {}: {source}; move it aside to start from an empty store", path.display())]
    Metadata {
        /// Path of the metadata file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// No snapshot with this key exists.
    #[error("snapshot {0:?} does not exist")]
    NotFound(String),
    /// A snapshot with this key or name already exists.
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// The snapshot is of the wrong kind for the operation.
    #[error("{op}: snapshot {key:?} is {actual}, expected {expected}")]
    WrongKind {
        /// The operation.
        op: &'static str,
        /// The snapshot key.
        key: String,
        /// Its kind.
        actual: String,
        /// The kind the operation needs.
        expected: &'static str,
    },
    /// `remove` on a snapshot that other snapshots are based on.
    #[error(
        "cannot remove snapshot {key:?}: it is the parent of {children:?}; remove those first"
    )]
    HasChildren {
        /// The snapshot key.
        key: String,
        /// Keys of its children.
        children: Vec<String>,
    },
    /// The overlay option string does not fit in a page even with short link names.
    #[error("overlay options for snapshot {key:?} are {len} bytes ({layers} lower layers), over the {max}-byte page limit")]
    TooManyLayers {
        /// The snapshot key.
        key: String,
        /// Number of lower layers.
        layers: usize,
        /// Length of the option string.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A mount or unmount failed.
    #[error("{op} {typ} on {}: {source}", target.display())]
    Mount {
        /// "mount" or "unmount".
        op: &'static str,
        /// Filesystem type ("overlay", "bind").
        typ: String,
        /// Mount point.
        target: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The layer stream could not be read or decompressed, or the tar is malformed.
    #[error("reading layer tar{}: {source}", entry.as_ref().map(|e| format!(" at entry {e:?}")).unwrap_or_default())]
    Layer {
        /// The entry being read, when known.
        entry: Option<String>,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A layer entry was refused by the extraction safety rules.
    #[error("refused layer entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// Writing a layer entry failed.
    #[error("extracting layer entry {entry:?}: {op}: {source}")]
    Extract {
        /// The entry's path as written in the tar.
        entry: String,
        /// The failing step (e.g. "mknodat", "fchown").
        op: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A regular file's data ended before the size its header declares.
    #[error(
        "layer entry {entry:?} is truncated: header declares {declared} bytes, stream held {got}"
    )]
    Truncated {
        /// The entry's path.
        entry: String,
        /// Declared size.
        declared: u64,
        /// Bytes actually present.
        got: u64,
    },
    /// The upper dir uses an overlay feature that makes it not self-contained.
    #[error("cannot diff {}: {reason}", path.display())]
    Diff {
        /// The offending path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(
        op: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            op: op.into(),
            path: path.into(),
            source,
        }
    }
}
