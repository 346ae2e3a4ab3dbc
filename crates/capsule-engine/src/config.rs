//! Engine settings: defaults and ceilings for every sandbox.

/// Defaults and limits the engine applies to requests.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub default_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub default_cpu: f64,
    pub max_cpu: f64,
    pub default_memory_mb: u64,
    pub min_memory_mb: u64,
    pub max_memory_mb: u64,
    /// Process limit of every sandbox (pids cgroup).
    pub pids: u64,
    /// Sandboxes that may run at once on this server.
    pub max_sandboxes: usize,
    pub default_exec_timeout_ms: u64,
    pub max_exec_timeout_ms: u64,
    /// Per stream cap on output collected by `exec` and `run`.
    pub output_limit_bytes: usize,
    /// Largest file `readFile`/`writeFile` move in one call.
    pub max_file_bytes: u64,
    /// How long records of ended sandboxes are kept (for `sandbox_expired`
    /// answers and failure reasons).
    pub ended_retention_ms: u64,
    /// How long audit entries are kept (0: for ever).
    pub audit_retention_ms: u64,
    /// The operator's API keys (admins of the default tenant). With none,
    /// and none made through the admin API, the server is open.
    pub api_keys: Vec<String>,
    /// Requests per minute a key may make unless it has its own limit.
    pub rate_limit_per_min: Option<u32>,
    /// Disk limit of a sandbox's own files when `create` gives none (MiB).
    pub default_disk_mb: Option<u64>,
    pub max_disk_mb: u64,
    /// Largest volume, in MiB.
    pub max_volume_mb: u64,
    /// True: a paused sandbox's time to live stops counting until it
    /// resumes. False: it keeps counting and a paused sandbox expires.
    pub pause_stops_ttl: bool,
    /// How long a sandbox may stay paused before it is deleted.
    pub max_paused_ms: u64,
    /// How often every agent is checked (0: never).
    pub health_interval_ms: u64,
    /// Warm pools at start: template and how many to keep ready.
    pub pools: Vec<(String, u32)>,
}

/// The number of CPUs this host has.
pub fn host_cpus() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0)
}

/// Total memory of this host in MiB.
pub fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(4096)
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_ttl_ms: 600_000,
            max_ttl_ms: 24 * 3_600_000,
            default_cpu: 1.0,
            max_cpu: host_cpus(),
            default_memory_mb: 512,
            min_memory_mb: 32,
            max_memory_mb: host_memory_mb(),
            pids: 256,
            max_sandboxes: 1000,
            default_exec_timeout_ms: 30_000,
            max_exec_timeout_ms: 3_600_000,
            output_limit_bytes: 10 << 20,
            max_file_bytes: 64 << 20,
            ended_retention_ms: 3_600_000,
            audit_retention_ms: 30 * 24 * 3_600_000,
            api_keys: Vec::new(),
            rate_limit_per_min: None,
            default_disk_mb: Some(10 * 1024),
            max_disk_mb: 1024 * 1024,
            max_volume_mb: 1024 * 1024,
            pause_stops_ttl: true,
            max_paused_ms: 7 * 24 * 3_600_000,
            health_interval_ms: 10_000,
            pools: Vec::new(),
        }
    }
}
