//! The runtime's error type.

use std::path::PathBuf;

/// Everything that can go wrong creating, running or managing a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle directory does not exist.
    #[error("bundle {0}: no such directory")]
    BundleMissing(PathBuf),
    /// config.json is missing, unreadable or not a valid runtime spec.
    #[error("{path}: invalid config.json: {reason}")]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A container id that is empty or has characters other than `[A-Za-z0-9_.-]`.
    #[error("invalid container id {0:?}: use letters, digits, '_', '.' and '-' only")]
    InvalidId(String),
    /// A container with this id exists already.
    #[error("container {0} already exists")]
    Exists(String),
    /// No container with this id.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// The container is in a state that does not allow the operation.
    #[error("container {id} is {status}: {hint}")]
    WrongState {
        /// Container id.
        id: String,
        /// Its current status.
        status: String,
        /// What the caller can do.
        hint: String,
    },
    /// The process's executable could not be found in the container.
    #[error("exec: {0:?}: executable file not found in $PATH")]
    CommandNotFound(String),
    /// The process's executable exists but cannot be run.
    #[error("exec: {path:?}: {reason}")]
    CommandNotRunnable {
        /// The resolved path.
        path: String,
        /// Why it cannot be executed.
        reason: String,
    },
    /// The container's init process reported a failure while setting up.
    #[error("{0}")]
    Init(String),
    /// A hook failed.
    #[error("{kind} hook {path}: {reason}")]
    Hook {
        /// Which hook list (prestart, poststart, ...).
        kind: &'static str,
        /// The hook's executable.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The errno.
        source: nix::Error,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Setting up the container's cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// Compiling or installing the seccomp profile failed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
}

impl Error {
    /// The exit code a command line should use for this error: 127 when the
    /// command was not found, 126 when it could not be run, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::CommandNotFound(_) => 127,
            Error::CommandNotRunnable { .. } => 126,
            _ => 1,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to errno results.
pub(crate) trait SysContext<T> {
    /// Wrap the error with a description of what was being done.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysContext<T> for nix::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys {
            context: context(),
            source,
        })
    }
}

impl<T> SysContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
