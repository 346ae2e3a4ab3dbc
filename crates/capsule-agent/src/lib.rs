//! `capsule-agent`: the program every sandbox runs as its init.
//!
//! It reaps every process that ends in the sandbox, forwards termination
//! signals, and serves an envd-compatible API (Connect protocol, JSON codec)
//! on a unix socket the backend hands it: processes with or without a
//! terminal, filesystem operations, directory watching and raw file
//! transfer, and a code interpreter (stateful Python, JavaScript and bash
//! contexts, as E2B's code interpreter serves them). The Capsule server
//! talks to nothing else inside a sandbox.

mod files;
mod fs;
mod http;
mod init;
mod interpreter;
mod process;
mod service;
mod users;
mod watch;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use capsule_protocol::ConnectError;
use http_body_util::BodyExt as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use process::Processes;
pub use process::SpawnDefaults;
use users::{Identity, Users};

/// The parsers of request input, for the fuzz targets in `fuzz/`; not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::files::{parse_query, percent_decode};
    pub use crate::users::{Identity, parse_passwd, resolve, user_from_basic_auth};
}

/// How the agent is set up by whoever starts it.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Environment every process starts with (template and sandbox settings).
    pub env: BTreeMap<String, String>,
    /// The user requests act as when they name none.
    pub default_user: String,
    /// The sandbox maps a single id: every user runs as id 0.
    pub single_id: bool,
    /// How often idle streams carry a keepalive message.
    pub keepalive: Duration,
    /// True when the agent is PID 1 of its sandbox.
    pub is_init: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            env: BTreeMap::new(),
            default_user: "user".to_owned(),
            single_id: false,
            keepalive: Duration::from_secs(30),
            is_init: std::process::id() == 1,
        }
    }
}

/// Shared state of the running agent.
pub struct Agent {
    defaults: SpawnDefaults,
    processes: Arc<Processes>,
    interpreter: Arc<interpreter::Interpreter>,
    users: Users,
    watchers: watch::Watchers,
    config: AgentConfig,
}

impl Agent {
    /// The identity a request acts as: from `Authorization: Basic`, else the default.
    fn identity(&self, headers: &::http::HeaderMap) -> Result<Identity, ConnectError> {
        let named = headers
            .get(::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(users::user_from_basic_auth);
        self.users
            .lookup(named.as_deref().unwrap_or(&self.config.default_user))
    }
}

/// Runs the agent on `listener` until it is told to stop. Never returns.
///
/// Call this on a process with a single thread; the agent starts its own
/// runtime.
pub fn run(config: AgentConfig, listener: OwnedFd) -> ! {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        // Kept for good: see `start_blocking_threads`.
        .thread_keep_alive(Duration::from_secs(365 * 24 * 3600))
        .on_thread_start(leave_signals_to_the_main_thread)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capsule-agent: cannot start the runtime: {e}");
            std::process::exit(70);
        }
    };
    let code = runtime.block_on(async move {
        match serve(config, listener).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("capsule-agent: {e}");
                70
            }
        }
    });
    std::process::exit(code)
}

/// Blocks the signals the agent handles in a helper thread, so the kernel
/// delivers them to the main thread, which runs the event loop: an exit
/// (SIGCHLD) is then noticed without waking a second thread first.
fn leave_signals_to_the_main_thread() {
    // SAFETY: sigemptyset/sigaddset fill a sigset_t owned by this frame, and
    // pthread_sigmask changes only the calling thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Threads for file operations, all started before any sandboxed code runs.
const BLOCKING_THREADS: usize = 4;

/// Starts every blocking-pool thread at once. A sandbox at its process
/// limit (a fork bomb) leaves no room for new threads, and Tokio panics when
/// it cannot start one it needs; with the full pool already running, file
/// operations just queue.
async fn start_blocking_threads() {
    let barrier = Arc::new(std::sync::Barrier::new(BLOCKING_THREADS));
    let tasks: Vec<_> = (0..BLOCKING_THREADS)
        .map(|_| {
            let b = barrier.clone();
            tokio::task::spawn_blocking(move || {
                b.wait();
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

async fn serve(config: AgentConfig, listener: OwnedFd) -> std::io::Result<()> {
    start_blocking_threads().await;
    let std_listener = std::os::unix::net::UnixListener::from(listener);
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    let reaper = Arc::new(init::Reaper::default());
    init::spawn_reaper(reaper.clone())?;
    init::spawn_signal_forwarder(config.is_init, Duration::from_secs(2))?;
    let defaults = SpawnDefaults::new(config.env.clone());
    let agent = Arc::new(Agent {
        defaults: defaults.clone(),
        processes: Processes::new(reaper.clone(), defaults.clone()),
        interpreter: Arc::new(interpreter::Interpreter::new(reaper, defaults)),
        users: Users::new("/etc/passwd", config.single_id),
        watchers: watch::Watchers::default(),
        config,
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let agent = agent.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let agent = agent.clone();
                async move { service::handle(agent, req).await }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Drains and discards a request body (used when answering early).
pub(crate) async fn discard(body: hyper::body::Incoming) {
    let _ = body.collect().await;
}
