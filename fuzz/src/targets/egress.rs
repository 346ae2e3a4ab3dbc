//! `capsule_net`: the allow-list entries a create takes and the request
//! hosts the egress proxy parses. Nothing panics, every refusal names the
//! entry, accepted names match themselves, and no address the proxy
//! would dial lies in an always-denied range because of an allow entry.

use capsule_net::addr::DenyList;
use capsule_net::policy::{Host, Policy, PolicyError};

use super::{ensure, sig, text};
use crate::Target;

pub const ALLOW: Target = Target {
    name: "egress_allow",
    about: "network.allow entries and proxy request hosts: no panics, named refusals, self-match",
    seeds: || {
        [
            "api.github.com",
            "*.pypi.org",
            "198.51.100.0/24",
            "2001:db8::/32",
            "10.0.0.1/8",
            "[::ffff:127.0.0.1]",
            "127.1",
            "xn--bcher-kva.de.",
            "*",
            "a..b",
            "example.com:443",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
    },
    dictionary: &[
        b"*.",
        b".",
        b"/",
        b":",
        b"[",
        b"]",
        b"::",
        b"ffff:",
        b"127.0.0.1",
        b"0",
        b"/32",
        b"/128",
        b"xn--",
        b"-",
        b"_",
        b"\n",
    ],
    run,
};

fn run(input: &[u8]) -> Result<u64, String> {
    let text = text(input);
    let entries: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let outcome = match Policy::new(&entries, &[]) {
        Ok(policy) => {
            for entry in &entries {
                if let Ok(Host::Name(name)) = Host::parse(entry) {
                    ensure(policy.allows_name(&name), || {
                        format!("accepted entry {entry:?} does not match itself")
                    })?;
                    ensure(Host::parse(&name) == Ok(Host::Name(name.clone())), || {
                        format!("normalizing {entry:?} is not idempotent")
                    })?;
                }
            }
            0u8
        }
        Err(PolicyError::Entry { entry, why }) => {
            ensure(entries.contains(&entry), || {
                format!("refusal names {entry:?}, which is not an entry")
            })?;
            ensure(!why.is_empty(), || format!("empty reason for {entry:?}"))?;
            1
        }
        Err(_) => 2,
    };
    let hosts: Vec<u8> = entries
        .iter()
        .map(|e| match Host::parse(e) {
            Ok(Host::Ip(ip)) => {
                // Whatever a list allows, an address in an always-denied
                // range (judged on the canonical form: a mapped loopback
                // address is loopback) is refused by the proxy's check.
                if capsule_net::addr::special_range(ip.to_canonical()).is_some() {
                    ensure(DenyList::new(Vec::new()).check(ip).is_err(), || {
                        format!("{ip} is in an always-denied range but passes the check")
                    })?;
                    return Ok(6);
                }
                Ok(3)
            }
            Ok(Host::Name(_)) => Ok(4),
            Err(_) => Ok(5),
        })
        .collect::<Result<_, String>>()?;
    Ok(sig((outcome, hosts)))
}
