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

    /// A networking error (networks, IPAM, ports, firewall).
    #[error(transparent)]
    Network(#[from] berth_netns_bridge::Error),
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
    /// No container matches the name or id.
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// The operation conflicts with the container's state or another object.
    #[error("{0}")]
    Conflict(String),
    /// Starting a container failed; `code` is what `run` exits with.
    #[error("{message}")]
    StartFailed {
        /// 126, 127 or 125.
        code: i32,
        /// Why.
        message: String,
    },
    /// The OCI runtime failed.
    #[error(transparent)]
    Runtime(#[from] berth_runtime::Error),
    /// The run options are invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// A volume or mount failed.
    #[error(transparent)]
    Volume(#[from] berth_volumes::Error),
}

/// Shorthand for engine results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Exit code for a command that failed with this error: Docker's 126/127
    /// for a command that cannot be run or found, 125 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Runtime(e) if e.exit_code() == 127 || e.exit_code() == 126 => e.exit_code(),
            Error::StartFailed { code, .. } => *code,
            _ => 125,
        }
    }

    /// Wrap an I/O error with context.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
