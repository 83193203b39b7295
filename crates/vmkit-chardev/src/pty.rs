//! Opening a pseudo-terminal: the one place this crate needs `unsafe` (libc calls std has
//! no wrapper for).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A pseudo-terminal: the master side we use, the slave path a user opens.
pub(crate) struct Pty {
    master: File,
    /// Held open so the master never reports a hang-up (and input never ends) while no
    /// user has the slave open; output then collects in the terminal buffer, and is
    /// dropped once that is full.
    _slave: File,
    path: PathBuf,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Pty {
    /// Opens a new pseudo-terminal in raw mode with a non-blocking master, as QEMU's
    /// `pty` backend does.
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: posix_openpt takes flags only and returns a new fd or -1.
        let fd =
            check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh, valid fd nothing else owns; OwnedFd closes it.
        let master = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let raw = master.as_raw_fd();
        // SAFETY: `raw` is a valid pty master fd for these calls.
        check(unsafe { libc::grantpt(raw) })?;
        // SAFETY: as above.
        check(unsafe { libc::unlockpt(raw) })?;
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer is valid for `name.len()` bytes; ptsname_r NUL-terminates it.
        let ret = unsafe { libc::ptsname_r(raw, name.as_mut_ptr(), name.len()) };
        if ret != 0 {
            return Err(io::Error::from_raw_os_error(ret));
        }
        // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
        let path = PathBuf::from(
            unsafe { CStr::from_ptr(name.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        );
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)?;
        make_raw(&slave)?;
        // SAFETY: F_GETFL/F_SETFL on a valid fd only change its status flags.
        unsafe {
            let flags = check(libc::fcntl(raw, libc::F_GETFL))?;
            check(libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
        }
        Ok(Self {
            master,
            _slave: slave,
            path,
        })
    }

    pub(crate) fn master(&self) -> &File {
        &self.master
    }

    pub(crate) fn slave_path(&self) -> &Path {
        &self.path
    }
}

/// cfmakeraw on a terminal: no echo, no line editing, no signals, 8-bit clean.
fn make_raw(tty: &File) -> io::Result<()> {
    // SAFETY: termios is plain data; zeroed is a valid value that tcgetattr overwrites.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and a pointer to a live termios.
    check(unsafe { libc::tcgetattr(tty.as_raw_fd(), &mut termios) })?;
    // SAFETY: cfmakeraw only edits the struct it is given.
    unsafe { libc::cfmakeraw(&mut termios) };
    // SAFETY: valid fd and a pointer to a live termios.
    check(unsafe { libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &termios) })?;
    Ok(())
}
