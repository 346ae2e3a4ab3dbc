//! The processes the agent started: spawning (with or without a terminal),
//! fanning their output out to every connected stream, input, signals,
//! resizing, and ending them on a deadline.

mod pty;
pub(crate) mod spawn;
pub mod tree;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_protocol::process::{
    DataEvent, EndEvent, ProcessConfig, ProcessEvent, ProcessInfo, ProcessInput, ProcessSelector,
    Signal, StartEvent, StartRequest,
};
use capsule_protocol::{Code, ConnectError};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::init::{Reaper, end_fields};
use crate::users::Identity;
pub use spawn::SpawnDefaults;

/// How many events a slow stream may fall behind before the process waits for it.
const SUBSCRIBER_BUFFER: usize = 64;
/// How long output is still collected after the process itself has exited,
/// for children that keep its pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(250);

/// One process the agent started.
pub struct Proc {
    pub pid: u32,
    pub config: ProcessConfig,
    pub tag: Option<String>,
    pty: Option<pty::PtyMaster>,
    stdin: tokio::sync::Mutex<Option<pipe::Sender>>,
    subscribers: Mutex<Subscribers>,
    timed_out: AtomicBool,
}

#[derive(Default)]
struct Subscribers {
    senders: Vec<mpsc::Sender<ProcessEvent>>,
    /// Set once the end event went out; late subscribers get it at once.
    ended: Option<EndEvent>,
}

impl Proc {
    /// A stream of this process's events from now on (a start event first).
    pub fn subscribe(&self) -> mpsc::Receiver<ProcessEvent> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let _ = tx.try_send(ProcessEvent::Start(StartEvent { pid: self.pid }));
        let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        match &subs.ended {
            Some(end) => {
                let _ = tx.try_send(ProcessEvent::End(end.clone()));
            }
            None => subs.senders.push(tx),
        }
        rx
    }

    /// True when the process was killed because its deadline passed.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    async fn broadcast(&self, event: ProcessEvent) {
        let senders: Vec<_> = self
            .subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .senders
            .clone();
        let mut gone = false;
        for tx in &senders {
            if tx.send(event.clone()).await.is_err() {
                gone = true;
            }
        }
        if gone {
            self.subscribers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .senders
                .retain(|tx| !tx.is_closed());
        }
    }

    async fn finish(&self, end: EndEvent) {
        let senders = {
            let mut subs = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
            subs.ended = Some(end.clone());
            std::mem::take(&mut subs.senders)
        };
        for tx in senders {
            let _ = tx.send(ProcessEvent::End(end.clone())).await;
        }
    }

    async fn write_input(&self, input: ProcessInput) -> Result<(), ConnectError> {
        match input {
            ProcessInput::Pty(bytes) => {
                let pty = self.pty.as_ref().ok_or_else(|| {
                    ConnectError::new(
                        Code::FailedPrecondition,
                        format!("process {} has no terminal", self.pid),
                    )
                })?;
                pty.write_all(&bytes).await.map_err(|e| {
                    ConnectError::internal(format!("writing to the terminal of {}: {e}", self.pid))
                })
            }
            ProcessInput::Stdin(bytes) => {
                if let Some(pty) = &self.pty {
                    // Terminal processes read their stdin from the terminal.
                    return pty.write_all(&bytes).await.map_err(|e| {
                        ConnectError::internal(format!(
                            "writing to the terminal of {}: {e}",
                            self.pid
                        ))
                    });
                }
                let mut stdin = self.stdin.lock().await;
                let pipe = stdin.as_mut().ok_or_else(|| {
                    ConnectError::new(
                        Code::FailedPrecondition,
                        format!("stdin of process {} is closed or was not requested (start it with stdin: true)", self.pid),
                    )
                })?;
                match pipe.write_all(&bytes).await {
                    Ok(()) => Ok(()),
                    // The process stopped reading: not the caller's fault.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        *stdin = None;
                        Ok(())
                    }
                    Err(e) => Err(ConnectError::internal(format!(
                        "writing stdin of {}: {e}",
                        self.pid
                    ))),
                }
            }
        }
    }

    async fn close_stdin(&self) -> Result<(), ConnectError> {
        if self.pty.is_some() {
            return Err(ConnectError::new(
                Code::FailedPrecondition,
                format!(
                    "process {} uses a terminal; send Ctrl-D (0x04) to signal end of input",
                    self.pid
                ),
            ));
        }
        self.stdin.lock().await.take();
        Ok(())
    }
}

/// Every process the agent currently runs.
pub struct Processes {
    table: Mutex<HashMap<u32, Arc<Proc>>>,
    reaper: Arc<Reaper>,
    defaults: SpawnDefaults,
}

impl Processes {
    pub fn new(reaper: Arc<Reaper>, defaults: SpawnDefaults) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(HashMap::new()),
            reaper,
            defaults,
        })
    }

    /// Kills `proc` and every process its tree started, wherever they went.
    async fn kill_tree(&self, proc: &Arc<Proc>) {
        tree::kill_tree(proc.pid as i32).await;
    }

    /// Starts a process as `id`. With a `deadline`, the process and
    /// everything it started are killed when it passes.
    pub fn start(
        self: &Arc<Self>,
        req: StartRequest,
        id: &Identity,
        deadline: Option<Instant>,
    ) -> Result<(Arc<Proc>, mpsc::Receiver<ProcessEvent>), ConnectError> {
        if let Some(tag) = &req.tag
            && self.find(&ProcessSelector::Tag(tag.clone())).is_ok()
        {
            return Err(ConnectError::new(
                Code::AlreadyExists,
                format!("a process tagged {tag:?} is already running"),
            ));
        }
        let spawned = spawn::spawn(&req, id, &self.defaults)?;
        // Register before the next await so the reaper cannot miss the exit.
        let exit = self.reaper.register(spawned.pid as i32);
        let proc = Arc::new(Proc {
            pid: spawned.pid,
            config: req.process.clone(),
            tag: req.tag.clone(),
            pty: spawned.pty,
            stdin: tokio::sync::Mutex::new(spawned.stdin),
            subscribers: Mutex::new(Subscribers::default()),
            timed_out: AtomicBool::new(false),
        });
        let rx = proc.subscribe();
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(proc.pid, proc.clone());
        let table = self.clone();
        let pumped = proc.clone();
        tokio::spawn(async move {
            pump(&pumped, spawned.stdout, spawned.stderr, exit).await;
            table
                .table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pumped.pid);
        });
        if let Some(deadline) = deadline {
            let watched = Arc::downgrade(&proc);
            let table = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                if let Some(proc) = watched.upgrade() {
                    let still_running = proc
                        .subscribers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .ended
                        .is_none();
                    if still_running {
                        proc.timed_out.store(true, Ordering::SeqCst);
                        table.kill_tree(&proc).await;
                    }
                }
            });
        }
        Ok((proc, rx))
    }

    pub fn find(&self, selector: &ProcessSelector) -> Result<Arc<Proc>, ConnectError> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let found = match selector {
            ProcessSelector::Pid(pid) => table.get(pid).cloned(),
            ProcessSelector::Tag(tag) => table
                .values()
                .find(|p| p.tag.as_deref() == Some(tag))
                .cloned(),
        };
        found.ok_or_else(|| {
            let what = match selector {
                ProcessSelector::Pid(pid) => format!("pid {pid}"),
                ProcessSelector::Tag(tag) => format!("tag {tag:?}"),
            };
            ConnectError::not_found(format!("no running process with {what}"))
        })
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<ProcessInfo> = table
            .values()
            .map(|p| ProcessInfo {
                config: p.config.clone(),
                pid: p.pid,
                tag: p.tag.clone(),
            })
            .collect();
        list.sort_by_key(|p| p.pid);
        list
    }

    pub async fn send_input(
        &self,
        selector: &ProcessSelector,
        input: ProcessInput,
    ) -> Result<(), ConnectError> {
        self.find(selector)?.write_input(input).await
    }

    pub async fn close_stdin(&self, selector: &ProcessSelector) -> Result<(), ConnectError> {
        self.find(selector)?.close_stdin().await
    }

    pub async fn signal(
        &self,
        selector: &ProcessSelector,
        signal: Signal,
    ) -> Result<(), ConnectError> {
        let proc = self.find(selector)?;
        let pid = proc.pid as i32;
        match signal {
            Signal::Sigkill => self.kill_tree(&proc).await,
            Signal::Sigterm => tree::terminate(pid),
            Signal::Unspecified => {
                return Err(ConnectError::invalid_argument("signal is unspecified"));
            }
        }
        Ok(())
    }

    pub fn resize(
        &self,
        selector: &ProcessSelector,
        cols: u32,
        rows: u32,
    ) -> Result<(), ConnectError> {
        let proc = self.find(selector)?;
        let pty = proc.pty.as_ref().ok_or_else(|| {
            ConnectError::new(
                Code::FailedPrecondition,
                format!("process {} has no terminal to resize", proc.pid),
            )
        })?;
        let (cols, rows) = terminal_size(cols, rows)?;
        pty.resize(cols, rows).map_err(|e| {
            ConnectError::internal(format!("resizing the terminal of {}: {e}", proc.pid))
        })
    }
}

/// Validates a terminal size.
pub fn terminal_size(cols: u32, rows: u32) -> Result<(u16, u16), ConnectError> {
    let ok = |v: u32| (1..=4096).contains(&v);
    if !ok(cols) || !ok(rows) {
        return Err(ConnectError::invalid_argument(format!(
            "terminal size {cols}x{rows} is out of range (1..=4096 each)"
        )));
    }
    Ok((cols as u16, rows as u16))
}

/// Moves output to subscribers until the process has exited and its output
/// is drained, then sends the end event.
async fn pump(
    proc: &Proc,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    exit: oneshot::Receiver<capsule_sys::process::ExitStatus>,
) {
    let (mut out, mut err) = (stdout, stderr);
    let mut exit = Some(exit);
    let mut status = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut out_buf = vec![0u8; 32 * 1024];
    let mut err_buf = vec![0u8; 32 * 1024];
    let mut pty_buf = vec![0u8; 32 * 1024];
    let mut pty_open = proc.pty.is_some();
    loop {
        let streams_open = out.is_some() || err.is_some() || pty_open;
        if status.is_some() && !streams_open {
            break;
        }
        if let Some(deadline) = drain_deadline
            && Instant::now() >= deadline
        {
            break;
        }
        tokio::select! {
            biased;
            n = read_opt(&mut out, &mut out_buf), if out.is_some() => match n {
                Some(n) if n > 0 => proc.broadcast(ProcessEvent::Data(DataEvent::Stdout(out_buf[..n].to_vec()))).await,
                _ => out = None,
            },
            n = read_opt(&mut err, &mut err_buf), if err.is_some() => match n {
                Some(n) if n > 0 => proc.broadcast(ProcessEvent::Data(DataEvent::Stderr(err_buf[..n].to_vec()))).await,
                _ => err = None,
            },
            n = async { proc.pty.as_ref().expect("guarded by pty_open").read(&mut pty_buf).await }, if pty_open => match n {
                Ok(n) if n > 0 => proc.broadcast(ProcessEvent::Data(DataEvent::Pty(pty_buf[..n].to_vec()))).await,
                _ => pty_open = false,
            },
            s = async { exit.as_mut().expect("guarded by is_some").await }, if exit.is_some() => {
                exit = None;
                status = Some(s.unwrap_or(capsule_sys::process::ExitStatus::Signaled(libc::SIGKILL)));
                drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
            },
            _ = async {
                match drain_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    let status = status.unwrap_or(capsule_sys::process::ExitStatus::Signaled(libc::SIGKILL));
    let (exit_code, text) = end_fields(status);
    // E2B's SDKs use `error` as the message of their exit exception.
    let error = (exit_code != 0).then(|| text.clone());
    proc.finish(EndEvent {
        exit_code,
        exited: true,
        status: text,
        error,
    })
    .await;
}

async fn read_opt(pipe: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> Option<usize> {
    use tokio::io::AsyncReadExt;
    match pipe {
        Some(p) => p.read(buf).await.ok(),
        None => None,
    }
}
