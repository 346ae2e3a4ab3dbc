//! The MCP handler: tools, resources and prompts over a [`Backend`].
//!
//! Each MCP session has an owner (the caller's API key, and optionally a
//! user and a group named by `X-Capsule-User` / `X-Capsule-Group`, or by
//! `capsule mcp --user/--group`). Sandboxes made through MCP record their
//! owner in metadata (`mcp.owner`, `mcp.group`); a session sees only its
//! owner's sandboxes and its group's, and gets `sandbox_not_found` for any
//! other. A session's default sandbox is made on first use and deleted when
//! the session ends.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use capsule_api::sandbox::{
    CreateResult, DirEntry, EntryType, ExecResult, ListDirResult, ListResult, ReadFileResult,
    RunCodeResult, SandboxInfo, TemplatesResult, methods,
};
use capsule_api::{ApiError, ErrorKind, SandboxId};
use rmcp::handler::server::common::schema_for_output;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, GetPromptRequestParams, GetPromptResponse, GetPromptResult,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptArgument, PromptMessage,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig,
};
use rmcp::schemars::JsonSchema;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Backend;
use crate::auth::presented_key;
use capsule_engine::Principal;

/// Text fields longer than this are cut, with a note saying how to get the rest.
const TEXT_LIMIT: usize = 32 * 1024;
/// The largest file `download` returns.
const DOWNLOAD_LIMIT: u64 = 8 << 20;
/// Life of a session's default sandbox, renewed while it is used.
const DEFAULT_TTL_MS: u64 = 30 * 60 * 1000;
/// How often using the default sandbox renews its life.
const RENEW_EVERY: Duration = Duration::from_secs(5 * 60);
/// Files listed as resources, at most.
const MAX_RESOURCES: usize = 200;
/// Directory levels below /workspace listed as resources.
const RESOURCE_DEPTH: usize = 3;

const OWNER_KEY: &str = "mcp.owner";
const GROUP_KEY: &str = "mcp.group";
const EPHEMERAL_KEY: &str = "mcp.ephemeral";

const INSTRUCTIONS: &str = "Capsule gives you disposable, isolated Linux sandboxes to run code in. \
Every tool that takes `sandbox_id` works without one: it then uses this session's default sandbox, \
created on first use (Python, JavaScript and bash available) and deleted when the session ends. \
Use `run_code` for Python/JavaScript/bash whose variables should persist between calls, `exec` for \
shell commands, `write_file`/`read_file`/`list_dir` for text files and `upload`/`download` for binary \
ones (base64). Files live under /workspace (the working directory). Sandboxes have no network access.";

/// Who a session acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    owner: String,
    group: Option<String>,
    /// Who the engine sees: the tenant and role of the key.
    principal: Principal,
}

impl Caller {
    /// The caller with `api_key` (none on an open server), and optionally a
    /// user and a group within it. Sandboxes are shared by the same owner
    /// (key and user) and by members of the same group (key and group).
    pub fn new(api_key: Option<&str>, user: Option<&str>, group: Option<&str>) -> Caller {
        let tenant = match api_key.filter(|k| !k.is_empty()) {
            Some(k) => {
                let digest = Sha256::digest(k.as_bytes());
                digest[..8].iter().map(|b| format!("{b:02x}")).collect()
            }
            None => "open".to_owned(),
        };
        let clean = |s: Option<&str>| {
            s.map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Caller {
            owner: format!("{tenant}/{}", clean(user).unwrap_or_else(|| "-".into())),
            group: clean(group).map(|g| format!("{tenant}/{g}")),
            principal: Principal::operator(),
        }
    }

    /// The same caller, as `principal` to the engine.
    pub fn acting_as(mut self, principal: Principal) -> Caller {
        self.principal = principal;
        self
    }

    fn sees(&self, metadata: &BTreeMap<String, String>) -> bool {
        metadata.get(OWNER_KEY) == Some(&self.owner)
            || self
                .group
                .as_ref()
                .is_some_and(|g| metadata.get(GROUP_KEY) == Some(g))
    }
}

/// A tool failure, reported in-band with the JSON-RPC API's error kind.
struct ToolError {
    kind: &'static str,
    message: String,
    data: Option<Value>,
}

impl From<ApiError> for ToolError {
    fn from(e: ApiError) -> Self {
        ToolError {
            kind: e.kind.as_str(),
            message: e.message,
            data: e.details.map(|d| Value::Object(*d)),
        }
    }
}

impl ToolError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError::new(kind, message).into()
    }

    /// An error result: `{"error": {"kind", "message", "data"}}` as text.
    /// Not as structured content, which clients check against the tool's
    /// output schema (that of a success).
    fn result(self) -> CallToolResult {
        let mut error = json!({"kind": self.kind, "message": self.message});
        if let Some(data) = self.data {
            error["data"] = data;
        }
        CallToolResult::error(vec![ContentBlock::text(
            json!({ "error": error }).to_string(),
        )])
    }
}

type ToolResult = Result<CallToolResult, ToolError>;

fn finish(r: ToolResult) -> CallToolResult {
    r.unwrap_or_else(ToolError::result)
}

fn structured<T: Serialize>(value: &T) -> CallToolResult {
    CallToolResult::structured(serde_json::to_value(value).expect("tool outputs serialize"))
}

fn decode<T: DeserializeOwned>(v: Value) -> Result<T, ToolError> {
    serde_json::from_value(v).map_err(|e| {
        ToolError::new(
            ErrorKind::Internal,
            format!("unexpected answer from the server: {e}"),
        )
    })
}

/// Cuts `text` to `TEXT_LIMIT` bytes (on a character boundary).
fn clip(text: String, what: &str) -> (String, bool) {
    if text.len() <= TEXT_LIMIT {
        return (text, false);
    }
    let mut end = TEXT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let rest = text.len() - end;
    let mut out = text[..end].to_owned();
    out.push_str(&format!(
        "\n[{what} truncated: {rest} more bytes. Write it to a file and read parts with `exec` (head, tail, grep).]"
    ));
    (out, true)
}

struct DefaultSandbox {
    id: SandboxId,
    /// Made by this session for itself: deleted when the session ends.
    ephemeral: bool,
    renewed: Instant,
}

/// The state of one MCP session.
pub struct Session {
    backend: Arc<dyn Backend>,
    /// The caller, when the transport fixes it (stdio).
    fixed: Option<Caller>,
    /// The first caller seen over HTTP; later requests must match it.
    bound: Mutex<Option<Caller>>,
    default: tokio::sync::Mutex<Option<DefaultSandbox>>,
}

impl Session {
    /// Deletes the default sandbox if this session made it. Idempotent, and
    /// a second call returns only once the first has finished: a stdio
    /// session ends both when its handler is dropped (a spawned task) and
    /// explicitly before the process exits, and the process must not exit
    /// while the delete is still on its way.
    pub async fn end(&self) {
        let mut slot = self.default.lock().await;
        let taken = slot.take();
        let principal = self
            .fixed
            .clone()
            .or_else(|| self.bound.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .map(|c| c.principal)
            .unwrap_or_else(Principal::operator);
        if let Some(d) = taken.filter(|d| d.ephemeral) {
            match self
                .backend
                .call(&principal, methods::DELETE, json!({"id": d.id}))
                .await
            {
                Ok(_) => {
                    tracing::info!(sandbox = %d.id, "MCP session ended; its default sandbox was deleted")
                }
                Err(e)
                    if matches!(
                        e.kind,
                        ErrorKind::SandboxNotFound | ErrorKind::SandboxExpired
                    ) => {}
                Err(e) => {
                    tracing::warn!(sandbox = %d.id, "deleting an MCP session's sandbox failed: {}", e.message)
                }
            }
        }
        drop(slot);
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, ToolError> {
        if let Some(c) = &self.fixed {
            return Ok(c.clone());
        }
        let parts = ctx.extensions.get::<http::request::Parts>();
        let header = |name: &str| {
            parts
                .and_then(|p| p.headers.get(name))
                .and_then(|v| v.to_str().ok())
        };
        let key = parts.and_then(|p| presented_key(&p.headers));
        let principal = parts
            .and_then(|p| p.extensions.get::<Principal>())
            .cloned()
            .unwrap_or_else(Principal::operator);
        let caller = Caller::new(key, header("x-capsule-user"), header("x-capsule-group"))
            .acting_as(principal);
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        match &*bound {
            Some(b) if *b != caller => Err(ToolError::new(
                ErrorKind::Unauthorized,
                "this MCP session belongs to another identity (API key, user or group); start a new session",
            )),
            Some(_) => Ok(caller),
            None => {
                *bound = Some(caller.clone());
                Ok(caller)
            }
        }
    }

    async fn call(&self, caller: &Caller, method: &str, params: Value) -> Result<Value, ToolError> {
        Ok(self.backend.call(&caller.principal, method, params).await?)
    }

    /// The sandbox info of `id`, if the caller may see it.
    async fn visible(&self, caller: &Caller, id: &str) -> Result<SandboxInfo, ToolError> {
        let parsed: SandboxId = id
            .parse()
            .map_err(|e: capsule_api::ids::InvalidSandboxId| {
                ToolError::new(ErrorKind::InvalidParams, e.to_string())
            })?;
        let info: SandboxInfo = decode(
            self.call(caller, methods::GET, json!({"id": parsed}))
                .await?,
        )?;
        if !caller.sees(&info.metadata) {
            return Err(ApiError::sandbox_not_found(parsed).into());
        }
        Ok(info)
    }

    /// The sandbox a tool works on: the one named, or the session's default.
    async fn sandbox(&self, caller: &Caller, named: Option<&str>) -> Result<SandboxId, ToolError> {
        if let Some(id) = named.filter(|s| !s.is_empty()) {
            return Ok(self.visible(caller, id).await?.id);
        }
        let mut slot = self.default.lock().await;
        if let Some(d) = slot.as_mut() {
            if d.renewed.elapsed() >= RENEW_EVERY {
                d.renewed = Instant::now();
                if d.ephemeral {
                    // Best effort: an error here shows up on the tool's own call.
                    let _ = self
                        .call(
                            caller,
                            methods::SET_TIMEOUT,
                            json!({"id": d.id, "ttl_ms": DEFAULT_TTL_MS}),
                        )
                        .await;
                }
            }
            return Ok(d.id);
        }
        let id = self.create(caller, None, json!({}), true).await?.id;
        *slot = Some(DefaultSandbox {
            id,
            ephemeral: true,
            renewed: Instant::now(),
        });
        Ok(id)
    }

    /// Creates a sandbox owned by `caller`. `params` carries the caller's
    /// options; the template defaults to the richest available one.
    async fn create(
        &self,
        caller: &Caller,
        template: Option<String>,
        mut params: Value,
        ephemeral: bool,
    ) -> Result<CreateResult, ToolError> {
        let template = match template.filter(|t| !t.is_empty()) {
            Some(t) => t,
            None => {
                let listed: TemplatesResult =
                    decode(self.call(caller, methods::TEMPLATES, json!({})).await?)?;
                ["code-interpreter-v1", "python", "base"]
                    .into_iter()
                    .find(|name| {
                        listed
                            .templates
                            .iter()
                            .any(|t| t.name == *name && t.available)
                    })
                    .unwrap_or("base")
                    .to_owned()
            }
        };
        params["template"] = json!(template);
        let metadata = params["metadata"]
            .as_object_mut()
            .cloned()
            .unwrap_or_default();
        if let Some(k) = metadata.keys().find(|k| k.starts_with("mcp.")) {
            return Err(ToolError::new(
                ErrorKind::InvalidParams,
                format!(
                    "metadata key {k:?} is reserved (keys starting with \"mcp.\" are Capsule's)"
                ),
            ));
        }
        let mut metadata = metadata;
        metadata.insert(OWNER_KEY.into(), json!(caller.owner));
        if let Some(g) = &caller.group {
            metadata.insert(GROUP_KEY.into(), json!(g));
        }
        if ephemeral {
            metadata.insert(EPHEMERAL_KEY.into(), json!("1"));
            if params.get("ttl_ms").is_none() {
                params["ttl_ms"] = json!(DEFAULT_TTL_MS);
            }
        }
        params["metadata"] = Value::Object(metadata);
        let created = self.call(caller, methods::CREATE, params.clone()).await;
        let created = match created {
            // A server whose longest life is shorter: take its default.
            Err(e) if ephemeral && e.kind == "invalid_params" && e.message.contains("ttl_ms") => {
                if let Some(o) = params.as_object_mut() {
                    o.remove("ttl_ms");
                }
                self.call(caller, methods::CREATE, params).await?
            }
            other => other?,
        };
        decode(created)
    }

    fn is_default(&self, id: SandboxId) -> bool {
        self.default
            .try_lock()
            .map(|d| d.as_ref().is_some_and(|d| d.id == id))
            .unwrap_or(false)
    }
}

/// Runs `work` while telling the client it is still going (when it asked
/// for progress) and stopping if it cancels.
async fn with_progress<T>(
    ctx: &RequestContext<RoleServer>,
    what: &str,
    work: impl Future<Output = T>,
) -> Result<T, ToolError> {
    let token = ctx.meta.get_progress_token();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return Ok(out),
            _ = ctx.ct.cancelled() => {
                return Err(ToolError::new(ErrorKind::Timeout, format!("{what} was cancelled by the client")));
            }
            _ = tick.tick(), if token.is_some() => {
                let secs = started.elapsed().as_secs();
                let note = ProgressNotificationParam::new(token.clone().expect("checked"), secs as f64)
                    .with_message(format!("{what}: running for {secs} s"));
                let _ = ctx.peer.notify_progress(note).await;
            }
        }
    }
}

// --- tool parameters and outputs ------------------------------------------------------

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct CreateArgs {
    /// Template to start from: `code-interpreter-v1` (Python, JavaScript, bash; the default when
    /// available), `python`, `node`, `base` or `go`.
    #[serde(default)]
    pub template: Option<String>,
    /// Time to live in milliseconds; the sandbox is deleted when it passes (default: the server's).
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// CPU cores (fractions allowed, e.g. 0.5).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory limit in MiB.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Environment variables every process in the sandbox gets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Labels to find the sandbox by later.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Make it this session's default sandbox (used when a tool gets no `sandbox_id`).
    #[serde(default)]
    pub make_default: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxView {
    pub sandbox_id: String,
    pub template: String,
    pub state: String,
    pub created_at: String,
    /// When the sandbox is deleted unless its time to live is extended.
    pub expires_at: String,
    pub cpu: f64,
    pub memory_mb: u64,
    pub metadata: BTreeMap<String, String>,
    /// This session's default sandbox.
    pub is_default: bool,
}

fn view(info: SandboxInfo, is_default: bool) -> SandboxView {
    SandboxView {
        sandbox_id: info.id.to_string(),
        template: info.template,
        state: info.state.as_str().to_owned(),
        created_at: info.created_at,
        expires_at: info.expires_at,
        cpu: info.cpu,
        memory_mb: info.memory_mb,
        metadata: info
            .metadata
            .into_iter()
            .filter(|(k, _)| !k.starts_with("mcp."))
            .collect(),
        is_default,
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxView>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct SandboxArg {
    /// The sandbox (default: this session's default sandbox).
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct DeleteArgs {
    /// The sandbox to delete.
    pub sandbox_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Deleted {
    pub sandbox_id: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Python,
    Javascript,
    Bash,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCodeArgs {
    /// The code. The value of the last expression is returned as the result.
    pub code: String,
    /// `python` (default), `javascript` or `bash`. State (variables, imports, functions, the
    /// working directory) persists between calls of the same language in the same sandbox.
    #[serde(default)]
    pub language: Language,
    /// The sandbox (default: this session's default sandbox).
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// How long the code may run, in milliseconds (default 30000); then it is interrupted,
    /// keeping the state.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CodeResultView {
    /// Plain-text form of the value.
    pub text: Option<String>,
    /// The rich formats the value offered (png images are attached to the answer).
    pub formats: Vec<String>,
    /// The value of the last expression (as opposed to one displayed on the way).
    pub is_main_result: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CodeErrorView {
    pub name: String,
    pub value: String,
    pub traceback: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunCodeView {
    pub sandbox_id: String,
    pub stdout: String,
    pub stderr: String,
    pub results: Vec<CodeResultView>,
    /// The exception the code raised, if any.
    pub error: Option<CodeErrorView>,
    pub timed_out: bool,
    /// Some output was cut (see the note at its end).
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecArgs {
    /// A shell command line (run with `sh -c`), e.g. `ls -la /workspace | head`.
    pub command: String,
    /// The sandbox (default: this session's default sandbox).
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// Working directory (default /workspace).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long the command may run, in milliseconds (default 30000, at most 3600000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Text for the command's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Run as the sandbox's root instead of the unprivileged `user` (still no host privileges).
    #[serde(default)]
    pub as_root: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecView {
    pub sandbox_id: String,
    pub stdout: String,
    pub stderr: String,
    /// The exit status; -1 when a signal ended the command.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PathArgs {
    /// The file; relative paths are under /workspace.
    pub path: String,
    /// The sandbox (default: this session's default sandbox).
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FileText {
    pub sandbox_id: String,
    pub path: String,
    pub size: u64,
    pub content: String,
    pub truncated: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteArgs {
    /// The file; relative paths are under /workspace. Missing directories are created.
    pub path: String,
    /// The text to write (the file is replaced).
    pub content: String,
    /// The sandbox (default: this session's default sandbox).
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// Permissions as an octal string, e.g. "0755" for a script.
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UploadArgs {
    /// The file; relative paths are under /workspace. Missing directories are created.
    pub path: String,
    /// The file's bytes, base64-encoded.
    pub content_base64: String,
    /// The sandbox (default: this session's default sandbox).
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// Permissions as an octal string, e.g. "0755".
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Written {
    pub sandbox_id: String,
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Downloaded {
    pub sandbox_id: String,
    pub path: String,
    pub size: u64,
    pub content_base64: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// The directory (default /workspace).
    #[serde(default)]
    pub path: Option<String>,
    /// The sandbox (default: this session's default sandbox).
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EntryView {
    pub name: String,
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub modified_at: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Listing {
    pub sandbox_id: String,
    pub path: String,
    pub entries: Vec<EntryView>,
}

fn entry_view(e: DirEntry) -> EntryView {
    let kind = serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    EntryView {
        name: e.name,
        path: e.path,
        kind,
        size: e.size,
        modified_at: e.modified_at,
    }
}

// --- the handler ----------------------------------------------------------------------

/// One MCP session's handler.
pub struct CapsuleMcp {
    session: Arc<Session>,
    tool_router: ToolRouter<Self>,
}

impl Drop for CapsuleMcp {
    fn drop(&mut self) {
        let session = self.session.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { session.end().await });
        }
    }
}

impl CapsuleMcp {
    pub fn new(backend: Arc<dyn Backend>, fixed: Option<Caller>) -> Self {
        Self {
            session: Arc::new(Session {
                backend,
                fixed,
                bound: Mutex::new(None),
                default: tokio::sync::Mutex::new(None),
            }),
            tool_router: Self::tool_router(),
        }
    }

    /// The session state (to end it explicitly).
    pub fn session(&self) -> Arc<Session> {
        self.session.clone()
    }

    async fn read_bytes(
        &self,
        caller: &Caller,
        id: SandboxId,
        path: &str,
    ) -> Result<Vec<u8>, ToolError> {
        let r: ReadFileResult = decode(
            self.session
                .call(caller, methods::READ_FILE, json!({"id": id, "path": path}))
                .await?,
        )?;
        base64::engine::general_purpose::STANDARD
            .decode(r.content)
            .map_err(|e| {
                ToolError::new(
                    ErrorKind::Internal,
                    format!("bad base64 from the server: {e}"),
                )
            })
    }

    async fn stat_size(
        &self,
        caller: &Caller,
        id: SandboxId,
        path: &str,
    ) -> Result<(String, u64), ToolError> {
        let r = self
            .session
            .call(caller, methods::STAT, json!({"id": id, "path": path}))
            .await?;
        let entry = &r["entry"];
        if entry["type"] == "dir" {
            return Err(ToolError::new(
                ErrorKind::IsADirectory,
                format!("{path} is a directory; use list_dir"),
            ));
        }
        Ok((
            entry["path"].as_str().unwrap_or(path).to_owned(),
            entry["size"].as_u64().unwrap_or(0),
        ))
    }

    async fn write(
        &self,
        caller: &Caller,
        id: SandboxId,
        path: &str,
        bytes: &[u8],
        mode: Option<String>,
    ) -> ToolResult {
        let mut params = json!({
            "id": id,
            "path": path,
            "content": base64::engine::general_purpose::STANDARD.encode(bytes),
        });
        if let Some(m) = mode {
            params["mode"] = json!(m);
        }
        let r = self
            .session
            .call(caller, methods::WRITE_FILE, params)
            .await?;
        Ok(structured(&Written {
            sandbox_id: id.to_string(),
            path: r["path"].as_str().unwrap_or(path).to_owned(),
            size: bytes.len() as u64,
        }))
    }
}

#[tool_router]
impl CapsuleMcp {
    /// Create a new sandbox: a disposable, isolated Linux machine. Usually not needed: every
    /// tool uses this session's default sandbox when given no `sandbox_id`. Create one for
    /// another template, other limits, or to work in several sandboxes at once. It lives
    /// until its time to live passes or `delete_sandbox`.
    #[tool(output_schema = schema_for_output::<SandboxView>())]
    async fn create_sandbox(
        &self,
        Parameters(a): Parameters<CreateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let mut params = json!({"env": a.env, "metadata": a.metadata});
                if let Some(t) = a.ttl_ms {
                    params["ttl_ms"] = json!(t);
                }
                if let Some(c) = a.cpu {
                    params["cpu"] = json!(c);
                }
                if let Some(m) = a.memory_mb {
                    params["memory_mb"] = json!(m);
                }
                let created = self
                    .session
                    .create(&caller, a.template, params, false)
                    .await?;
                if a.make_default {
                    *self.session.default.lock().await = Some(DefaultSandbox {
                        id: created.id,
                        ephemeral: false,
                        renewed: Instant::now(),
                    });
                }
                let info = self.session.visible(&caller, created.id.as_str()).await?;
                let is_default = self.session.is_default(info.id);
                Ok(structured(&view(info, is_default)))
            }
            .await,
        )
    }

    /// List the sandboxes this session may use (its own, and its group's).
    #[tool(output_schema = schema_for_output::<SandboxList>())]
    async fn list_sandboxes(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let all: ListResult =
                    decode(self.session.call(&caller, methods::LIST, json!({})).await?)?;
                let sandboxes = all
                    .sandboxes
                    .into_iter()
                    .filter(|s| caller.sees(&s.metadata))
                    .map(|s| {
                        let d = self.session.is_default(s.id);
                        view(s, d)
                    })
                    .collect();
                Ok(structured(&SandboxList { sandboxes }))
            }
            .await,
        )
    }

    /// Describe a sandbox: template, state, limits, and when it expires.
    #[tool(output_schema = schema_for_output::<SandboxView>())]
    async fn get_sandbox(
        &self,
        Parameters(a): Parameters<SandboxArg>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let id = self
                    .session
                    .sandbox(&caller, a.sandbox_id.as_deref())
                    .await?;
                let info = self.session.visible(&caller, id.as_str()).await?;
                Ok(structured(&view(info, self.session.is_default(id))))
            }
            .await,
        )
    }

    /// Delete a sandbox and everything in it, now.
    #[tool(output_schema = schema_for_output::<Deleted>())]
    async fn delete_sandbox(
        &self,
        Parameters(a): Parameters<DeleteArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let info = self.session.visible(&caller, &a.sandbox_id).await?;
                self.session
                    .call(&caller, methods::DELETE, json!({"id": info.id}))
                    .await?;
                let mut slot = self.session.default.lock().await;
                if slot.as_ref().is_some_and(|d| d.id == info.id) {
                    *slot = None;
                }
                Ok(structured(&Deleted {
                    sandbox_id: info.id.to_string(),
                    deleted: true,
                }))
            }
            .await,
        )
    }

    /// Run Python, JavaScript or bash code in a notebook-style kernel. Variables, imports and
    /// functions persist between calls, so build up work step by step. Returns printed output,
    /// the value of the last expression, and the exception if one was raised. Charts made with
    /// matplotlib come back as images.
    #[tool(output_schema = schema_for_output::<RunCodeView>())]
    async fn run_code(
        &self,
        Parameters(a): Parameters<RunCodeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let id = self
                    .session
                    .sandbox(&caller, a.sandbox_id.as_deref())
                    .await?;
                let language = match a.language {
                    Language::Python => "python",
                    Language::Javascript => "javascript",
                    Language::Bash => "bash",
                };
                let mut params = json!({"id": id, "code": a.code, "language": language});
                if let Some(t) = a.timeout_ms {
                    params["timeout_ms"] = json!(t);
                }
                let r: RunCodeResult = decode(
                    with_progress(
                        &ctx,
                        "the code",
                        self.session.call(&caller, methods::RUN_CODE, params),
                    )
                    .await??,
                )?;
                let (stdout, cut_out) = clip(r.stdout, "stdout");
                let (stderr, cut_err) = clip(r.stderr, "stderr");
                let mut images = Vec::new();
                let results = r
                    .results
                    .into_iter()
                    .map(|m| {
                        for (key, mime) in [("png", "image/png"), ("jpeg", "image/jpeg")] {
                            if let Some(data) = m.get(key).and_then(Value::as_str) {
                                images.push(ContentBlock::image(data.to_owned(), mime));
                            }
                        }
                        CodeResultView {
                            text: m
                                .get("text")
                                .and_then(Value::as_str)
                                .map(|t| clip(t.to_owned(), "text").0),
                            formats: m
                                .keys()
                                .filter(|k| {
                                    !matches!(k.as_str(), "text" | "is_main_result" | "extra")
                                })
                                .cloned()
                                .collect(),
                            is_main_result: m
                                .get("is_main_result")
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                        }
                    })
                    .collect();
                let mut out = structured(&RunCodeView {
                    sandbox_id: id.to_string(),
                    stdout,
                    stderr,
                    results,
                    error: r.error.map(|e| CodeErrorView {
                        name: e.name,
                        value: e.value,
                        traceback: clip(e.traceback, "traceback").0,
                    }),
                    timed_out: r.timed_out,
                    truncated: cut_out || cut_err || r.stdout_truncated || r.stderr_truncated,
                });
                out.content.extend(images);
                Ok(out)
            }
            .await,
        )
    }

    /// Run a shell command in a sandbox and wait for it: stdout, stderr, exit code. For
    /// long-running work, raise `timeout_ms`; the client gets progress notifications while
    /// it runs. Output past 32 KiB is cut with a note.
    #[tool(output_schema = schema_for_output::<ExecView>())]
    async fn exec(
        &self,
        Parameters(a): Parameters<ExecArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let id = self
                    .session
                    .sandbox(&caller, a.sandbox_id.as_deref())
                    .await?;
                let mut params = json!({"id": id, "cmd": a.command, "env": a.env});
                if let Some(c) = a.cwd {
                    params["cwd"] = json!(c);
                }
                if let Some(t) = a.timeout_ms {
                    params["timeout_ms"] = json!(t);
                }
                if let Some(s) = a.stdin {
                    params["stdin"] = json!(s);
                }
                if a.as_root {
                    params["user"] = json!("root");
                }
                let r: ExecResult = decode(
                    with_progress(
                        &ctx,
                        "the command",
                        self.session.call(&caller, methods::EXEC, params),
                    )
                    .await??,
                )?;
                let (stdout, cut_out) = clip(r.stdout, "stdout");
                let (stderr, cut_err) = clip(r.stderr, "stderr");
                Ok(structured(&ExecView {
                    sandbox_id: id.to_string(),
                    stdout,
                    stderr,
                    exit_code: r.exit_code,
                    signal: r.signal,
                    timed_out: r.timed_out,
                    duration_ms: r.duration_ms,
                    truncated: cut_out || cut_err || r.stdout_truncated || r.stderr_truncated,
                }))
            }
            .await,
        )
    }

    /// Read a text file from a sandbox (UTF-8). Use `download` for binary files.
    #[tool(output_schema = schema_for_output::<FileText>())]
    async fn read_file(
        &self,
        Parameters(a): Parameters<PathArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let id = self
                    .session
                    .sandbox(&caller, a.sandbox_id.as_deref())
                    .await?;
                let bytes = self.read_bytes(&caller, id, &a.path).await?;
                let size = bytes.len() as u64;
                let text = String::from_utf8(bytes).map_err(|_| {
                    ToolError::new(
                        ErrorKind::InvalidParams,
                        format!(
                            "{} is not UTF-8 text ({size} bytes); use download for binary files",
                            a.path
                        ),
                    )
                })?;
                let (content, truncated) = clip(text, "content");
                Ok(structured(&FileText {
                    sandbox_id: id.to_string(),
                    path: a.path,
                    size,
                    content,
                    truncated,
                }))
            }
            .await,
        )
    }

    /// Write a text file in a sandbox, replacing it if it exists; missing directories are made.
    #[tool(output_schema = schema_for_output::<Written>())]
    async fn write_file(
        &self,
        Parameters(a): Parameters<WriteArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let id = self
                    .session
                    .sandbox(&caller, a.sandbox_id.as_deref())
                    .await?;
                self.write(&caller, id, &a.path, a.content.as_bytes(), a.mode)
                    .await
            }
            .await,
        )
    }

    /// List a directory of a sandbox (default /workspace).
    #[tool(output_schema = schema_for_output::<Listing>())]
    async fn list_dir(
        &self,
        Parameters(a): Parameters<ListArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let id = self
                    .session
                    .sandbox(&caller, a.sandbox_id.as_deref())
                    .await?;
                let path = a.path.unwrap_or_else(|| "/workspace".to_owned());
                let r: ListDirResult = decode(
                    self.session
                        .call(&caller, methods::LIST_DIR, json!({"id": id, "path": path}))
                        .await?,
                )?;
                Ok(structured(&Listing {
                    sandbox_id: id.to_string(),
                    path,
                    entries: r.entries.into_iter().map(entry_view).collect(),
                }))
            }
            .await,
        )
    }

    /// Put a binary file (base64) into a sandbox, replacing it if it exists.
    #[tool(output_schema = schema_for_output::<Written>())]
    async fn upload(
        &self,
        Parameters(a): Parameters<UploadArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(
            async {
                let caller = self.session.caller(&ctx)?;
                let id = self
                    .session
                    .sandbox(&caller, a.sandbox_id.as_deref())
                    .await?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(a.content_base64.trim())
                    .map_err(|e| {
                        ToolError::new(
                            ErrorKind::InvalidParams,
                            format!("content_base64 is not valid base64: {e}"),
                        )
                    })?;
                self.write(&caller, id, &a.path, &bytes, a.mode).await
            }
            .await,
        )
    }

    /// Get a file (any content) out of a sandbox, base64-encoded; at most 8 MiB.
    #[tool(output_schema = schema_for_output::<Downloaded>())]
    async fn download(
        &self,
        Parameters(a): Parameters<PathArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        finish(async {
            let caller = self.session.caller(&ctx)?;
            let id = self.session.sandbox(&caller, a.sandbox_id.as_deref()).await?;
            let (path, size) = self.stat_size(&caller, id, &a.path).await?;
            if size > DOWNLOAD_LIMIT {
                return Err(ToolError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("{path} is {size} bytes; download returns at most {DOWNLOAD_LIMIT}. Split or compress it first (e.g. with exec)"),
                ));
            }
            let bytes = self.read_bytes(&caller, id, &path).await?;
            Ok(structured(&Downloaded {
                sandbox_id: id.to_string(),
                path,
                size: bytes.len() as u64,
                content_base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
            }))
        }
        .await)
    }
}

/// `capsule://<sandbox id>/<path>` into its parts.
fn parse_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("capsule://")?;
    let (id, path) = rest.split_once('/')?;
    let mut decoded = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Some(b) = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            decoded.push(b);
            i += 3;
            continue;
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    Some((
        id.to_owned(),
        format!("/{}", String::from_utf8(decoded).ok()?),
    ))
}

fn mime_of(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "py" => "text/x-python",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        "txt" | "log" | "sh" | "toml" | "yaml" | "yml" | "ini" | "cfg" => "text/plain",
        _ => "application/octet-stream",
    }
}

const WORKFLOW_PROMPT: &str = "You have a Capsule sandbox: an isolated Linux machine for running code. \
Work in small steps and check each result before moving on:\n\
1. Put inputs in place with write_file (text) or upload (binary, base64); they go under /workspace.\n\
2. Use run_code for Python analysis: variables persist between calls, so load data once and reuse it. \
The value of the last line comes back as the result; print() output comes back as stdout.\n\
3. Use exec for shell commands (installing nothing: there is no network; use what is there).\n\
4. When output is long, write it to a file and inspect parts of it with exec (head, tail, grep).\n\
5. Read results with read_file, or download for binary files.\n\
If a call fails, read the error's kind and message: they say what to change.";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CapsuleMcp {
    /// Versions with sessions only: a session owns its default sandbox,
    /// and 2026-07-28 has no sessions (every request would get a new one).
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        std::borrow::Cow::Borrowed(ProtocolVersion::known_up_to(
            &ProtocolVersion::LATEST_WITH_INITIALIZE,
        ))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new("capsule", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let caller = self
            .session
            .caller(&ctx)
            .map_err(|e| McpError::invalid_request(e.message, None))?;
        let all: ListResult = self
            .session
            .call(&caller, methods::LIST, json!({}))
            .await
            .and_then(decode)
            .map_err(|e| McpError::internal_error(e.message, None))?;
        let mut resources = Vec::new();
        for s in all
            .sandboxes
            .into_iter()
            .filter(|s| caller.sees(&s.metadata))
        {
            // The files under /workspace, a few levels deep.
            let mut dirs = vec![("/workspace".to_owned(), 0)];
            while let Some((dir, depth)) = dirs.pop() {
                let Ok(listing) = self
                    .session
                    .call(&caller, methods::LIST_DIR, json!({"id": s.id, "path": dir}))
                    .await
                    .and_then(decode::<ListDirResult>)
                else {
                    continue;
                };
                for e in listing.entries {
                    match e.kind {
                        EntryType::Dir if depth < RESOURCE_DEPTH => dirs.push((e.path, depth + 1)),
                        EntryType::File if resources.len() < MAX_RESOURCES => {
                            let uri = format!("capsule://{}{}", s.id, e.path);
                            resources.push(
                                Resource::new(uri, format!("{} ({})", e.path, s.id))
                                    .with_mime_type(mime_of(&e.path))
                                    .with_size(e.size),
                            );
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("capsule://{sandbox_id}/{path}", "A file in a sandbox")
                .with_description("Any file of a sandbox this session may use, by absolute path, e.g. capsule://abcd1234/workspace/out.csv"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.clone();
        let Some((id, path)) = parse_uri(&uri) else {
            return Err(McpError::resource_not_found(
                format!("{uri} is not a capsule://<sandbox id>/<path> URI"),
                None,
            ));
        };
        let caller = self
            .session
            .caller(&ctx)
            .map_err(|e| McpError::invalid_request(e.message, None))?;
        let not_found =
            |e: ToolError| McpError::resource_not_found(format!("{uri}: {}", e.message), None);
        let info = self
            .session
            .visible(&caller, &id)
            .await
            .map_err(not_found)?;
        let bytes = self
            .read_bytes(&caller, info.id, &path)
            .await
            .map_err(not_found)?;
        let contents = match String::from_utf8(bytes) {
            Ok(text) => ResourceContents::text(text, uri.clone()).with_mime_type(mime_of(&path)),
            Err(e) => ResourceContents::blob(
                base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
                uri.clone(),
            )
            .with_mime_type(mime_of(&path)),
        };
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        Ok(ListPromptsResult::with_all_items(vec![
            Prompt::new(
                "sandbox_workflow",
                Some("How to get work done in a Capsule sandbox with these tools"),
                None,
            ),
            Prompt::new(
                "analyze_file",
                Some(
                    "Analyze a data file in the sandbox with Python and answer a question about it",
                ),
                Some(vec![
                    PromptArgument::new("path")
                        .with_description("The file, e.g. /workspace/data.csv")
                        .with_required(true),
                    PromptArgument::new("question")
                        .with_description("What to find out (default: summarize it)"),
                ]),
            ),
        ]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let arg = |name: &str| {
            request
                .arguments
                .as_ref()
                .and_then(|a| a.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match request.name.as_str() {
            "sandbox_workflow" => Ok(GetPromptResult::new(vec![PromptMessage::new_text(
                Role::User,
                WORKFLOW_PROMPT,
            )])
            .with_description("Working in a Capsule sandbox")
            .into()),
            "analyze_file" => {
                let path = arg("path").ok_or_else(|| {
                    McpError::invalid_params("analyze_file needs the argument `path`", None)
                })?;
                let question =
                    arg("question").unwrap_or_else(|| "Summarize what it contains.".to_owned());
                let text = format!(
                    "Analyze the file {path} in the Capsule sandbox. {question}\n\
                     First look at its size and first lines (exec: `wc -c {path}; head -n 20 {path}`). \
                     Then load it once with run_code (Python; pandas if `import pandas` works, otherwise \
                     the csv/json modules) and explore it step by step, reusing the loaded data. \
                     Show the numbers you base your answer on."
                );
                Ok(
                    GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
                        .with_description(format!("Analyze {path}"))
                        .into(),
                )
            }
            other => Err(McpError::invalid_params(
                format!("no prompt {other:?}; prompts: sandbox_workflow, analyze_file"),
                None,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_groups_see_what_they_should() {
        let alice = Caller::new(Some("k1"), Some("alice"), Some("team"));
        let bob = Caller::new(Some("k1"), Some("bob"), Some("team"));
        let carol = Caller::new(Some("k1"), Some("carol"), None);
        let other_key = Caller::new(Some("k2"), Some("alice"), Some("team"));
        let mut meta = BTreeMap::new();
        meta.insert(OWNER_KEY.to_owned(), alice.owner.clone());
        meta.insert(GROUP_KEY.to_owned(), alice.group.clone().unwrap());
        assert!(alice.sees(&meta));
        assert!(bob.sees(&meta), "same group");
        assert!(!carol.sees(&meta), "no group in common");
        assert!(!other_key.sees(&meta), "another key is another tenant");
        assert!(
            !alice.sees(&BTreeMap::new()),
            "sandboxes made outside MCP are not shown"
        );
    }

    #[test]
    fn resource_uris_parse() {
        assert_eq!(
            parse_uri("capsule://abcd1234/workspace/a%20b.txt"),
            Some(("abcd1234".into(), "/workspace/a b.txt".into()))
        );
        assert_eq!(parse_uri("file:///etc/passwd"), None);
        assert_eq!(parse_uri("capsule://abcd1234"), None);
    }

    #[test]
    fn long_text_is_cut_with_a_note() {
        let (short, cut) = clip("hello".into(), "stdout");
        assert_eq!((short.as_str(), cut), ("hello", false));
        let (long, cut) = clip("é".repeat(TEXT_LIMIT), "stdout");
        assert!(cut);
        assert!(long.contains("stdout truncated"));
        assert!(long.len() < TEXT_LIMIT + 200);
    }
}
