//! The `sandbox.v1.*` methods: parameter and result types.
//!
//! Parameters reject unknown members so that a misspelt option (`tll_ms`)
//! fails loudly instead of being silently ignored.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, ErrorKind};
use crate::ids::SandboxId;
use crate::rpc::type_name;

pub const METHOD_PREFIX: &str = "sandbox.v1.";

/// Method names, as sent in `method`.
pub mod methods {
    pub const CREATE: &str = "sandbox.v1.create";
    pub const EXEC: &str = "sandbox.v1.exec";
    pub const RUN: &str = "sandbox.v1.run";
    pub const WRITE_FILE: &str = "sandbox.v1.writeFile";
    pub const READ_FILE: &str = "sandbox.v1.readFile";
    pub const LIST_DIR: &str = "sandbox.v1.listDir";
    pub const DELETE: &str = "sandbox.v1.delete";
    pub const GET: &str = "sandbox.v1.get";
    pub const LIST: &str = "sandbox.v1.list";
    pub const SET_TIMEOUT: &str = "sandbox.v1.setTimeout";
    pub const TEMPLATES: &str = "sandbox.v1.templates";
    pub const MAKE_DIR: &str = "sandbox.v1.makeDir";
    pub const REMOVE: &str = "sandbox.v1.remove";
    pub const STAT: &str = "sandbox.v1.stat";
    pub const RUN_CODE: &str = "sandbox.v1.runCode";
    pub const PAUSE: &str = "sandbox.v1.pause";
    pub const RESUME: &str = "sandbox.v1.resume";
    pub const SNAPSHOT: &str = "sandbox.v1.snapshot";
    pub const LIST_SNAPSHOTS: &str = "sandbox.v1.listSnapshots";
    pub const DELETE_SNAPSHOT: &str = "sandbox.v1.deleteSnapshot";
    pub const FORK: &str = "sandbox.v1.fork";
    pub const CREATE_VOLUME: &str = "sandbox.v1.createVolume";
    pub const LIST_VOLUMES: &str = "sandbox.v1.listVolumes";
    pub const DELETE_VOLUME: &str = "sandbox.v1.deleteVolume";
    pub const STATS: &str = "sandbox.v1.stats";
    pub const POOLS: &str = "sandbox.v1.pools";

    pub const ALL: &[&str] = &[
        CREATE,
        EXEC,
        RUN,
        WRITE_FILE,
        READ_FILE,
        LIST_DIR,
        DELETE,
        GET,
        LIST,
        SET_TIMEOUT,
        TEMPLATES,
        MAKE_DIR,
        REMOVE,
        STAT,
        RUN_CODE,
        PAUSE,
        RESUME,
        SNAPSHOT,
        LIST_SNAPSHOTS,
        DELETE_SNAPSHOT,
        FORK,
        CREATE_VOLUME,
        LIST_VOLUMES,
        DELETE_VOLUME,
        STATS,
        POOLS,
    ];
}

/// Deserializes the `params` of `method`, turning serde's complaint into an
/// `invalid_params` error that names the method and the offending field.
pub fn parse_params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, ApiError> {
    if let Value::Array(_) = params {
        return Err(ApiError::invalid_params(format!(
            "{method} takes named parameters (a JSON object), not an array"
        )));
    }
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ApiError::invalid_params(if path == "." {
            format!("invalid params for {method}: {inner}")
        } else {
            format!("invalid params for {method}: `{path}`: {inner}")
        })
    })
}

/// The lifecycle states a sandbox moves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Creating,
    Running,
    /// Every process frozen; any call resumes it.
    Paused,
    Stopping,
    Deleted,
    Failed,
}

impl SandboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Stopping => "stopping",
            SandboxState::Deleted => "deleted",
            SandboxState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => SandboxState::Creating,
            "running" => SandboxState::Running,
            "paused" => SandboxState::Paused,
            "stopping" => SandboxState::Stopping,
            "deleted" => SandboxState::Deleted,
            "failed" => SandboxState::Failed,
            _ => return None,
        })
    }

    /// True once the sandbox can never run again.
    pub fn is_terminal(self) -> bool {
        matches!(self, SandboxState::Deleted | SandboxState::Failed)
    }
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_template() -> String {
    "base".to_owned()
}

/// `sandbox.v1.create`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    #[serde(default = "default_template")]
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// CPU cores; fractions allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `"none"` (the default), `"egress"`, or an object with a mode, an
    /// allow-list and secret headers (see [`NetworkParam`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkParam>,
    /// Start from this snapshot (its id or name) instead of the template's
    /// empty files; `template` is then the snapshot's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Volumes to mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMountParam>,
    /// Disk limit of the sandbox's own files, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    /// Pause after this long without any call or terminal traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pause_ms: Option<u64>,
    /// At its end time, pause instead of being deleted; a later call
    /// resumes it with a fresh time to live.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_on_expiry: bool,
    /// The isolation backend: `native` (the default), `gvisor`, `runc` or
    /// `crun`, among those the server enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

/// A volume to mount at create time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMountParam {
    /// The volume's name (see `createVolume`).
    pub name: String,
    /// Where it appears in the sandbox: an absolute path, not `/` and not
    /// under `/proc`, `/sys`, `/dev`, `/tmp` or `/run/capsule`.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

// ---- network (see docs/network.md) ----

/// The `network` of `sandbox.v1.create`: a mode name (`"none"`, `"egress"`)
/// or an object with the mode and its settings. Checked by the engine; this
/// type only fixes the shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkParam {
    Mode(String),
    Config(NetworkConfig),
}

impl NetworkParam {
    pub fn mode(&self) -> &str {
        match self {
            NetworkParam::Mode(m) => m,
            NetworkParam::Config(c) => &c.mode,
        }
    }
}

/// `{"mode": "egress", "allow": [...], "secrets": [...]}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub mode: String,
    /// Destinations the sandbox may reach: host names, `*.suffix`
    /// wildcards, IPv4/IPv6 CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Headers the egress proxy adds to requests for a host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretHeaderParam>,
}

/// A header the egress proxy adds to every request for `host`; its value
/// never enters the sandbox.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretHeaderParam {
    pub host: String,
    pub header: String,
    pub value: String,
}

impl fmt::Debug for SecretHeaderParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHeaderParam")
            .field("host", &self.host)
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl Serialize for NetworkParam {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            NetworkParam::Mode(m) => m.serialize(serializer),
            NetworkParam::Config(c) => c.serialize(serializer),
        }
    }
}

// Untagged by hand: serde's `untagged` would answer every mistake inside
// the object with "did not match any variant", losing the field's name.
impl<'de> Deserialize<'de> for NetworkParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NetVisitor;
        impl<'de> Visitor<'de> for NetVisitor {
            type Value = NetworkParam;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "`network` as a mode (\"none\", \"egress\") or an object {\"mode\", \"allow\", \"secrets\"}",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<NetworkParam, E> {
                Ok(NetworkParam::Mode(v.to_owned()))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<NetworkParam, A::Error> {
                NetworkConfig::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(NetworkParam::Config)
            }
        }
        deserializer.deserialize_any(NetVisitor)
    }
}

// ---- end network ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateResult {
    pub id: SandboxId,
    pub template: String,
    pub created_at: String,
    pub expires_at: String,
}

/// A command: an argv array, or a string run by `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSpec {
    Argv(Vec<String>),
    Shell(String),
}

impl CommandSpec {
    /// The argv to execute.
    pub fn to_argv(&self) -> Vec<String> {
        match self {
            CommandSpec::Argv(argv) => argv.clone(),
            CommandSpec::Shell(s) => vec!["/bin/sh".to_owned(), "-c".to_owned(), s.clone()],
        }
    }
}

impl Serialize for CommandSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            CommandSpec::Argv(v) => v.serialize(serializer),
            CommandSpec::Shell(s) => s.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CmdVisitor;
        impl<'de> Visitor<'de> for CmdVisitor {
            type Value = CommandSpec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`cmd` as an array of strings (argv) or a shell command string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<CommandSpec, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("`cmd` is an empty string"));
                }
                if v.contains('\0') {
                    return Err(E::custom("`cmd` contains a NUL byte"));
                }
                Ok(CommandSpec::Shell(v.to_owned()))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<CommandSpec, A::Error> {
                let mut argv = Vec::new();
                while let Some(item) = seq.next_element::<Value>()? {
                    match item {
                        Value::String(s) if s.contains('\0') => {
                            return Err(de::Error::custom(format!(
                                "`cmd[{}]` contains a NUL byte",
                                argv.len()
                            )));
                        }
                        Value::String(s) => argv.push(s),
                        other => {
                            return Err(de::Error::custom(format!(
                                "`cmd[{}]` must be a string, got {}",
                                argv.len(),
                                type_name(&other)
                            )));
                        }
                    }
                }
                match argv.first() {
                    None => Err(de::Error::custom("`cmd` is an empty array")),
                    Some(first) if first.is_empty() => Err(de::Error::custom(
                        "`cmd[0]` (the program) is an empty string",
                    )),
                    Some(_) => Ok(CommandSpec::Argv(argv)),
                }
            }
        }
        deserializer.deserialize_any(CmdVisitor)
    }
}

/// Who a process or file operation runs as inside the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunAs {
    /// The unprivileged sandbox user (uid 1000, home `/home/user`).
    #[default]
    User,
    /// The sandbox's root (still unprivileged on the host).
    Root,
}

impl RunAs {
    pub fn username(self) -> &'static str {
        match self {
            RunAs::User => "user",
            RunAs::Root => "root",
        }
    }
}

/// `sandbox.v1.exec`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    pub id: SandboxId,
    pub cmd: CommandSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<RunAs>,
}

/// `sandbox.v1.run`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    pub id: SandboxId,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

/// `sandbox.v1.runCode`: code in a stateful context (a notebook-style
/// kernel kept between calls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCodeParams {
    pub id: SandboxId,
    pub code: String,
    /// `python` (the default), `javascript` or `bash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// A context made by the E2B code interpreter API; without one, each
    /// language has one default context per sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Environment for this run only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// The error a run of `runCode` raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeError {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

/// The result of `sandbox.v1.runCode`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCodeResult {
    pub stdout: String,
    pub stderr: String,
    /// Displayed values, in order: each has `text` and whichever rich
    /// formats the value offered (`html`, `markdown`, `png` as base64, ...);
    /// the value of the last expression has `is_main_result: true`.
    pub results: Vec<serde_json::Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CodeError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_count: Option<u64>,
    pub timed_out: bool,
    pub duration_ms: u64,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
}

/// The result of `exec` and `run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    /// The exit status; `-1` when the process was ended by a signal (see `signal`).
    pub exit_code: i32,
    /// The signal that ended the process, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// True when stdout passed the output cap and was cut.
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
}

/// A file mode given as an octal string (`"0644"`, `"755"`) or an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct FileMode(pub u32);

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let mode = match &value {
            Value::Number(n) => n.as_u64().and_then(|m| u32::try_from(m).ok()),
            Value::String(s) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    None
                } else {
                    u32::from_str_radix(digits, 8).ok()
                }
            }
            _ => None,
        };
        match mode {
            Some(m) if m <= 0o7777 => Ok(FileMode(m)),
            _ => Err(de::Error::custom(format!(
                "`mode` must be an octal string such as \"0644\" or an integer up to 4095, got {value}"
            ))),
        }
    }
}

/// `sandbox.v1.writeFile`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteFileParams {
    pub id: SandboxId,
    pub path: String,
    /// Base64 (standard alphabet, padding optional).
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<RunAs>,
}

impl WriteFileParams {
    /// Decodes `content`, naming the problem when it is not base64.
    pub fn decode_content(&self) -> Result<Vec<u8>, ApiError> {
        decode_base64(&self.content, "content")
    }
}

/// Decodes base64 from the standard alphabet, padded or not.
pub fn decode_base64(text: &str, field: &str) -> Result<Vec<u8>, ApiError> {
    let trimmed = text.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidParams,
                format!("`{field}` is not valid base64: {e}"),
            )
            .with_detail("field", field)
        })
}

pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteFileResult {
    pub path: String,
    pub size: u64,
}

/// `sandbox.v1.readFile`, `listDir`, `makeDir`, `remove`, `stat`: an id and a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathParams {
    pub id: SandboxId,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<RunAs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadFileResult {
    pub content: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub size: u64,
    /// Permission bits (`0o644` is 420).
    pub mode: u32,
    pub modified_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListDirResult {
    pub entries: Vec<DirEntry>,
}

/// Methods that take no parameters (`templates`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `sandbox.v1.delete`, `get`: just an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdParams {
    pub id: SandboxId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteResult {
    pub deleted: bool,
}

/// What `get` and `list` report about a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: SandboxId,
    pub template: String,
    pub state: SandboxState,
    pub created_at: String,
    pub expires_at: String,
    pub cpu: f64,
    pub memory_mb: u64,
    pub metadata: BTreeMap<String, String>,
    /// The isolation backend it runs on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime: String,
    /// Why the sandbox failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `sandbox.v1.list`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only sandboxes whose metadata holds every one of these pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResult {
    pub sandboxes: Vec<SandboxInfo>,
}

/// `sandbox.v1.setTimeout`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTimeoutParams {
    pub id: SandboxId,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetTimeoutResult {
    pub expires_at: String,
}

/// One entry of `sandbox.v1.templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub name: String,
    pub description: String,
    pub available: bool,
    /// Why the template cannot be served on this host, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How `run` executes code, e.g. `["python3", "-c"]`.
    pub run: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplatesResult {
    pub templates: Vec<TemplateInfo>,
}

/// `sandbox.v1.stat` and `makeDir` answer with one entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryResult {
    pub entry: DirEntry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveResult {
    pub removed: bool,
}

/// `sandbox.v1.pause` / `resume`: the sandbox's state afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseResult {
    pub id: SandboxId,
    pub state: SandboxState,
    pub expires_at: String,
}

/// `sandbox.v1.snapshot`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    pub id: SandboxId,
    /// A name to create sandboxes from it by (unique per tenant).
    #[serde(default)]
    pub name: Option<String>,
}

/// A snapshot: a sandbox's files at one moment, to start new sandboxes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sandbox it was taken of.
    pub source: String,
    pub template: String,
    pub created_at: String,
    /// Bytes of the files it holds beyond the template's.
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListSnapshotsResult {
    pub snapshots: Vec<SnapshotInfo>,
}

/// `sandbox.v1.deleteSnapshot`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRefParams {
    /// The snapshot's id or name.
    pub snapshot: String,
}

/// `sandbox.v1.fork`: `count` new sandboxes whose files start as copies
/// (copy-on-write) of the source's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkParams {
    pub id: SandboxId,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForkResult {
    pub sandboxes: Vec<CreateResult>,
}

/// `sandbox.v1.createVolume`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeParams {
    pub name: String,
    /// Its size limit, in MiB.
    pub size_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub size_bytes: u64,
    pub created_at: String,
    /// Running sandboxes that mount it.
    pub used_by: Vec<SandboxId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListVolumesResult {
    pub volumes: Vec<VolumeInfo>,
}

/// `sandbox.v1.deleteVolume`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeNameParams {
    pub name: String,
}

/// `sandbox.v1.stats`: resource use now; absent where the backend cannot tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResult {
    pub id: SandboxId,
    pub state: SandboxState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_peak_bytes: Option<u64>,
    pub memory_limit_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    pub pids_limit: u64,
    /// Bytes of the sandbox's own files (its writable layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_limit_bytes: Option<u64>,
    /// Network bytes, where the sandbox has a network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_tx_bytes: Option<u64>,
}

/// A warm pool: ready sandboxes of one template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub template: String,
    /// How many it keeps ready.
    pub size: u32,
    /// How many are ready now.
    pub ready: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolsResult {
    pub pools: Vec<PoolInfo>,
}

/// `admin.v1.setPool`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPoolParams {
    pub template: String,
    pub size: u32,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn create_defaults_to_base_and_rejects_typos() {
        let p: CreateParams = parse_params(methods::CREATE, json!({})).unwrap();
        assert_eq!(p.template, "base");
        let err = parse_params::<CreateParams>(methods::CREATE, json!({"tll_ms": 5})).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidParams);
        assert!(err.message.contains("tll_ms"), "{}", err.message);
        let err =
            parse_params::<CreateParams>(methods::CREATE, json!({"ttl_ms": "soon"})).unwrap_err();
        assert!(err.message.contains("invalid type"), "{}", err.message);
        let err = parse_params::<CreateParams>(methods::CREATE, json!(["python"])).unwrap_err();
        assert!(err.message.contains("named parameters"), "{}", err.message);
    }

    #[test]
    fn cmd_accepts_argv_or_string() {
        let p: ExecParams = parse_params(
            methods::EXEC,
            json!({"id":"abc12345","cmd":["python3","-c","print(1)"]}),
        )
        .unwrap();
        assert_eq!(p.cmd.to_argv(), ["python3", "-c", "print(1)"]);
        let p: ExecParams =
            parse_params(methods::EXEC, json!({"id":"abc12345","cmd":"echo hi"})).unwrap();
        assert_eq!(p.cmd.to_argv(), ["/bin/sh", "-c", "echo hi"]);
    }

    #[test]
    fn cmd_rejects_nonsense_with_the_reason() {
        for (cmd, needle) in [
            (json!([]), "empty array"),
            (json!(""), "empty string"),
            (json!([""]), "`cmd[0]`"),
            (json!(["ls", 5]), "`cmd[1]` must be a string"),
            (json!(5), "array of strings"),
            (json!(["a\u{0}b"]), "NUL"),
        ] {
            let err = parse_params::<ExecParams>(methods::EXEC, json!({"id":"abc12345","cmd":cmd}))
                .unwrap_err();
            assert!(err.message.contains(needle), "{cmd}: {}", err.message);
        }
    }

    #[test]
    fn bad_ids_are_invalid_params() {
        let err = parse_params::<IdParams>(methods::GET, json!({"id":"../etc"})).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidParams);
        assert!(
            err.message.contains("invalid sandbox id"),
            "{}",
            err.message
        );
    }

    #[test]
    fn file_modes() {
        for (input, want) in [
            (json!("0644"), 0o644),
            (json!("755"), 0o755),
            (json!(420), 0o644),
            (json!("0o600"), 0o600),
        ] {
            let m: FileMode = serde_json::from_value(input.clone()).unwrap();
            assert_eq!(m.0, want, "{input}");
        }
        for bad in [
            json!("0999"),
            json!("rwx"),
            json!(-1),
            json!(70000),
            json!(""),
            json!(true),
        ] {
            assert!(
                serde_json::from_value::<FileMode>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn base64_errors_name_the_field() {
        assert_eq!(decode_base64("aGk=", "content").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk", "content").unwrap(), b"hi");
        let err = decode_base64("not*base64", "content").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidParams);
        assert!(
            err.message.contains("`content` is not valid base64"),
            "{}",
            err.message
        );
    }

    #[test]
    fn exec_result_serializes_the_seed_fields() {
        let r = ExecResult {
            stdout: "hello\n".into(),
            stderr: String::new(),
            exit_code: 0,
            signal: None,
            timed_out: false,
            duration_ms: 45,
            stdout_truncated: false,
            stderr_truncated: false,
        };
        let v = serde_json::to_value(&r).unwrap();
        for key in ["stdout", "stderr", "exit_code", "timed_out", "duration_ms"] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(v.get("signal").is_none());
    }

    #[test]
    fn network_is_a_mode_or_an_object_and_names_typos() {
        let p: CreateParams = parse_params(methods::CREATE, json!({"network": "none"})).unwrap();
        assert_eq!(p.network, Some(NetworkParam::Mode("none".into())));
        let p: CreateParams = parse_params(
            methods::CREATE,
            json!({"network": {"mode": "egress", "allow": ["a.example"],
                   "secrets": [{"host": "a.example", "header": "Authorization", "value": "Bearer x"}]}}),
        )
        .unwrap();
        let Some(NetworkParam::Config(c)) = &p.network else {
            panic!("{p:?}")
        };
        assert_eq!(c.allow, ["a.example"]);
        assert!(
            !format!("{p:?}").contains("Bearer x"),
            "Debug shows the secret"
        );
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["network"]["secrets"][0]["value"], "Bearer x");
        let err = parse_params::<CreateParams>(
            methods::CREATE,
            json!({"network": {"mode": "egress", "alow": []}}),
        )
        .unwrap_err();
        assert!(err.message.contains("alow"), "{}", err.message);
        let err = parse_params::<CreateParams>(methods::CREATE, json!({"network": 5})).unwrap_err();
        assert!(err.message.contains("`network`"), "{}", err.message);
    }
}
