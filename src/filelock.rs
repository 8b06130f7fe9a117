//! An exclusive advisory lock on a file (flock), for work that several trawl processes on
//! one machine may start at once: creating or starting the embedded cluster, installing.
//! The kernel drops the lock when the holder dies, so a crash never leaves it held.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held until dropped.
pub struct FileLock {
    _file: fs::File,
}

impl FileLock {
    /// The lock on `path` (created when missing) if no one else holds it, at once.
    pub fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        let file = open(path)?;
        loop {
            // SAFETY: flock on a file descriptor we own for as long as the call lasts.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Some(FileLock { _file: file }));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Ok(None),
                Some(libc::EINTR) => continue,
                _ => return Err(err),
            }
        }
    }

    /// Blocks until the lock on `path` (created when missing) is ours.
    pub fn acquire(path: &Path) -> io::Result<FileLock> {
        let file = open(path)?;
        loop {
            // SAFETY: flock on a file descriptor we own for as long as the call lasts.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// The lock file, created when missing.
fn open(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}
