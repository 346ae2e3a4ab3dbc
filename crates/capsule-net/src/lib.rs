//! Egress for sandboxes (see `docs/network.md`): the allow-list a sandbox
//! gets, the ranges nobody gets, and the HTTP forward proxy that enforces
//! both from the host side.

pub mod addr;
pub mod policy;
pub mod proxy;

pub use addr::DenyList;
pub use policy::{Policy, PolicyError};
pub use proxy::{Egress, serve};
