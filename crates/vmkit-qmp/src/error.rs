//! The crate's error type: failures of the server's own operations.
//!
//! Command failures reported to clients are protocol data, [`QmpError`](crate::QmpError).

use std::io;
use std::path::PathBuf;

/// What can go wrong creating or running the QMP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket path is longer than a Unix socket address holds, so no client could
    /// connect to it.
    #[error(
        "the QMP socket path {path} is {len} bytes: a Unix socket path holds at most {limit} \
         bytes (use a shorter directory or name)"
    )]
    PathTooLong {
        /// The requested socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The most bytes a socket path may have ([`crate::MAX_SOCKET_PATH`]).
        limit: usize,
    },
    /// The socket could not be created (bad directory, permissions).
    #[error("cannot create the QMP socket at {path}: {source}")]
    Bind {
        /// The requested socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Something other than a socket exists at the path; it is left alone.
    #[error("{path} exists and is not a socket: refusing to replace it (remove it or choose another path)")]
    NotASocket {
        /// The requested socket path.
        path: PathBuf,
    },
    /// A live server already answers on the path.
    #[error("another process is serving a socket at {path}: stop it or choose another path")]
    SocketInUse {
        /// The requested socket path.
        path: PathBuf,
    },
    /// An I/O operation of the server failed.
    #[error("QMP server: {operation} failed: {source}")]
    Io {
        /// What the server was doing.
        operation: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The server an event sender belongs to was dropped.
    #[error("the QMP server is gone: the event was not delivered")]
    ServerGone,
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
