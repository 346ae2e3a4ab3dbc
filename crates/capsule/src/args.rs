//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "capsule",
    version,
    about = "Disposable, isolated Linux sandboxes for AI agents",
    long_about = "Capsule runs disposable, isolated Linux sandboxes for AI agents.\n\n\
                  Start a server with `capsule serve`, then create sandboxes and run code in them \
                  with the other commands (they talk to the server at --url)."
)]
pub struct Cli {
    /// The Capsule server to talk to [default: http://127.0.0.1:8080].
    #[arg(long, global = true, env = "CAPSULE_URL")]
    pub url: Option<String>,
    /// The API key to present to the server, if it requires one.
    #[arg(long, global = true, env = "CAPSULE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print machine-readable JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Capsule server.
    Serve(ServeArgs),
    /// Create a sandbox from a template and print its id.
    Create(CreateArgs),
    /// Run a command in a sandbox: `capsule exec ID -- cmd args...`.
    Exec(ExecArgs),
    /// Run code with the template's interpreter (python3 -c, node -e, ...).
    Run(RunArgs),
    /// Open an interactive shell in a sandbox.
    Shell(ShellArgs),
    /// Copy files or directories in or out: `capsule cp ./a.py ID:/workspace/`, `capsule cp ID:/workspace/out.txt .`
    Cp(CpArgs),
    /// List sandboxes, or the files of a sandbox directory (`capsule ls ID:/workspace`).
    Ls(LsArgs),
    /// Delete sandboxes.
    Rm(RmArgs),
    /// Show one sandbox.
    Inspect(IdArg),
    /// Give a sandbox a new time to live, counted from now.
    Timeout(TimeoutArgs),
    /// List the templates and whether this host can run them.
    Templates,
    /// Pause a sandbox: every process frozen, no CPU used (any call resumes it).
    Pause(IdArg),
    /// Resume a paused sandbox.
    Resume(IdArg),
    /// Capture a sandbox's files as a snapshot to start new sandboxes from.
    Snapshot(SnapshotArgs),
    /// List snapshots, or delete one: `capsule snapshots rm NAME`.
    #[command(subcommand)]
    Snapshots(SnapshotsCommand),
    /// Make copies of a running sandbox (copy-on-write), N at once.
    Fork(ForkArgs),
    /// Persistent volumes: create, list, delete.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Live resource use of a sandbox (refreshes every second; --once prints once).
    Stats(StatsArgs),
    /// Warm pools: sizes and ready sandboxes (`capsule pools set TEMPLATE N`, admin).
    #[command(subcommand)]
    Pools(PoolsCommand),
    /// Manage API keys (admin): create, list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Tenants, their quotas and what they use (admin; members see their own).
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// The audit log of state-changing calls (admin).
    Audit(AuditArgs),
    /// Serve the Model Context Protocol over stdio, for MCP clients (Claude
    /// Code, Claude Desktop, Cursor). With --url (or CAPSULE_URL) it uses
    /// that server; otherwise it runs an embedded one for this session.
    Mcp(McpArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key for a tenant and print it (the only time it is shown).
    Create {
        /// The tenant the key belongs to (made if new).
        tenant: String,
        /// `member` (its own tenant's sandboxes) or `admin` (everything).
        #[arg(long, default_value = "member", value_parser = ["member", "admin"])]
        role: String,
        /// A label to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        /// Requests per minute this key may make.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List keys (prefixes only).
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key by its id (from `capsule keys list`).
    Revoke { key_id: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Every tenant with its quotas and use (admin).
    List,
    /// One tenant (default: the key's own).
    Show { tenant: Option<String> },
    /// Set a tenant's quotas; limits not given are removed.
    SetQuota {
        tenant: String,
        #[arg(long)]
        max_sandboxes: Option<u64>,
        #[arg(long)]
        max_cpu: Option<f64>,
        #[arg(long)]
        max_memory_mb: Option<u64>,
        #[arg(long)]
        max_snapshots: Option<u64>,
        #[arg(long)]
        max_volume_bytes: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this tenant's entries.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only entries at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many entries (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    pub id: String,
    /// A name to start sandboxes from it by.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List snapshots.
    Ls,
    /// Delete a snapshot by id or name.
    Rm { snapshot: String },
}

#[derive(Debug, Args)]
pub struct ForkArgs {
    pub id: String,
    /// How many copies.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: u32,
    /// Time to live of the copies, e.g. 30m (default: the source's remaining time).
    #[arg(long)]
    pub ttl: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Make a volume of SIZE (e.g. 512m, 2g).
    Create { name: String, size: String },
    /// List volumes.
    Ls,
    /// Delete a volume (no sandbox may mount it).
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    pub id: String,
    /// Print once and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum PoolsCommand {
    /// Pool sizes and ready sandboxes.
    Ls,
    /// Keep COUNT ready sandboxes of TEMPLATE (0 removes the pool).
    Set { template: String, count: u32 },
}

/// The server address when none is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

#[derive(Debug, Args)]
pub struct McpArgs {
    /// The user this session acts for: sandboxes are shared by sessions of
    /// the same API key and user.
    #[arg(long = "as-user", env = "CAPSULE_MCP_USER")]
    pub user: Option<String>,
    /// A group: sessions of the same API key and group share sandboxes.
    #[arg(long = "group", env = "CAPSULE_MCP_GROUP")]
    pub group: Option<String>,
    /// Settings of the embedded engine (used without --url).
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --allow-remote.
    #[arg(long, env = "CAPSULE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve on a non-loopback address without API keys.
    #[arg(long)]
    pub allow_remote: bool,
    /// API keys clients must present (`Authorization: Bearer`, or
    /// `X-API-Key` as E2B's SDKs send it), comma-separated or repeated. With
    /// none the server is open to whoever can connect.
    #[arg(
        long = "api-keys",
        env = "CAPSULE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// The largest request body `/rpc` accepts, in bytes.
    #[arg(long, default_value_t = 96 << 20)]
    pub max_request_bytes: usize,
    /// Requests per minute each API key may make, unless the key has a
    /// limit of its own (0: no limit).
    #[arg(long, env = "CAPSULE_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit_per_min: u32,
    /// A browser origin (`https://console.example.com`) allowed to call the
    /// API besides the server's own; repeatable. Other cross-site requests
    /// are refused, against web pages driving a local server.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// How the engine runs sandboxes (for `serve`, and `mcp` when embedded).
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Where sandboxes and the state database live
    /// [default: /var/lib/capsule as root, ~/.local/state/capsule otherwise;
    /// `capsule mcp` uses a fresh directory there per session].
    #[arg(long, env = "CAPSULE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// First host uid/gid of the range sandbox ids map to (as root).
    #[arg(long, env = "CAPSULE_UID_BASE", default_value_t = 1_500_000_000)]
    pub uid_base: u32,
    /// Sandbox launchers kept ready in their cgroups, so creates skip the
    /// slow part of joining a cgroup (0 turns this off).
    #[arg(long, default_value_t = 2)]
    pub ready_launchers: usize,
    /// Isolation backends sandboxes may ask for (`runtime` at create),
    /// comma-separated: `native` (always on, the default) and the OCI
    /// runtimes `gvisor` (runsc), `runc`, `crun`. OCI runtimes need root
    /// and the stand-alone agent (`--agent-bin`).
    #[arg(
        long,
        env = "CAPSULE_RUNTIMES",
        value_delimiter = ',',
        default_value = "native"
    )]
    pub runtimes: Vec<String>,
    /// The stand-alone agent OCI sandboxes run (`scripts/build-agent`
    /// prints its path); default: `capsule-agent` beside this executable.
    #[arg(long, env = "CAPSULE_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// Do not use cgroups (no memory, CPU or process limits).
    #[arg(long)]
    pub no_cgroups: bool,
    /// Time to live of a sandbox when `create` gives none, in milliseconds.
    #[arg(long, default_value_t = 600_000)]
    pub default_ttl_ms: u64,
    /// The longest time to live a sandbox may get, in milliseconds.
    #[arg(long, default_value_t = 86_400_000)]
    pub max_ttl_ms: u64,
    /// Sandboxes that may run at once.
    #[arg(long, default_value_t = 1000)]
    pub max_sandboxes: usize,
    /// Memory limit of a sandbox when `create` gives none, in MiB.
    #[arg(long, default_value_t = 512)]
    pub default_memory_mb: u64,
    /// Process limit of every sandbox.
    #[arg(long, default_value_t = 256)]
    pub pids: u64,
    /// Output kept per stream of `exec`/`run`, in bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub output_limit: usize,
    /// Where sandbox files, snapshots and volumes live: `btrfs` (a
    /// loop-mounted image under the state directory unless it is on btrfs
    /// already; root only), `dir` (plain directories: snapshots copy, no
    /// disk limits) or `auto` (btrfs when possible).
    #[arg(long, env = "CAPSULE_STORAGE", default_value = "auto", value_parser = parse_storage)]
    pub storage: capsule_runtime::native::StorageMode,
    /// Disk limit of a sandbox's own files when `create` gives none, in
    /// MiB (btrfs storage; 0: none).
    #[arg(long, default_value_t = 10 * 1024)]
    pub default_disk_mb: u64,
    /// Warm pool, TEMPLATE=COUNT (repeatable): ready sandboxes kept for
    /// creates that fit the default shape.
    #[arg(long = "pool", value_parser = parse_pool)]
    pub pool: Vec<(String, u32)>,
    /// While a sandbox is paused its time to live `stop`s counting or keeps
    /// counting (`run`).
    #[arg(long, default_value = "stop", value_parser = ["stop", "run"])]
    pub paused_ttl: String,
    /// The longest a sandbox may stay paused before it is deleted, in ms.
    #[arg(long, default_value_t = 7 * 24 * 3_600_000)]
    pub max_paused_ms: u64,
    /// How often every sandbox's agent is health-checked, in ms (0: never).
    #[arg(long, default_value_t = 10_000)]
    pub health_interval_ms: u64,
    /// How long audit log entries are kept, in days (0: for ever).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=36_500))]
    pub audit_retention_days: u64,
}

fn parse_storage(s: &str) -> Result<capsule_runtime::native::StorageMode, String> {
    s.parse()
}

fn parse_pool(s: &str) -> Result<(String, u32), String> {
    let (t, n) = s
        .split_once('=')
        .ok_or_else(|| format!("--pool {s:?}: expected TEMPLATE=COUNT, e.g. python=4"))?;
    let n: u32 = n
        .parse()
        .map_err(|_| format!("--pool {s:?}: {n:?} is not a count"))?;
    // The same ceiling as admin.v1.setPool: pool sandboxes do not count
    // against --max-sandboxes.
    if n > 256 {
        return Err(format!("--pool {s:?}: {n} is above 256"));
    }
    Ok((t.to_owned(), n))
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Template name (see `capsule templates`).
    #[arg(default_value = "base")]
    pub template: String,
    /// Time to live, e.g. 30s, 10m, 2h (default: the server's, 10m).
    #[arg(long)]
    pub ttl: Option<String>,
    /// CPU cores (fractions allowed).
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory limit in MiB.
    #[arg(long)]
    pub memory: Option<u64>,
    /// Environment variable for every process, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", short = 'm')]
    pub meta: Vec<String>,
    /// Start from a snapshot (its id or name) instead of empty files.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Mount a volume: NAME:/path or NAME:/path:ro (repeatable).
    #[arg(long = "volume", short = 'v')]
    pub volumes: Vec<String>,
    /// Disk limit of the sandbox's own files in MiB.
    #[arg(long)]
    pub disk: Option<u64>,
    /// Pause after this long without activity, e.g. 5m.
    #[arg(long)]
    pub auto_pause: Option<String>,
    /// The isolation backend: native, or an OCI runtime the server enabled
    /// (gvisor, runc, crun).
    #[arg(long)]
    pub runtime: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub id: String,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub cmd: Vec<String>,
    /// Kill the command after this long, e.g. 30s, 5m.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Working directory inside the sandbox (default /workspace).
    #[arg(long, short = 'w')]
    pub cwd: Option<String>,
    /// Run as the sandbox's root instead of the unprivileged user.
    #[arg(long)]
    pub root: bool,
    /// Pass this process's standard input to the command.
    #[arg(long, short = 'i')]
    pub stdin: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub id: String,
    /// The code to run; `-` reads it from standard input.
    pub code: String,
    #[arg(long)]
    pub timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    pub id: String,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a local path, or ID:PATH inside a sandbox.
    pub src: String,
    /// Destination: a local path, or ID:PATH inside a sandbox.
    pub dst: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// ID:PATH to list a directory in a sandbox; nothing to list sandboxes.
    pub target: Option<String>,
    /// Only sandboxes with this metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", short = 'm')]
    pub meta: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdArg {
    pub id: String,
}

#[derive(Debug, Args)]
pub struct TimeoutArgs {
    pub id: String,
    /// New time to live from now, e.g. 30m.
    pub ttl: String,
}
