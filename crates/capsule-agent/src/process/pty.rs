//! Pseudo-terminals for interactive processes.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The controlling side of a pseudo-terminal.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

/// Opens a pseudo-terminal of `cols` x `rows`; returns the master and the
/// slave the child gets as its terminal.
pub fn open(cols: u16, rows: u16) -> io::Result<(PtyMaster, OwnedFd)> {
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(
        name.as_c_str(),
        OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    set_size(&master, cols, rows)?;
    rustix::io::ioctl_fionbio(&master, true)?;
    // SAFETY: `master` is an open descriptor owned by the AsyncFd from here
    // on; OwnedFd always reports that same descriptor.
    let fd =
        unsafe { AsyncFd::register_with_interest(master, Interest::READABLE | Interest::WRITABLE) }
            .map_err(io::Error::from)?;
    Ok((PtyMaster { fd }, slave))
}

fn set_size(fd: impl AsFd, cols: u16, rows: u16) -> io::Result<()> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, size)?;
    Ok(())
}

impl PtyMaster {
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        set_size(self.fd.get_ref(), cols, rows)
    }

    /// Reads output; `Ok(0)` once every holder of the slave has closed it.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| {
                rustix::io::read(inner.get_ref(), &mut *buf).map_err(io::Error::from)
            }) {
                Ok(Ok(n)) => return Ok(n),
                // Linux reports EIO on the master once the slave side is gone.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` (keyboard input).
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|inner| rustix::io::write(inner.get_ref(), data).map_err(io::Error::from))
            {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
