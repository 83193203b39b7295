//! A libc call std has no wrapper for: `send` with `MSG_NOSIGNAL`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// `send(fd, bytes, MSG_NOSIGNAL)`: a write to a socket whose peer left fails with
/// `EPIPE` instead of raising `SIGPIPE`, whatever the process's signal disposition.
pub(crate) fn send_nosignal(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of `bytes.len()` bytes for the whole call; an
    // invalid fd only makes send fail with EBADF.
    let ret = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}
