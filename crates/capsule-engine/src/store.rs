//! The durable store: sandbox and template records in SQLite (WAL mode).
//! Every state change is committed before the caller is answered, so a crash
//! of the server loses nothing a client was told about.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use capsule_api::SandboxId;
use capsule_api::sandbox::SandboxState;
use capsule_api::timefmt::UnixMillis;
use rusqlite::{Connection, OptionalExtension, params};

/// The schema version this code writes.
const SCHEMA_VERSION: i64 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the state database was written by a newer Capsule (schema {found}, this one knows {known})"
    )]
    TooNew { found: i64, known: i64 },
    #[error("state database query failed: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("corrupt record for sandbox {id}: {detail}")]
    Corrupt { id: String, detail: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How a sandbox is remembered.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    pub id: SandboxId,
    pub template: String,
    pub state: SandboxState,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub cpu: f64,
    pub memory_mb: u64,
    pub pids: u64,
    pub metadata: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// Why it failed, or why it was deleted ("expired", "deleted").
    pub reason: Option<String>,
    pub ended_at: Option<UnixMillis>,
    /// Secrets that open the sandbox's in-sandbox APIs to E2B clients.
    pub tokens: AccessTokens,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The backend that runs it (`native`, `oci:runc`, ...).
    pub runtime: String,
    /// Set while the sandbox is paused.
    pub paused_at: Option<UnixMillis>,
    /// Options beyond the basics, kept as JSON.
    pub extra: SandboxExtra,
}

/// A volume mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct VolumeMount {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Sandbox options stored as one JSON column, so that new ones need no
/// schema change.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SandboxExtra {
    /// Volumes mounted at create time.
    pub volumes: Vec<VolumeMount>,
    /// The snapshot it was created from.
    pub snapshot: Option<String>,
    /// The sandbox it was forked from.
    pub forked_from: Option<String>,
    /// Network settings (absent: no network).
    pub network: Option<serde_json::Value>,
    /// Disk limit of its writable layer, in MiB.
    pub disk_mb: Option<u64>,
    /// Pause after this long without activity.
    pub auto_pause_ms: Option<u64>,
    /// Made by a warm pool and not yet claimed.
    pub pooled: bool,
    /// At its end time, pause instead of being deleted (E2B's autoPause).
    pub pause_on_expiry: bool,
}

/// The per-sandbox secrets of the E2B front door: the envd access token
/// (`X-Access-Token`, also the key of signed file URLs) and the traffic
/// token of the code interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessTokens {
    pub envd: String,
    pub traffic: String,
}

impl AccessTokens {
    pub fn generate() -> Self {
        Self {
            envd: capsule_api::ids::random_token(),
            traffic: capsule_api::ids::random_token(),
        }
    }
}

/// A template definition as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TemplateRecord {
    pub name: String,
    pub builtin: bool,
    /// The definition, as JSON (see `templates::Template`).
    pub definition: String,
}

pub struct Store {
    conn: Mutex<Connection>,
}

fn map_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, SandboxRecordRaw)> {
    Ok((
        row.get(0)?,
        SandboxRecordRaw {
            template: row.get(1)?,
            state: row.get(2)?,
            created_at: row.get(3)?,
            expires_at: row.get(4)?,
            cpu: row.get(5)?,
            memory_mb: row.get(6)?,
            pids: row.get(7)?,
            metadata: row.get(8)?,
            env: row.get(9)?,
            reason: row.get(10)?,
            ended_at: row.get(11)?,
            access_token: row.get(12)?,
            traffic_token: row.get(13)?,
            tenant: row.get(14)?,
            runtime: row.get(15)?,
            paused_at: row.get(16)?,
            extra: row.get(17)?,
        },
    ))
}

struct SandboxRecordRaw {
    template: String,
    state: String,
    created_at: i64,
    expires_at: i64,
    cpu: f64,
    memory_mb: i64,
    pids: i64,
    metadata: String,
    env: String,
    reason: Option<String>,
    ended_at: Option<i64>,
    access_token: Option<String>,
    traffic_token: Option<String>,
    tenant: String,
    runtime: String,
    paused_at: Option<i64>,
    extra: Option<String>,
}

impl SandboxRecordRaw {
    fn into_record(self, id: String) -> Result<SandboxRecord> {
        let corrupt = |detail: String| StoreError::Corrupt {
            id: id.clone(),
            detail,
        };
        Ok(SandboxRecord {
            id: id.parse().map_err(|e| corrupt(format!("{e}")))?,
            template: self.template,
            state: SandboxState::parse(&self.state)
                .ok_or_else(|| corrupt(format!("unknown state {:?}", self.state)))?,
            created_at: self.created_at,
            expires_at: self.expires_at,
            cpu: self.cpu,
            memory_mb: u64::try_from(self.memory_mb).unwrap_or(0),
            pids: u64::try_from(self.pids).unwrap_or(0),
            metadata: serde_json::from_str(&self.metadata)
                .map_err(|e| corrupt(format!("metadata: {e}")))?,
            env: serde_json::from_str(&self.env).map_err(|e| corrupt(format!("env: {e}")))?,
            reason: self.reason,
            ended_at: self.ended_at,
            tokens: AccessTokens {
                envd: self.access_token.unwrap_or_default(),
                traffic: self.traffic_token.unwrap_or_default(),
            },
            tenant: self.tenant,
            runtime: self.runtime,
            paused_at: self.paused_at,
            extra: match self.extra.as_deref() {
                None | Some("") => SandboxExtra::default(),
                Some(text) => {
                    serde_json::from_str(text).map_err(|e| corrupt(format!("extra: {e}")))?
                }
            },
        })
    }
}

const SELECT: &str = "SELECT id, template, state, created_at, expires_at, cpu, memory_mb, pids, metadata, env, reason, ended_at, access_token, traffic_token, tenant, runtime, paused_at, extra FROM sandboxes";

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Self::init(conn).map_err(|e| match e {
            StoreError::Query(source) => open_err(source),
            other => other,
        })
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode survives a crash of the process; only a power
        // loss can lose the last commits.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS sandboxes (
                 id TEXT PRIMARY KEY,
                 template TEXT NOT NULL,
                 state TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 expires_at INTEGER NOT NULL,
                 cpu REAL NOT NULL,
                 memory_mb INTEGER NOT NULL,
                 pids INTEGER NOT NULL,
                 metadata TEXT NOT NULL,
                 env TEXT NOT NULL,
                 reason TEXT,
                 ended_at INTEGER,
                 access_token TEXT,
                 traffic_token TEXT,
                 tenant TEXT NOT NULL DEFAULT 'default',
                 runtime TEXT NOT NULL DEFAULT 'native',
                 paused_at INTEGER,
                 extra TEXT
             );
             CREATE INDEX IF NOT EXISTS sandboxes_state ON sandboxes(state);
             CREATE TABLE IF NOT EXISTS templates (
                 name TEXT PRIMARY KEY,
                 builtin INTEGER NOT NULL,
                 definition TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS tenants (
                 name TEXT PRIMARY KEY,
                 created_at INTEGER NOT NULL,
                 quotas TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS api_keys (
                 id TEXT PRIMARY KEY,
                 tenant TEXT NOT NULL,
                 role TEXT NOT NULL,
                 hash TEXT NOT NULL,
                 name TEXT NOT NULL,
                 rate_per_min INTEGER,
                 created_at INTEGER NOT NULL,
                 revoked_at INTEGER
             );
             CREATE TABLE IF NOT EXISTS audit (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 at INTEGER NOT NULL,
                 tenant TEXT NOT NULL,
                 key_id TEXT,
                 action TEXT NOT NULL,
                 target TEXT,
                 outcome TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
             CREATE TABLE IF NOT EXISTS snapshots (
                 id TEXT PRIMARY KEY,
                 tenant TEXT NOT NULL,
                 name TEXT,
                 source TEXT NOT NULL,
                 template TEXT NOT NULL,
                 runtime TEXT NOT NULL,
                 env TEXT NOT NULL,
                 created_at INTEGER NOT NULL,
                 size_bytes INTEGER NOT NULL,
                 UNIQUE (tenant, name)
             );
             CREATE TABLE IF NOT EXISTS volumes (
                 tenant TEXT NOT NULL,
                 name TEXT NOT NULL,
                 size_bytes INTEGER NOT NULL,
                 created_at INTEGER NOT NULL,
                 PRIMARY KEY (tenant, name)
             );
             CREATE TABLE IF NOT EXISTS pools (
                 template TEXT PRIMARY KEY,
                 size INTEGER NOT NULL
             );",
        )?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match version.and_then(|v| v.parse::<i64>().ok()) {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::TooNew {
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            Some(found) => migrate(&conn, found)?,
            None => {}
        }
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
            params![SCHEMA_VERSION.to_string()],
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Keeps the E2B tokens of a sandbox recorded before they existed.
    pub fn set_tokens(&self, id: SandboxId, tokens: &AccessTokens) -> Result<()> {
        self.conn().execute(
            "UPDATE sandboxes SET access_token = ?2, traffic_token = ?3 WHERE id = ?1",
            params![id.as_str(), tokens.envd, tokens.traffic],
        )?;
        Ok(())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert_sandbox(&self, r: &SandboxRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO sandboxes (id, template, state, created_at, expires_at, cpu, memory_mb, pids, metadata, env, reason, ended_at, access_token, traffic_token, tenant, runtime, paused_at, extra)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                r.id.as_str(),
                r.template,
                r.state.as_str(),
                r.created_at,
                r.expires_at,
                r.cpu,
                r.memory_mb as i64,
                r.pids as i64,
                serde_json::to_string(&r.metadata).expect("maps serialize"),
                serde_json::to_string(&r.env).expect("maps serialize"),
                r.reason,
                r.ended_at,
                r.tokens.envd,
                r.tokens.traffic,
                r.tenant,
                r.runtime,
                r.paused_at,
                serde_json::to_string(&r.extra).expect("options serialize"),
            ],
        )?;
        Ok(())
    }

    /// Records that a sandbox was paused (`Some`) or resumed (`None`).
    pub fn set_paused(&self, id: SandboxId, paused_at: Option<UnixMillis>) -> Result<()> {
        self.conn().execute(
            "UPDATE sandboxes SET paused_at = ?2 WHERE id = ?1",
            params![id.as_str(), paused_at],
        )?;
        Ok(())
    }

    /// Hands a sandbox to a tenant (a claimed pool sandbox).
    pub fn set_owner(
        &self,
        id: SandboxId,
        tenant: &str,
        metadata: &BTreeMap<String, String>,
        env: &BTreeMap<String, String>,
        extra: &SandboxExtra,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE sandboxes SET tenant = ?2, metadata = ?3, env = ?4, extra = ?5 WHERE id = ?1",
            params![
                id.as_str(),
                tenant,
                serde_json::to_string(metadata).expect("maps serialize"),
                serde_json::to_string(env).expect("maps serialize"),
                serde_json::to_string(extra).expect("options serialize"),
            ],
        )?;
        Ok(())
    }

    /// True when an id was ever used (ids are never reused).
    pub fn id_taken(&self, id: SandboxId) -> Result<bool> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM sandboxes WHERE id = ?1",
                params![id.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn set_state(
        &self,
        id: SandboxId,
        state: SandboxState,
        reason: Option<&str>,
        ended_at: Option<UnixMillis>,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE sandboxes SET state = ?2, reason = COALESCE(?3, reason), ended_at = COALESCE(?4, ended_at) WHERE id = ?1",
            params![id.as_str(), state.as_str(), reason, ended_at],
        )?;
        Ok(())
    }

    pub fn set_expires_at(&self, id: SandboxId, expires_at: UnixMillis) -> Result<()> {
        self.conn().execute(
            "UPDATE sandboxes SET expires_at = ?2 WHERE id = ?1",
            params![id.as_str(), expires_at],
        )?;
        Ok(())
    }

    pub fn get_sandbox(&self, id: SandboxId) -> Result<Option<SandboxRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("{SELECT} WHERE id = ?1"),
                params![id.as_str()],
                map_record,
            )
            .optional()?;
        drop(conn);
        row.map(|(id, raw)| raw.into_record(id)).transpose()
    }

    /// Sandboxes in any of `states`.
    pub fn sandboxes_in(&self, states: &[SandboxState]) -> Result<Vec<SandboxRecord>> {
        // The state names are fixed identifiers, never user input.
        let list = states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "{SELECT} WHERE state IN ({list}) ORDER BY created_at"
        ))?;
        let rows = stmt
            .query_map([], map_record)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        drop(conn);
        rows.into_iter()
            .map(|(id, raw)| raw.into_record(id))
            .collect()
    }

    /// Forgets ended sandboxes that ended before `before`.
    pub fn purge_ended(&self, before: UnixMillis) -> Result<usize> {
        Ok(self.conn().execute(
            "DELETE FROM sandboxes WHERE state IN ('deleted', 'failed') AND ended_at IS NOT NULL AND ended_at < ?1",
            params![before],
        )?)
    }

    pub fn upsert_template(&self, t: &TemplateRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO templates (name, builtin, definition) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET builtin = excluded.builtin, definition = excluded.definition",
            params![t.name, t.builtin, t.definition],
        )?;
        Ok(())
    }

    pub fn templates(&self) -> Result<Vec<TemplateRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, builtin, definition FROM templates ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TemplateRecord {
                    name: r.get(0)?,
                    builtin: r.get(1)?,
                    definition: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// Brings a database written by an older version up to date.
fn migrate(conn: &Connection, from: i64) -> Result<()> {
    if from < 2 {
        // Version 2: per-sandbox tokens for the E2B front door.
        conn.execute_batch(
            "ALTER TABLE sandboxes ADD COLUMN access_token TEXT;
             ALTER TABLE sandboxes ADD COLUMN traffic_token TEXT;",
        )?;
    }
    if from < 3 {
        // Version 3: tenants, backends per sandbox, pausing, more options.
        // (The new tables are made by `init`.)
        conn.execute_batch(
            "ALTER TABLE sandboxes ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
             ALTER TABLE sandboxes ADD COLUMN runtime TEXT NOT NULL DEFAULT 'native';
             ALTER TABLE sandboxes ADD COLUMN paused_at INTEGER;
             ALTER TABLE sandboxes ADD COLUMN extra TEXT;",
        )?;
    }
    Ok(())
}

/// An API key as stored: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    pub role: String,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    pub name: String,
    pub rate_per_min: Option<u32>,
    pub created_at: UnixMillis,
    pub revoked_at: Option<UnixMillis>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: UnixMillis,
    pub tenant: String,
    pub key_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
}

impl Store {
    pub fn insert_key(&self, k: &KeyRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO api_keys (id, tenant, role, hash, name, rate_per_min, created_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![k.id, k.tenant, k.role, k.hash, k.name, k.rate_per_min, k.created_at, k.revoked_at],
        )?;
        Ok(())
    }

    pub fn keys(&self) -> Result<Vec<KeyRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, tenant, role, hash, name, rate_per_min, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(KeyRecord {
                    id: r.get(0)?,
                    tenant: r.get(1)?,
                    role: r.get(2)?,
                    hash: r.get(3)?,
                    name: r.get(4)?,
                    rate_per_min: r.get(5)?,
                    created_at: r.get(6)?,
                    revoked_at: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Marks a key revoked; false when there is no such key.
    pub fn revoke_key(&self, id: &str, at: UnixMillis) -> Result<bool> {
        Ok(self.conn().execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
            params![id, at],
        )? > 0)
    }

    /// Sets a tenant's quotas (JSON), creating the tenant.
    pub fn set_tenant(&self, name: &str, quotas: &str, now: UnixMillis) -> Result<()> {
        self.conn().execute(
            "INSERT INTO tenants (name, created_at, quotas) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET quotas = excluded.quotas",
            params![name, now, quotas],
        )?;
        Ok(())
    }

    /// Tenants and their quotas (JSON).
    pub fn tenants(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, quotas FROM tenants ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn insert_audit(&self, a: &AuditRecord) -> Result<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO audit (at, tenant, key_id, action, target, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![a.at, a.tenant, a.key_id, a.action, a.target, a.outcome])?;
        Ok(())
    }

    /// Removes audit entries older than `before`; returns how many.
    pub fn purge_audit(&self, before: UnixMillis) -> Result<usize> {
        Ok(self
            .conn()
            .execute("DELETE FROM audit WHERE at < ?1", params![before])?)
    }

    /// Audit entries, newest first.
    pub fn audit(
        &self,
        tenant: Option<&str>,
        since: UnixMillis,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at, tenant, key_id, action, target, outcome FROM audit
             WHERE at >= ?1 AND (?2 IS NULL OR tenant = ?2) ORDER BY seq DESC LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![since, tenant, limit], |r| {
                Ok(AuditRecord {
                    at: r.get(0)?,
                    tenant: r.get(1)?,
                    key_id: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    outcome: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    pub id: String,
    pub tenant: String,
    pub name: Option<String>,
    /// The sandbox it was taken of.
    pub source: String,
    pub template: String,
    pub runtime: String,
    pub env: BTreeMap<String, String>,
    pub created_at: UnixMillis,
    pub size_bytes: u64,
}

/// A volume as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub tenant: String,
    pub name: String,
    pub size_bytes: u64,
    pub created_at: UnixMillis,
}

impl Store {
    pub fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO snapshots (id, tenant, name, source, template, runtime, env, created_at, size_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                s.id,
                s.tenant,
                s.name,
                s.source,
                s.template,
                s.runtime,
                serde_json::to_string(&s.env).expect("maps serialize"),
                s.created_at,
                s.size_bytes as i64
            ],
        )?;
        Ok(())
    }

    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, tenant, name, source, template, runtime, env, created_at, size_bytes FROM snapshots ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    SnapshotRecord {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        name: r.get(2)?,
                        source: r.get(3)?,
                        template: r.get(4)?,
                        runtime: r.get(5)?,
                        env: BTreeMap::new(),
                        created_at: r.get(7)?,
                        size_bytes: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
                    },
                    r.get::<_, String>(6)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(mut s, env)| {
                s.env = serde_json::from_str(&env).map_err(|e| StoreError::Corrupt {
                    id: s.id.clone(),
                    detail: format!("env: {e}"),
                })?;
                Ok(s)
            })
            .collect()
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM snapshots WHERE id = ?1", params![id])?
            > 0)
    }

    pub fn snapshot_count(&self, tenant: &str) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM snapshots WHERE tenant = ?1",
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    pub fn insert_volume(&self, v: &VolumeRecord) -> Result<()> {
        self.conn().execute(
            "INSERT INTO volumes (tenant, name, size_bytes, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![v.tenant, v.name, v.size_bytes as i64, v.created_at],
        )?;
        Ok(())
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT tenant, name, size_bytes, created_at FROM volumes ORDER BY tenant, name",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(VolumeRecord {
                    tenant: r.get(0)?,
                    name: r.get(1)?,
                    size_bytes: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    created_at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn delete_volume(&self, tenant: &str, name: &str) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM volumes WHERE tenant = ?1 AND name = ?2",
            params![tenant, name],
        )? > 0)
    }

    pub fn volume_bytes(&self, tenant: &str) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM volumes WHERE tenant = ?1",
            params![tenant],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    pub fn set_pool(&self, template: &str, size: u32) -> Result<()> {
        self.conn().execute(
            "INSERT INTO pools (template, size) VALUES (?1, ?2)
             ON CONFLICT(template) DO UPDATE SET size = excluded.size",
            params![template, size],
        )?;
        Ok(())
    }

    pub fn pools(&self) -> Result<Vec<(String, u32)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT template, size FROM pools ORDER BY template")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: SandboxState) -> SandboxRecord {
        SandboxRecord {
            id: id.parse().unwrap(),
            template: "python".into(),
            state,
            created_at: 1000,
            expires_at: 2000,
            cpu: 1.5,
            memory_mb: 512,
            pids: 256,
            metadata: [("owner".to_owned(), "me".to_owned())].into(),
            env: [("A".to_owned(), "b".to_owned())].into(),
            reason: None,
            ended_at: None,
            tokens: AccessTokens::generate(),
            tenant: "default".into(),
            runtime: "native".into(),
            paused_at: None,
            extra: SandboxExtra::default(),
        }
    }

    #[test]
    fn records_survive_reopening_and_state_changes_stick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .insert_sandbox(&record("abc12345", SandboxState::Running))
                .unwrap();
            store
                .insert_sandbox(&record("zzz99999", SandboxState::Creating))
                .unwrap();
            store
                .set_expires_at("abc12345".parse().unwrap(), 5000)
                .unwrap();
            store
                .set_state(
                    "zzz99999".parse().unwrap(),
                    SandboxState::Failed,
                    Some("boom"),
                    Some(3000),
                )
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let a = store
            .get_sandbox("abc12345".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(a.expires_at, 5000);
        assert_eq!(a.metadata["owner"], "me");
        assert_eq!(a.cpu, 1.5);
        let live = store
            .sandboxes_in(&[SandboxState::Running, SandboxState::Creating])
            .unwrap();
        assert_eq!(live.len(), 1);
        let z = store
            .get_sandbox("zzz99999".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(z.state, SandboxState::Failed);
        assert_eq!(z.reason.as_deref(), Some("boom"));
        assert!(store.id_taken("zzz99999".parse().unwrap()).unwrap());
        assert_eq!(store.purge_ended(4000).unwrap(), 1);
        assert!(
            store
                .get_sandbox("zzz99999".parse().unwrap())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn old_audit_entries_are_purged_and_recent_ones_kept() {
        let store = Store::in_memory().unwrap();
        for at in [1000, 2000, 3000] {
            store
                .insert_audit(&AuditRecord {
                    at,
                    tenant: "acme".into(),
                    key_id: None,
                    action: "sandbox.v1.exec".into(),
                    target: Some("abc12345".into()),
                    outcome: "ok".into(),
                })
                .unwrap();
        }
        assert_eq!(store.purge_audit(2500).unwrap(), 2);
        let left = store.audit(None, 0, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].at, 3000);
        assert_eq!(store.purge_audit(2500).unwrap(), 0);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let store = Store::in_memory().unwrap();
        store
            .insert_sandbox(&record("abc12345", SandboxState::Running))
            .unwrap();
        assert!(
            store
                .insert_sandbox(&record("abc12345", SandboxState::Running))
                .is_err()
        );
    }

    #[test]
    fn version_1_databases_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema', '1');
             CREATE TABLE sandboxes (id TEXT PRIMARY KEY, template TEXT NOT NULL, state TEXT NOT NULL,
                 created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, cpu REAL NOT NULL,
                 memory_mb INTEGER NOT NULL, pids INTEGER NOT NULL, metadata TEXT NOT NULL,
                 env TEXT NOT NULL, reason TEXT, ended_at INTEGER);
             INSERT INTO sandboxes VALUES ('abc12345', 'base', 'running', 1, 2, 1.0, 512, 256, '{}', '{}', NULL, NULL);",
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        let rec = store
            .get_sandbox("abc12345".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(rec.tokens, AccessTokens::default());
        let tokens = AccessTokens::generate();
        store.set_tokens(rec.id, &tokens).unwrap();
        assert_eq!(store.get_sandbox(rec.id).unwrap().unwrap().tokens, tokens);
    }

    #[test]
    fn newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'", [])
            .unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn templates_upsert() {
        let store = Store::in_memory().unwrap();
        let mut t = TemplateRecord {
            name: "python".into(),
            builtin: true,
            definition: "{}".into(),
        };
        store.upsert_template(&t).unwrap();
        t.definition = "{\"x\":1}".into();
        store.upsert_template(&t).unwrap();
        let all = store.templates().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].definition, "{\"x\":1}");
    }
}
