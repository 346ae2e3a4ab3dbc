//! The stand-alone agent, for backends that start it as a program (an OCI
//! runtime's init, a VM's init). The native backend runs the same code
//! in-process after building the sandbox.
//!
//! Usage: `capsule-agent --socket PATH` or `capsule-agent --listen-fd N`.

use std::os::fd::{FromRawFd, OwnedFd};

fn usage() -> ! {
    eprintln!("usage: capsule-agent (--socket PATH | --listen-fd N) [--user NAME]");
    std::process::exit(64)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut listener: Option<OwnedFd> = None;
    let mut config = capsule_agent::AgentConfig::default();
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
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let Some(listener) = listener else { usage() };
    config.env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    capsule_agent::run(config, listener)
}
