//! What the server hands the sandbox launcher, and what it answers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use capsule_sys::rlimit::SandboxRlimits;
use capsule_sys::userns::IdMapping;
use serde::{Deserialize, Serialize};

/// A directory inside the sandbox that must belong to a given user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedDir {
    /// Relative to the sandbox root.
    pub path: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// A host directory mounted into the sandbox (a volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeBind {
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: String,
    pub read_only: bool,
}

/// Settings of the agent inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSettings {
    pub env: BTreeMap<String, String>,
    pub default_user: String,
    pub single_id: bool,
}

/// Everything the launcher needs to build one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitSpec {
    pub id: String,
    pub hostname: String,
    pub mapping: IdMapping,
    /// Read-only layers, topmost first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The empty directory the root overlay is mounted on.
    pub root: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// Where the launcher records the init's pid and start time.
    pub pid_file: PathBuf,
    /// Host directories bound read-only at the same path.
    pub binds: Vec<PathBuf>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeBind>,
    pub tmp_size_bytes: u64,
    pub shm_size_bytes: u64,
    pub owned_dirs: Vec<OwnedDir>,
    pub rlimits: SandboxRlimits,
    pub landlock: bool,
    pub seccomp: bool,
    pub agent: AgentSettings,
}

/// The launcher's answer on its stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InitAnswer {
    Started { pid: i32, start_time: u64 },
    Failed { error: String },
}

/// Asks the helper to remove a directory tree from inside a user namespace
/// with the sandbox's mapping (rootless hosts cannot remove files owned by
/// subordinate ids otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveSpec {
    pub mapping: IdMapping,
    pub path: PathBuf,
}
