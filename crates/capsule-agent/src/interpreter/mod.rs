//! Stateful code execution, as E2B's code interpreter serves it: contexts
//! (one long-lived kernel process each: Python, JavaScript or bash) that
//! keep variables, imports and definitions between runs, and executions
//! streamed back as newline-delimited JSON.
//!
//! Kernels get requests on stdin and write the program's own output to
//! their stdout and stderr; they report results, errors and completion as
//! JSON lines on fd 3. After each run a
//! kernel writes an end marker to both output streams, so all output of a
//! run is known to have arrived before it is declared over.

mod kernel;
pub mod routes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use capsule_protocol::ConnectError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::init::Reaper;
use crate::process::SpawnDefaults;
use crate::users::Identity;
pub use kernel::Language;
use kernel::{Kernel, RunEvent};

/// A request to `POST /execute`.
#[derive(Debug, Clone, Deserialize)]
pub struct ExecuteRequest {
    pub code: String,
    #[serde(default)]
    pub context_id: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub env_vars: Option<BTreeMap<String, String>>,
}

/// A request to `POST /contexts`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewContext {
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub cwd: Option<String>,
}

/// A context as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextInfo {
    pub id: String,
    pub language: String,
    pub cwd: String,
}

struct Context {
    info: ContextInfo,
    language: Language,
    /// The kernel, started on first use and again after it dies; locked for
    /// the length of a run, so runs in one context queue.
    kernel: tokio::sync::Mutex<Option<Kernel>>,
}

/// Every context of the sandbox.
pub struct Interpreter {
    contexts: Mutex<HashMap<String, Arc<Context>>>,
    /// The context used for each language when a run names none.
    default_contexts: Mutex<HashMap<Language, String>>,
    reaper: Arc<Reaper>,
    defaults: SpawnDefaults,
}

/// How long an interrupted run may take to stop before its kernel is
/// killed (code stuck where SIGINT cannot reach it).
const INTERRUPT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

fn context_id() -> String {
    crate::fs::random_hex(8)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn line(value: &Value) -> Bytes {
    let mut out = serde_json::to_vec(value).expect("json values serialize");
    out.push(b'\n');
    Bytes::from(out)
}

impl Interpreter {
    pub fn new(reaper: Arc<Reaper>, defaults: SpawnDefaults) -> Self {
        Self {
            contexts: Mutex::new(HashMap::new()),
            default_contexts: Mutex::new(HashMap::new()),
            reaper,
            defaults,
        }
    }

    pub fn create(&self, req: NewContext, user: &Identity) -> Result<ContextInfo, ConnectError> {
        let language = Language::parse(req.language.as_deref().unwrap_or("python"))?;
        let cwd = req
            .cwd
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| user.home.display().to_string());
        if !std::path::Path::new(&cwd).is_dir() {
            return Err(ConnectError::invalid_argument(format!(
                "cwd {cwd} is not a directory"
            )));
        }
        let info = ContextInfo {
            id: context_id(),
            language: language.name().to_owned(),
            cwd,
        };
        let ctx = Arc::new(Context {
            info: info.clone(),
            language,
            kernel: tokio::sync::Mutex::new(None),
        });
        self.contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.id.clone(), ctx);
        Ok(info)
    }

    pub fn list(&self) -> Vec<ContextInfo> {
        let mut list: Vec<ContextInfo> = self
            .contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|c| c.info.clone())
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    fn find(&self, id: &str) -> Result<Arc<Context>, ConnectError> {
        self.contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ConnectError::not_found(format!("context {id:?} does not exist")))
    }

    pub async fn remove(&self, id: &str) -> Result<(), ConnectError> {
        let ctx = self.find(id)?;
        self.contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.default_contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, v| v != id);
        if let Some(k) = ctx.kernel.lock().await.take() {
            k.kill();
        }
        Ok(())
    }

    /// Ends the context's kernel; the next run starts a fresh one.
    pub async fn restart(&self, id: &str) -> Result<(), ConnectError> {
        let ctx = self.find(id)?;
        if let Some(k) = ctx.kernel.lock().await.take() {
            k.kill();
        }
        Ok(())
    }

    /// The context a run without `context_id` uses for `language`.
    fn default_context(
        &self,
        language: Language,
        user: &Identity,
    ) -> Result<Arc<Context>, ConnectError> {
        let existing = self
            .default_contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&language)
            .cloned();
        if let Some(id) = existing
            && let Ok(ctx) = self.find(&id)
        {
            return Ok(ctx);
        }
        let info = self.create(
            NewContext {
                language: Some(language.name().to_owned()),
                cwd: None,
            },
            user,
        )?;
        self.default_contexts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(language, info.id.clone());
        self.find(&info.id)
    }

    /// Starts a run; its output streams through `tx` as JSON lines. When the
    /// client goes away the run is interrupted.
    pub fn execute(
        self: &Arc<Self>,
        req: ExecuteRequest,
        user: Identity,
        tx: mpsc::Sender<Bytes>,
    ) -> Result<(), ConnectError> {
        let ctx = match (&req.context_id, &req.language) {
            (Some(_), Some(_)) => {
                return Err(ConnectError::invalid_argument(
                    "give either context_id or language, not both",
                ));
            }
            (Some(id), None) => self.find(id)?,
            (None, lang) => {
                self.default_context(Language::parse(lang.as_deref().unwrap_or("python"))?, &user)?
            }
        };
        let this = self.clone();
        tokio::spawn(async move { this.run(ctx, req, user, tx).await });
        Ok(())
    }

    async fn run(
        &self,
        ctx: Arc<Context>,
        req: ExecuteRequest,
        user: Identity,
        tx: mpsc::Sender<Bytes>,
    ) {
        let mut slot = ctx.kernel.lock().await;
        if slot.as_mut().is_none_or(|k| !k.alive()) {
            match Kernel::start(
                ctx.language,
                &ctx.info.cwd,
                &user,
                &self.defaults,
                &self.reaper,
            ) {
                Ok(k) => *slot = Some(k),
                Err(e) => {
                    let _ = tx
                        .send(line(&json!({"type": "error", "name": "KernelError", "value": e.message, "traceback": ""})))
                        .await;
                    let _ = tx.send(line(&json!({"type": "end_of_execution"}))).await;
                    return;
                }
            }
        }
        let kernel = slot.as_mut().expect("started above");
        let mut run = match kernel.begin(&req.code, req.env_vars.as_ref()).await {
            Ok(run) => run,
            Err(e) => {
                let _ = tx
                    .send(line(&json!({"type": "error", "name": "KernelError", "value": e, "traceback": ""})))
                    .await;
                let _ = tx.send(line(&json!({"type": "end_of_execution"}))).await;
                *slot = None;
                return;
            }
        };
        let mut interrupted: Option<tokio::time::Instant> = None;
        let mut client_gone = false;
        loop {
            let event = tokio::select! {
                ev = run.next(kernel) => ev,
                _ = tx.closed(), if !client_gone => {
                    client_gone = true;
                    if interrupted.is_none() {
                        interrupted = Some(tokio::time::Instant::now());
                        kernel.interrupt();
                    }
                    continue;
                }
                _ = async {
                    match interrupted {
                        Some(at) => tokio::time::sleep_until(at + INTERRUPT_GRACE).await,
                        None => std::future::pending().await,
                    }
                } => break,
            };
            let out = match event {
                RunEvent::Stdout(text) => {
                    json!({"type": "stdout", "text": text, "timestamp": now_nanos()})
                }
                RunEvent::Stderr(text) => {
                    json!({"type": "stderr", "text": text, "timestamp": now_nanos()})
                }
                RunEvent::Message(mut value) => {
                    if value.get("type") == Some(&json!("ready")) {
                        continue;
                    }
                    if let Some(obj) = value.as_object_mut() {
                        obj.remove("id");
                    }
                    value
                }
                RunEvent::Done { execution_count } => {
                    let _ = tx
                        .send(line(&json!({"type": "number_of_executions", "execution_count": execution_count})))
                        .await;
                    let _ = tx.send(line(&json!({"type": "end_of_execution"}))).await;
                    return;
                }
                RunEvent::Died(why) => {
                    let _ = tx
                        .send(line(&json!({"type": "error", "name": "KernelDied", "value": why, "traceback": ""})))
                        .await;
                    let _ = tx.send(line(&json!({"type": "end_of_execution"}))).await;
                    *slot = None;
                    return;
                }
            };
            if !client_gone && tx.send(line(&out)).await.is_err() {
                client_gone = true;
                if interrupted.is_none() {
                    interrupted = Some(tokio::time::Instant::now());
                    kernel.interrupt();
                }
            }
        }
        // Nobody is listening any more and the kernel does not stop: the
        // next run starts a fresh one.
        if let Some(k) = slot.take() {
            k.kill();
        }
    }
}
