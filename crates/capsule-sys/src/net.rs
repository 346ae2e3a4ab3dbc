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

// ---- egress networking (see docs/network.md) ----

/// Runs `f` on a new thread that first joins the network namespace `ns`
/// (an open `/proc/PID/ns/net` or `/run/netns/NAME`). Only that thread
/// moves: sockets it makes and programs it starts belong to `ns`, and the
/// caller's namespaces stay as they were.
pub fn in_netns<T: Send + 'static>(
    ns: std::os::fd::OwnedFd,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let thread = std::thread::Builder::new()
        .name("capsule-netns".into())
        .spawn(move || {
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| SysError::syscall("setns(CLONE_NEWNET)", e))?;
            Ok(f())
        })
        .map_err(|e| SysError::syscall("spawning a thread to enter a network namespace", e))?;
    thread
        .join()
        .map_err(|_| SysError::Unsupported("a thread inside a network namespace panicked".into()))?
}

/// Every address of every interface of the caller's network namespace.
pub fn host_addresses() -> Result<Vec<std::net::IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs stores a list it allocated in `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(SysError::syscall("getifaddrs", io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, which
        // stays allocated until freeifaddrs below.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr at least as large as its
            // family says.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into());
            } else if family == libc::AF_INET6 {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr).into());
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once; no reference
    // into it outlives this point.
    unsafe { libc::freeifaddrs(list) };
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod egress_tests {
    use super::*;

    #[test]
    fn host_addresses_include_loopback() {
        let addrs = host_addresses().unwrap();
        assert!(
            addrs.contains(&std::net::Ipv4Addr::LOCALHOST.into()),
            "{addrs:?}"
        );
    }

    #[test]
    fn in_netns_runs_on_another_thread_and_reports_bad_fds() {
        let own = std::fs::File::open("/proc/self/ns/net").unwrap();
        let me = std::thread::current().id();
        let other = in_netns(own.into(), move || std::thread::current().id() != me).unwrap();
        assert!(other);
        let not_ns = std::fs::File::open("/dev/null").unwrap();
        assert!(in_netns(not_ns.into(), || ()).is_err());
    }
}

// ---- end egress networking ----
