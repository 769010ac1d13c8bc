//! The one error type of the shim, and its mapping to ttrpc status codes.
//!
//! Every failure a containerd client can see goes through [`Error`]; the mapping to a ttrpc
//! code lives in exactly one place (`From<Error> for ttrpc::Error`) so that containerd's
//! errdefs (NotFound, AlreadyExists, FailedPrecondition, ...) come out the same everywhere.

use std::io;
use std::path::Path;

use containerd_shim::protos::ttrpc::{self, Code};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the shim. The display text is what the user sees in `ctr` or the kubelet's events,
/// so each message names the thing that failed and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or the bundle is malformed (bad config.json, bad entrypoint, bad stdio URI).
    #[error("{0}")]
    InvalidArgument(String),
    /// No container or process with that id.
    #[error("{0}")]
    NotFound(String),
    /// A container or exec with that id exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but not in the current state (start twice, delete a running task).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A deliberate "this shim does not do that (yet)".
    #[error("{0}")]
    Unimplemented(String),
    /// Something the shim waited for did not happen in time (a guest that never got ready).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// An operating-system call failed; `context` says what the shim was doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Anything else that went wrong inside the shim.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// An io error with the operation and path it was about.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for "operation on path failed" io errors.
    pub fn io_path(op: &str, path: &Path, source: io::Error) -> Self {
        Error::io(format!("{op} {}", path.display()), source)
    }

    pub fn not_found_container(id: &str) -> Self {
        Error::NotFound(format!("container {id} not found"))
    }

    pub fn not_found_exec(id: &str, exec_id: &str) -> Self {
        Error::NotFound(format!("process {exec_id} of container {id} not found"))
    }

    /// The ttrpc status code containerd's errdefs expects for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
            Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => Code::NOT_FOUND,
            Error::Io { .. } | Error::Internal(_) => Code::INTERNAL,
        }
    }
}

impl From<Error> for ttrpc::Error {
    fn from(err: Error) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(err.code(), err.to_string()))
    }
}

impl From<nix::Error> for Error {
    fn from(errno: nix::Error) -> Self {
        Error::io("system call", io::Error::from(errno))
    }
}

/// Adds the operation and path to an io result, the way every io call in the shim reports.
pub trait IoContext<T> {
    fn with_path(self, op: &str, path: &Path) -> Result<T>;
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn with_path(self, op: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io_path(op, path, e.into()))
    }

    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(err: Error) -> Code {
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => status.code(),
            other => panic!("expected an RpcStatus, got {other:?}"),
        }
    }

    #[test]
    fn errors_map_to_the_codes_containerd_expects() {
        assert_eq!(
            code_of(Error::InvalidArgument("x".into())),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(code_of(Error::not_found_container("c")), Code::NOT_FOUND);
        assert_eq!(
            code_of(Error::AlreadyExists("x".into())),
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            code_of(Error::FailedPrecondition("x".into())),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            code_of(Error::Unimplemented("x".into())),
            Code::UNIMPLEMENTED
        );
        assert_eq!(
            code_of(Error::DeadlineExceeded("x".into())),
            Code::DEADLINE_EXCEEDED
        );
        assert_eq!(code_of(Error::Internal("x".into())), Code::INTERNAL);
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(code_of(Error::io("open x", missing)), Code::NOT_FOUND);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(code_of(Error::io("open x", denied)), Code::INTERNAL);
    }

    #[test]
    fn the_message_reaches_the_client_unchanged() {
        let err = Error::io_path("open", Path::new("/a/b"), io::Error::from_raw_os_error(2));
        match ttrpc::Error::from(err) {
            ttrpc::Error::RpcStatus(status) => {
                assert!(
                    status.message().starts_with("open /a/b: "),
                    "{}",
                    status.message()
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
