//! The engine's error type.

/// What can go wrong in an engine operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] berth_image_store::Error),
    /// Talking to a registry failed.
    #[error(transparent)]
    Registry(#[from] berth_image_store::registry::RegistryError),
    /// The snapshotter failed.
    #[error(transparent)]
    Snapshot(#[from] berth_snapshotter::Error),
    /// No image matches the name or id.
    #[error("no such image: {0}")]
    NoSuchImage(String),
    /// An id prefix matches several images.
    #[error("image id prefix {prefix} is ambiguous: it matches {count} images")]
    AmbiguousImage {
        /// The prefix.
        prefix: String,
        /// How many images match.
        count: usize,
    },
    /// Removing an image that has several tags by id needs --force.
    #[error("conflict: unable to delete {id} (must be forced): image is referenced in multiple repositories")]
    MultipleTags {
        /// The image id.
        id: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Bad user input not covered above.
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for engine results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wrap an I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
