//! The stand-alone agent, for backends that start it as a program (an OCI
//! runtime's init, a VM's init). The native backend runs the same code
//! in-process after building the sandbox.
//!
//! Usage: `capsule-agent (--socket PATH | --listen-fd N) [--user NAME]
//! [--inherit-env] [--single-id]`.
//!
//! As an OCI container's init the agent learns the sandbox's settings from
//! how it was started: `--inherit-env` makes its own environment (the
//! bundle's `process.env`) the one every process starts with, and
//! `--single-id` says the sandbox maps only one id, so every user runs as 0.

use std::os::fd::{FromRawFd, OwnedFd};

fn usage() -> ! {
    eprintln!(
        "usage: capsule-agent (--socket PATH | --listen-fd N) [--user NAME] [--inherit-env] [--single-id]"
    );
    std::process::exit(64)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut listener: Option<OwnedFd> = None;
    let mut config = capsule_agent::AgentConfig::default();
    let mut inherit_env = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => {
                let path = args.next().unwrap_or_else(|| usage());
                let _ = std::fs::remove_file(&path);
                match std::os::unix::net::UnixListener::bind(&path) {
                    Ok(l) => listener = Some(l.into()),
                    Err(e) => {
                        eprintln!("capsule-agent: cannot listen on {path}: {e}");
                        std::process::exit(70);
                    }
                }
            }
            "--listen-fd" => {
                let fd: i32 = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage());
                if fd < 3 {
                    usage();
                }
                // SAFETY: the caller handed this descriptor to us for the
                // agent to own; nothing else in this process uses it.
                listener = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            "--user" => config.default_user = args.next().unwrap_or_else(|| usage()),
            "--inherit-env" => inherit_env = true,
            "--single-id" => config.single_id = true,
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let Some(listener) = listener else { usage() };
    if inherit_env {
        // Variables that are not UTF-8 cannot travel in the API; leave them out.
        config.env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
    } else {
        config.env.insert(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    capsule_agent::run(config, listener)
}
