//! Resource limits, always clamped to the host's hard limits (Capsule may
//! run without CAP_SYS_RESOURCE and can then only lower them).

use rustix::process::{Resource, Rlimit};

use crate::error::{Result, SysError};

/// One limit to set: `soft` and `hard`, before clamping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// The limits a sandbox gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SandboxRlimits {
    pub nofile: Limit,
    /// Largest file a process may write, in bytes.
    pub fsize: Option<Limit>,
    /// Core dumps are off.
    pub core: Limit,
}

impl Default for SandboxRlimits {
    fn default() -> Self {
        Self {
            nofile: Limit {
                soft: 4096,
                hard: 8192,
            },
            fsize: None,
            core: Limit { soft: 0, hard: 0 },
        }
    }
}

/// Clamps a wanted limit to the current hard limit.
pub fn clamp(wanted: Limit, current_hard: Option<u64>) -> Limit {
    let hard = current_hard.map_or(wanted.hard, |h| wanted.hard.min(h));
    Limit {
        soft: wanted.soft.min(hard),
        hard,
    }
}

fn set(resource: Resource, name: &'static str, wanted: Limit) -> Result<()> {
    let current = rustix::process::getrlimit(resource);
    let limit = clamp(wanted, current.maximum);
    rustix::process::setrlimit(
        resource,
        Rlimit {
            current: Some(limit.soft),
            maximum: Some(limit.hard),
        },
    )
    .map_err(|e| SysError::syscall(name, e))
}

/// Applies the sandbox limits to the calling process.
pub fn apply(limits: &SandboxRlimits) -> Result<()> {
    set(Resource::Nofile, "setrlimit(RLIMIT_NOFILE)", limits.nofile)?;
    set(Resource::Core, "setrlimit(RLIMIT_CORE)", limits.core)?;
    if let Some(fsize) = limits.fsize {
        set(Resource::Fsize, "setrlimit(RLIMIT_FSIZE)", fsize)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_to_the_host_hard_limit() {
        let want = Limit {
            soft: 4096,
            hard: 65536,
        };
        assert_eq!(
            clamp(want, Some(20000)),
            Limit {
                soft: 4096,
                hard: 20000
            }
        );
        assert_eq!(
            clamp(want, Some(1024)),
            Limit {
                soft: 1024,
                hard: 1024
            }
        );
        assert_eq!(clamp(want, None), want);
    }
}
