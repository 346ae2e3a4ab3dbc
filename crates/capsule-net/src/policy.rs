//! What one egress sandbox may reach: its allow-list (host names, `*.suffix`
//! wildcards, CIDRs) and the secret headers the proxy adds for some hosts.
//!
//! Parsing is strict so that a typo fails the create instead of silently
//! allowing nothing (or too much). Every error names the offending value.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::{HeaderName, HeaderValue};

/// Entries an allow-list may hold.
pub const MAX_ALLOW: usize = 256;
/// Secret headers a sandbox may have.
pub const MAX_SECRETS: usize = 32;
/// The longest secret header value, in bytes.
pub const MAX_SECRET_VALUE: usize = 8192;

/// Headers the proxy manages itself, which a secret may not set.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("`network.allow` has {0} entries; the limit is {MAX_ALLOW}")]
    TooManyEntries(usize),
    #[error("`network.allow` entry {entry:?} {why}")]
    Entry { entry: String, why: String },
    #[error("`network.secrets` has {0} entries; the limit is {MAX_SECRETS}")]
    TooManySecrets(usize),
    #[error("`network.secrets[{index}].{field}` {why}")]
    Secret {
        index: usize,
        field: &'static str,
        why: String,
    },
}

/// An IPv4 or IPv6 network, `198.51.100.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `ip` lies in this network (IPv4-mapped IPv6 addresses
    /// count as the IPv4 address they carry).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX` with no bits set beyond the prefix, or a bare address.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let valid = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
                match p.parse::<u8>() {
                    Ok(n) if valid && n <= max => n,
                    _ => return Err(format!("prefix {p:?} must be a number from 0 to {max}")),
                }
            }
        };
        let cidr = Cidr { addr, prefix };
        let base = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::from(std::net::Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        if base != addr {
            return Err(format!(
                "has bits set beyond its prefix (the network is {base}/{prefix})"
            ));
        }
        Ok(cidr)
    }
}

/// Normalizes a DNS host name (lowercase, no trailing dot) or says what is
/// wrong with it. Names whose last label is numeric are refused: resolvers
/// read `127.1` or `2130706433` as addresses.
pub fn normalize_host(name: &str) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    let trimmed = lower.strip_suffix('.').unwrap_or(&lower);
    if trimmed.is_empty() {
        return Err("is empty".into());
    }
    if trimmed.len() > 253 {
        return Err("is longer than 253 bytes".into());
    }
    if !trimmed.is_ascii() {
        return Err("is not ASCII; give internationalized names in their xn-- form".into());
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err("has an empty label".into());
        }
        if label.len() > 63 {
            return Err("has a label longer than 63 bytes".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("contains {c:?}, which host names cannot"));
        }
    }
    let last = trimmed.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("looks like a partial IP address; give addresses in full".into());
    }
    Ok(trimmed.to_owned())
}

/// What a request's host is matched and keyed by: a literal address (IPv6
/// with or without brackets), or a normalized host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// Parses the host part of a request target, saying what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bare = raw
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(raw);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Ok(Host::Ip(ip.to_canonical())),
            Err(_) => normalize_host(bare).map(Host::Name),
        }
    }

    /// The key secrets are stored under.
    pub fn key(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

/// A header the proxy adds to every request for `host`.
#[derive(Clone)]
pub struct Secret {
    pub host: String,
    pub header: HeaderName,
    pub value: HeaderValue,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("host", &self.host)
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// A checked allow-list with its secrets.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    hosts: Vec<String>,
    /// `*.pypi.org` kept as `.pypi.org`.
    suffixes: Vec<String>,
    cidrs: Vec<Cidr>,
    secrets: Vec<Secret>,
}

impl Policy {
    /// Checks an allow-list and secrets given as `(host, header, value)`.
    pub fn new(
        allow: &[String],
        secrets: &[(String, String, String)],
    ) -> Result<Self, PolicyError> {
        if allow.len() > MAX_ALLOW {
            return Err(PolicyError::TooManyEntries(allow.len()));
        }
        let mut policy = Policy::default();
        for entry in allow {
            let bad = |why: String| PolicyError::Entry {
                entry: entry.clone(),
                why,
            };
            if entry.is_empty() {
                return Err(bad("is empty".into()));
            }
            if entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad("contains whitespace or control characters".into()));
            }
            if entry.contains('/') || entry.parse::<IpAddr>().is_ok() {
                let cidr = entry
                    .parse::<Cidr>()
                    .map_err(|why| bad(format!("is not a valid CIDR: {why}")))?;
                policy.cidrs.push(cidr);
            } else if let Some(rest) = entry.strip_prefix("*.") {
                if rest.contains('*') {
                    return Err(bad("may have only one `*`, as its first label".into()));
                }
                let suffix = normalize_host(rest).map_err(|why| {
                    bad(format!(
                        "is not a valid wildcard: the part after `*.` {why}"
                    ))
                })?;
                policy.suffixes.push(format!(".{suffix}"));
            } else if entry.contains('*') {
                return Err(bad(
                    "has a `*` that is not a leading `*.` (write `*.example.com`; a bare `*` is not allowed)".into(),
                ));
            } else if entry.contains(':') {
                return Err(bad(
                    "is not a host name or CIDR (give hosts without a port or scheme)".into(),
                ));
            } else {
                let host = normalize_host(entry)
                    .map_err(|why| bad(format!("is not a valid host name: it {why}")))?;
                policy.hosts.push(host);
            }
        }
        if secrets.len() > MAX_SECRETS {
            return Err(PolicyError::TooManySecrets(secrets.len()));
        }
        for (index, (host, header, value)) in secrets.iter().enumerate() {
            let bad = |field: &'static str, why: String| PolicyError::Secret { index, field, why };
            if host.contains('*') {
                return Err(bad(
                    "host",
                    format!("{host:?} must be one host, not a wildcard"),
                ));
            }
            // A literal address is matched against the CIDRs, a name against
            // the names; the key is what `host_key` makes of a request's host.
            let (host_norm, allowed) = match host.parse::<IpAddr>() {
                Ok(ip) => (ip.to_canonical().to_string(), policy.allows_ip(ip)),
                Err(_) => {
                    let name = normalize_host(host).map_err(|why| {
                        bad("host", format!("{host:?} is not a host name: it {why}"))
                    })?;
                    let allowed = policy.allows_name(&name);
                    (name, allowed)
                }
            };
            if !allowed {
                return Err(bad(
                    "host",
                    format!(
                        "{host:?} is not in `network.allow`; secrets are only sent to allowed hosts"
                    ),
                ));
            }
            let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
                bad(
                    "header",
                    format!("{header:?} is not a valid HTTP header name"),
                )
            })?;
            if RESERVED_HEADERS.contains(&name.as_str()) || name.as_str().starts_with("proxy-") {
                return Err(bad(
                    "header",
                    format!("{header:?} is managed by the proxy and cannot be a secret"),
                ));
            }
            if value.is_empty() || value.len() > MAX_SECRET_VALUE {
                return Err(bad(
                    "value",
                    format!("must be 1 to {MAX_SECRET_VALUE} bytes"),
                ));
            }
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                bad(
                    "value",
                    "has characters a header value cannot hold (control characters or line breaks)"
                        .into(),
                )
            })?;
            value.set_sensitive(true);
            if policy
                .secrets
                .iter()
                .any(|s| s.host == host_norm && s.header == name)
            {
                return Err(bad(
                    "header",
                    format!("{header:?} is given twice for {host_norm:?}"),
                ));
            }
            policy.secrets.push(Secret {
                host: host_norm,
                header: name,
                value,
            });
        }
        Ok(policy)
    }

    /// True when a normalized host name matches an exact or wildcard entry.
    pub fn allows_name(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }

    /// True when an address lies in one of the allowed networks.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.cidrs.iter().any(|c| c.contains(ip))
    }

    /// The secret headers for a host key (see [`host_key`]).
    pub fn secrets_for(&self, host: &str) -> Vec<Secret> {
        self.secrets
            .iter()
            .filter(|s| s.host == host)
            .cloned()
            .collect()
    }

    /// True when the allow-list lets `host` through (names by name,
    /// addresses by CIDR; the always-denied ranges are checked elsewhere).
    pub fn allows(&self, host: &Host) -> bool {
        match host {
            Host::Ip(ip) => self.allows_ip(*ip),
            Host::Name(n) => self.allows_name(n),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.suffixes.is_empty() && self.cidrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> Result<Policy, PolicyError> {
        Policy::new(
            &entries.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &[],
        )
    }

    #[test]
    fn hosts_and_wildcards_match_as_documented() {
        let p = allow(&["API.GitHub.com.", "*.pypi.org", "files.pythonhosted.org"]).unwrap();
        assert!(p.allows_name("api.github.com"));
        assert!(!p.allows_name("github.com"));
        assert!(!p.allows_name("evilapi.github.com"));
        assert!(p.allows_name("a.pypi.org"));
        assert!(p.allows_name("a.b.pypi.org"));
        assert!(
            !p.allows_name("pypi.org"),
            "the wildcard does not cover its apex"
        );
        assert!(!p.allows_name("evilpypi.org"));
        assert!(!p.allows_name("pypi.org.evil.com"));
        assert!(p.allows_name("files.pythonhosted.org"));
    }

    #[test]
    fn request_hosts_parse_to_addresses_or_names() {
        assert_eq!(
            Host::parse("[2001:db8::1]").unwrap(),
            Host::Ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            Host::parse("::ffff:198.51.100.1").unwrap().key(),
            "198.51.100.1"
        );
        assert_eq!(
            Host::parse("Example.COM.").unwrap(),
            Host::Name("example.com".into())
        );
        assert!(Host::parse("127.1").is_err());
        assert!(Host::parse("a b").is_err());
        let p = allow(&["example.com", "198.51.100.0/24"]).unwrap();
        assert!(p.allows(&Host::parse("EXAMPLE.com").unwrap()));
        assert!(p.allows(&Host::parse("198.51.100.1").unwrap()));
        assert!(!p.allows(&Host::parse("203.0.113.1").unwrap()));
    }

    #[test]
    fn cidrs_match_v4_v6_and_mapped_addresses() {
        let p = allow(&["198.51.100.0/24", "2001:db8::/32", "203.0.113.7"]).unwrap();
        assert!(p.allows_ip("198.51.100.200".parse().unwrap()));
        assert!(!p.allows_ip("198.51.101.1".parse().unwrap()));
        assert!(p.allows_ip("::ffff:198.51.100.9".parse().unwrap()));
        assert!(p.allows_ip("2001:db8:1::5".parse().unwrap()));
        assert!(!p.allows_ip("2001:db9::5".parse().unwrap()));
        assert!(p.allows_ip("203.0.113.7".parse().unwrap()));
        assert!(!p.allows_ip("203.0.113.8".parse().unwrap()));
        assert!(
            allow(&["0.0.0.0/0"])
                .unwrap()
                .allows_ip("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for (entry, needle) in [
            ("", "is empty"),
            ("198.51.100.0/33", "prefix"),
            ("198.51.100.1/24", "bits set"),
            ("300.1.1.1/8", "not an IPv4"),
            ("198.51.100.0/", "prefix"),
            ("198.51.100.0/+8", "prefix"),
            ("*", "bare"),
            ("a.*.com", "leading"),
            ("*.*.com", "only one"),
            ("*.", "wildcard"),
            ("exa mple.com", "whitespace"),
            ("example.com:443", "port"),
            ("https://example.com", "CIDR"),
            ("ex@mple.com", "'@'"),
            ("10.1", "partial IP"),
            ("bücher.de", "xn--"),
            ("a..b", "empty label"),
        ] {
            let err = allow(&[entry]).unwrap_err().to_string();
            assert!(err.contains(&format!("{entry:?}")), "{entry}: {err}");
            assert!(err.contains(needle), "{entry}: {err}");
        }
        let many: Vec<String> = (0..=MAX_ALLOW).map(|i| format!("h{i}.example")).collect();
        assert!(matches!(
            Policy::new(&many, &[]),
            Err(PolicyError::TooManyEntries(_))
        ));
    }

    #[test]
    fn secrets_need_an_allowed_host_and_a_sane_header() {
        let allow = vec!["api.example.com".to_string(), "*.corp.example".to_string()];
        let s = |h: &str, n: &str, v: &str| vec![(h.to_string(), n.to_string(), v.to_string())];
        let p = Policy::new(&allow, &s("API.example.com", "Authorization", "Bearer x")).unwrap();
        assert_eq!(p.secrets_for("api.example.com").len(), 1);
        assert!(p.secrets_for("other.example.com").is_empty());
        assert!(!format!("{p:?}").contains("Bearer x"));
        assert!(Policy::new(&allow, &s("git.corp.example", "X-Token", "t")).is_ok());
        for (secret, needle) in [
            (
                s("evil.example.com", "Authorization", "x"),
                "not in `network.allow`",
            ),
            (s("", "Authorization", "x"), "host"),
            (s("*.corp.example", "Authorization", "x"), "host"),
            (s("api.example.com", "Host", "x"), "managed by the proxy"),
            (
                s("api.example.com", "Proxy-Authorization", "x"),
                "managed by the proxy",
            ),
            (
                s("api.example.com", "Bad Header", "x"),
                "not a valid HTTP header",
            ),
            (
                s("api.example.com", "X-A", "a\r\nInjected: 1"),
                "line breaks",
            ),
            (s("api.example.com", "X-A", ""), "1 to"),
        ] {
            let err = Policy::new(&allow, &secret).unwrap_err().to_string();
            assert!(err.contains(needle), "{secret:?}: {err}");
            assert!(err.contains("network.secrets[0]"), "{err}");
        }
        let cidr = vec!["198.51.100.0/24".to_string()];
        let p = Policy::new(&cidr, &s("198.51.100.1", "X-Key", "k")).unwrap();
        assert_eq!(
            p.secrets_for(&Host::parse("198.51.100.1").unwrap().key())
                .len(),
            1
        );
        let err = Policy::new(&cidr, &s("203.0.113.1", "X-Key", "k")).unwrap_err();
        assert!(err.to_string().contains("not in `network.allow`"), "{err}");
        let twice = [
            s("api.example.com", "X-A", "1"),
            s("api.example.com", "x-a", "2"),
        ]
        .concat();
        assert!(
            Policy::new(&allow, &twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
