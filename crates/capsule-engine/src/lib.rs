//! The engine: every business rule of Capsule lives here once. Front doors
//! (JSON-RPC, WebSocket terminal, E2B routes, MCP, the CLI) parse and
//! validate at the edge and call these methods.

mod access;
mod code;
pub mod config;
mod engine;
pub mod errors;
mod exec;
pub mod files;
mod network;
pub mod paths;
mod pause;
mod pools;
mod storage;
pub mod store;
pub mod templates;
mod tenancy;
mod terminal;

pub use access::SandboxAccess;
pub use config::EngineConfig;
pub use engine::Engine;
pub use tenancy::{AuthError, Principal};
pub use terminal::{Terminal, TerminalControl, TerminalEvent};
