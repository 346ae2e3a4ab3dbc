//! Every system call Capsule makes, wrapped once.
//!
//! Each wrapper names the operation and the path it acted on in its error, so
//! a failure deep inside sandbox set-up still says exactly what failed. This
//! crate (and the agent's init path) is the only place `unsafe` is allowed;
//! every block carries a `SAFETY:` comment stating the invariant it relies on.

pub mod btrfs;
pub mod caps;
pub mod cgroup;
pub mod error;
pub mod landlock;
pub mod mount;
pub mod net;
pub mod process;
pub mod rlimit;
pub mod seccomp;
pub mod userns;

pub use error::{Result, SysError};
