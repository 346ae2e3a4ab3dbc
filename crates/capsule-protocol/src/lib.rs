//! The protocol between the Capsule server and the agent inside each sandbox.
//!
//! The agent speaks the Connect protocol with the JSON codec and serves the
//! `process.Process` and `filesystem.Filesystem` services plus the plain
//! `/files` and `/health` endpoints, the same surface as E2B's in-sandbox
//! daemon (envd). The message types here are written from the public
//! protocol description; field names follow the proto3 JSON mapping.

pub mod client;
pub mod connect;
pub mod filesystem;
pub mod process;
pub mod serde_helpers;

pub use connect::{Code, ConnectError};

/// Paths of the Connect procedures the agent serves.
pub mod paths {
    pub const PROCESS_LIST: &str = "/process.Process/List";
    pub const PROCESS_START: &str = "/process.Process/Start";
    pub const PROCESS_CONNECT: &str = "/process.Process/Connect";
    pub const PROCESS_UPDATE: &str = "/process.Process/Update";
    pub const PROCESS_STREAM_INPUT: &str = "/process.Process/StreamInput";
    pub const PROCESS_SEND_INPUT: &str = "/process.Process/SendInput";
    pub const PROCESS_SEND_SIGNAL: &str = "/process.Process/SendSignal";
    pub const PROCESS_CLOSE_STDIN: &str = "/process.Process/CloseStdin";
    pub const FS_STAT: &str = "/filesystem.Filesystem/Stat";
    pub const FS_MAKE_DIR: &str = "/filesystem.Filesystem/MakeDir";
    pub const FS_MOVE: &str = "/filesystem.Filesystem/Move";
    pub const FS_LIST_DIR: &str = "/filesystem.Filesystem/ListDir";
    pub const FS_REMOVE: &str = "/filesystem.Filesystem/Remove";
    pub const FS_WATCH_DIR: &str = "/filesystem.Filesystem/WatchDir";
    pub const FS_CREATE_WATCHER: &str = "/filesystem.Filesystem/CreateWatcher";
    pub const FS_GET_WATCHER_EVENTS: &str = "/filesystem.Filesystem/GetWatcherEvents";
    pub const FS_REMOVE_WATCHER: &str = "/filesystem.Filesystem/RemoveWatcher";
    pub const FILES: &str = "/files";
    pub const HEALTH: &str = "/health";
}

/// The envd version whose behaviour the agent implements; clients use it to
/// decide which features they may use.
pub const ENVD_VERSION: &str = "0.2.0";
