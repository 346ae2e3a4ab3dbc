//! Addresses the proxy never connects to, whatever an allow-list says:
//! private, loopback, link-local, CGNAT, multicast, unspecified, reserved
//! and unique-local ranges, Capsule's own sandbox network, and every
//! address of the host. Checked on the address actually dialled, after
//! DNS, so a name that resolves somewhere internal is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::policy::Cidr;

/// How long a reading of the host's own addresses is trusted.
const HOST_ADDRESSES_TTL: Duration = Duration::from_secs(1);

/// Why `ip` belongs to a range no sandbox may reach, or `None`.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let ranges: [([u8; 4], u32, &'static str); 14] = [
        ([0, 0, 0, 0], 32, "an unspecified address"),
        ([0, 0, 0, 0], 8, "a reserved address (\"this network\")"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([100, 64, 0, 0], 10, "a carrier-grade NAT (shared) address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([172, 16, 0, 0], 12, "a private address"),
        (
            [192, 0, 0, 0],
            24,
            "a reserved address (IETF protocol assignments)",
        ),
        ([192, 168, 0, 0], 16, "a private address"),
        ([198, 18, 0, 0], 15, "a reserved address (benchmarking)"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([255, 255, 255, 255], 32, "a broadcast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
        (
            [192, 88, 99, 0],
            24,
            "a reserved address (6to4 relay anycast)",
        ),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    let bits = u128::from(ip);
    let in_v6 = |net: u128, prefix: u32| {
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        bits & mask == net & mask
    };
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // Addresses that carry an IPv4 address are judged by it: a NAT64 or
    // 6to4 gateway would deliver them to that IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if in_v6(0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return special_v4(embedded(seg[6], seg[7]));
    }
    if in_v6(0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48) {
        return Some("a reserved address (local-use NAT64)");
    }
    if in_v6(0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        return special_v4(embedded(seg[1], seg[2]));
    }
    let ranges: [(u128, u32, &'static str); 7] = [
        (0, 96, "a reserved address (IPv4-compatible)"),
        (
            0x0100_0000_0000_0000_0000_0000_0000_0000,
            64,
            "a reserved address (discard-only)",
        ),
        (
            0x2001_0000_0000_0000_0000_0000_0000_0000,
            32,
            "a Teredo tunnel address",
        ),
        (
            0xfc00_0000_0000_0000_0000_0000_0000_0000,
            7,
            "a unique-local (private) address",
        ),
        (
            0xfe80_0000_0000_0000_0000_0000_0000_0000,
            10,
            "a link-local address",
        ),
        (
            0xfec0_0000_0000_0000_0000_0000_0000_0000,
            10,
            "a site-local (private) address",
        ),
        (
            0xff00_0000_0000_0000_0000_0000_0000_0000,
            8,
            "a multicast address",
        ),
    ];
    ranges
        .iter()
        .find(|(net, prefix, _)| in_v6(*net, *prefix))
        .map(|(_, _, why)| *why)
}

/// The always-denied check, with the host's addresses and extra networks
/// (Capsule's sandbox range).
pub struct DenyList {
    extra: Vec<(Cidr, &'static str)>,
    host: Mutex<(Option<Instant>, Vec<IpAddr>)>,
}

impl DenyList {
    pub fn new(extra: Vec<(Cidr, &'static str)>) -> Self {
        Self {
            extra,
            host: Mutex::new((None, Vec::new())),
        }
    }

    /// Ok when the proxy may connect to `ip`, else the reason it may not.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        let ip = ip.to_canonical();
        if let Some(why) = special_range(ip) {
            return Err(why);
        }
        if let Some((_, why)) = self.extra.iter().find(|(c, _)| c.contains(ip)) {
            return Err(why);
        }
        if self.host_addresses().contains(&ip) {
            return Err("an address of this host");
        }
        Ok(())
    }

    fn host_addresses(&self) -> Vec<IpAddr> {
        let mut cache = self.host.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = cache.0.is_some_and(|at| at.elapsed() < HOST_ADDRESSES_TTL);
        if !fresh {
            match capsule_sys::net::host_addresses() {
                Ok(addrs) => *cache = (Some(Instant::now()), addrs),
                // Keep the last reading; the ranges above still apply.
                Err(e) => tracing::warn!(
                    "reading the host's addresses: {}",
                    capsule_sys::error::chain(&e)
                ),
            }
        }
        cache.1.iter().map(|a| a.to_canonical()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Option<&'static str> {
        special_range(s.parse().unwrap())
    }

    #[test]
    fn internal_ranges_are_special() {
        for (ip, word) in [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "reserved"),
            ("10.0.0.5", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade"),
            ("100.127.255.254", "carrier-grade"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.251", "multicast"),
            ("239.1.1.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:10.0.0.5", "private"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:0a00:0005::1", "private"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:0:4136:e378::1", "Teredo"),
        ] {
            let got = why(ip).unwrap_or_else(|| panic!("{ip} is not special"));
            assert!(got.contains(word), "{ip}: {got}");
        }
    }

    #[test]
    fn public_and_documentation_ranges_are_not() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "2606:4700::1111",
            "2001:db8::1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(why(ip), None, "{ip}");
        }
    }

    #[test]
    fn the_host_and_extra_networks_are_denied() {
        let deny = DenyList::new(vec![(
            "203.0.113.0/24".parse().unwrap(),
            "an address of Capsule's sandbox network",
        )]);
        assert!(
            deny.check("203.0.113.5".parse().unwrap())
                .unwrap_err()
                .contains("sandbox network")
        );
        assert!(deny.check("8.8.8.8".parse().unwrap()).is_ok());
        for ip in capsule_sys::net::host_addresses().unwrap() {
            assert!(deny.check(ip).is_err(), "{ip}");
        }
    }
}
