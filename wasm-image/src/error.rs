//! The one error type of the tool and its library, and the exit status each kind maps to.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong, worded for the person at the command line: each message
/// names the problem and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad command line: exit status 2.
    #[error("{0} (see wasm-image --help)")]
    Usage(String),
    /// A file or directory that could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Inputs that exist but cannot be turned into an image.
    #[error("{0}")]
    Invalid(String),
    /// A registry that could not be reached, refused a request or answered nonsense.
    #[error("{0}")]
    Registry(String),
}

impl Error {
    /// The process exit status: 2 for a usage error, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Io { .. } | Error::Invalid(_) | Error::Registry(_) => 1,
        }
    }
}

pub(crate) fn usage(message: impl Into<String>) -> Error {
    Error::Usage(message.into())
}

/// `map_err` adapter that names the path an io error is about.
pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_point_at_the_help() {
        let err = usage("missing --module FILE");
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.to_string(),
            "missing --module FILE (see wasm-image --help)"
        );
    }

    #[test]
    fn io_errors_name_the_action_and_the_path() {
        let source = io::Error::from(io::ErrorKind::NotFound);
        let err = io_err("cannot read module", Path::new("/x/m.wasm"))(source);
        assert_eq!(err.exit_code(), 1);
        let message = err.to_string();
        assert!(
            message.starts_with("cannot read module /x/m.wasm: "),
            "{message}"
        );
        assert_eq!(Error::Registry("r".into()).exit_code(), 1);
    }
}
