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
const SCHEMA_VERSION: i64 = 2;

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
        })
    }
}

const SELECT: &str = "SELECT id, template, state, created_at, expires_at, cpu, memory_mb, pids, metadata, env, reason, ended_at, access_token, traffic_token FROM sandboxes";

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
                 traffic_token TEXT
             );
             CREATE INDEX IF NOT EXISTS sandboxes_state ON sandboxes(state);
             CREATE TABLE IF NOT EXISTS templates (
                 name TEXT PRIMARY KEY,
                 builtin INTEGER NOT NULL,
                 definition TEXT NOT NULL
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
            "INSERT INTO sandboxes (id, template, state, created_at, expires_at, cpu, memory_mb, pids, metadata, env, reason, ended_at, access_token, traffic_token)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
    Ok(())
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
