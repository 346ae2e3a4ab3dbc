//! Network set-up inside a sandbox's own network namespace.

use std::io;

use crate::error::{Result, SysError};

/// Brings the loopback interface of the caller's network namespace up.
pub fn loopback_up() -> Result<()> {
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(SysError::syscall("socket", io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket and is owned by nobody else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`,
    // which lives for the whole call.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(SysError::syscall(
            "ioctl(SIOCGIFFLAGS lo)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`, valid for the whole call.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(SysError::syscall(
            "ioctl(SIOCSIFFLAGS lo)",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Sets the hostname in the caller's UTS namespace.
pub fn set_hostname(name: &str) -> Result<()> {
    rustix::system::sethostname(name.as_bytes()).map_err(|e| SysError::syscall("sethostname", e))
}
