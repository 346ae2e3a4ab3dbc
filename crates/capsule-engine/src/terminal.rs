//! Interactive terminals: a login shell on a pseudo-terminal, driven by a
//! front door (the WebSocket at `/terminal/{id}`, `capsule shell`).

use std::time::Duration;

use capsule_api::{ApiError, SandboxId};
use capsule_protocol::client::{AgentClient, CallOptions, ClientError, MessageStream};
use capsule_protocol::paths;
use capsule_protocol::process::{
    Empty, EventMessage, ProcessConfig, ProcessInput, ProcessSelector, Pty, PtySize,
    SendInputRequest, SendSignalRequest, Signal, StartRequest, UpdateRequest,
};

use crate::engine::Engine;
use crate::errors::from_agent;
use crate::tenancy::Principal;

/// A running terminal session.
pub struct Terminal {
    pub pid: u32,
    agent: AgentClient,
    events: MessageStream<EventMessage>,
}

/// What the shell printed, or how it ended.
pub enum TerminalEvent {
    Output(Vec<u8>),
    Exited { code: i32, status: String },
}

fn check_size(cols: u32, rows: u32) -> Result<(), ApiError> {
    if !(1..=4096).contains(&cols) || !(1..=4096).contains(&rows) {
        return Err(ApiError::invalid_params(format!(
            "terminal size {cols}x{rows} is out of range (1..=4096 columns and rows)"
        )));
    }
    Ok(())
}

impl Engine {
    /// Starts a login shell for the sandbox user on a `cols` x `rows` terminal.
    pub async fn open_terminal(
        &self,
        who: &Principal,
        id: SandboxId,
        cols: u32,
        rows: u32,
    ) -> Result<Terminal, ApiError> {
        let result = self.open_terminal_checked(who, id, cols, rows).await;
        self.audit(who, "terminal", Some(id.as_str()), &result);
        result
    }

    async fn open_terminal_checked(
        &self,
        who: &Principal,
        id: SandboxId,
        cols: u32,
        rows: u32,
    ) -> Result<Terminal, ApiError> {
        check_size(cols, rows)?;
        let live = self.usable(who, id).await?;
        let req = StartRequest {
            process: ProcessConfig {
                cmd: "/bin/bash".into(),
                args: vec!["-l".into()],
                envs: [("TERM".to_owned(), "xterm-256color".to_owned())].into(),
                cwd: Some(crate::paths::WORKSPACE.into()),
            },
            pty: Some(Pty {
                size: PtySize { cols, rows },
            }),
            tag: None,
            stdin: None,
        };
        let mut events = live
            .agent
            .server_stream::<_, EventMessage>(
                paths::PROCESS_START,
                &req,
                &CallOptions::user("user"),
            )
            .await
            .map_err(from_agent)?;
        let pid = match events.next().await {
            Some(Ok(EventMessage {
                event: capsule_protocol::process::ProcessEvent::Start(s),
            })) => s.pid,
            Some(Err(e)) => return Err(from_agent(e)),
            _ => return Err(ApiError::internal("the terminal did not start")),
        };
        Ok(Terminal {
            pid,
            agent: live.agent.clone(),
            events,
        })
    }
}

impl Terminal {
    /// The next output chunk or the end; `None` when the stream is over.
    pub async fn next(&mut self) -> Option<Result<TerminalEvent, ApiError>> {
        use capsule_protocol::process::{DataEvent, ProcessEvent};
        loop {
            match self.events.next().await? {
                Ok(EventMessage { event }) => match event {
                    ProcessEvent::Data(
                        DataEvent::Pty(b) | DataEvent::Stdout(b) | DataEvent::Stderr(b),
                    ) => {
                        return Some(Ok(TerminalEvent::Output(b)));
                    }
                    ProcessEvent::End(e) => {
                        return Some(Ok(TerminalEvent::Exited {
                            code: e.exit_code,
                            status: e.status,
                        }));
                    }
                    _ => {}
                },
                Err(e) => return Some(Err(from_agent(e))),
            }
        }
    }

    /// A handle for sending input and resizing while `next` is awaited elsewhere.
    pub fn control(&self) -> TerminalControl {
        TerminalControl {
            pid: self.pid,
            agent: self.agent.clone(),
        }
    }
}

/// Sends keyboard input and size changes to a terminal.
#[derive(Clone)]
pub struct TerminalControl {
    pid: u32,
    agent: AgentClient,
}

impl TerminalControl {
    pub async fn input(&self, bytes: Vec<u8>) -> Result<(), ApiError> {
        self.agent
            .unary::<_, Empty>(
                paths::PROCESS_SEND_INPUT,
                &SendInputRequest {
                    process: ProcessSelector::Pid(self.pid),
                    input: ProcessInput::Pty(bytes),
                },
                &CallOptions::default(),
            )
            .await
            .map(|_| ())
            .map_err(from_agent)
    }

    pub async fn resize(&self, cols: u32, rows: u32) -> Result<(), ApiError> {
        check_size(cols, rows)?;
        self.agent
            .unary::<_, Empty>(
                paths::PROCESS_UPDATE,
                &UpdateRequest {
                    process: ProcessSelector::Pid(self.pid),
                    pty: Some(Pty {
                        size: PtySize { cols, rows },
                    }),
                },
                &CallOptions::default(),
            )
            .await
            .map(|_| ())
            .map_err(from_agent)
    }

    /// Ends the shell and everything it started (the client went away).
    pub async fn close(&self) {
        let req = SendSignalRequest {
            process: ProcessSelector::Pid(self.pid),
            signal: Signal::Sigkill,
        };
        let opts = CallOptions::default();
        let fut = self
            .agent
            .unary::<_, Empty>(paths::PROCESS_SEND_SIGNAL, &req, &opts);
        match tokio::time::timeout(Duration::from_secs(5), fut).await {
            Ok(Ok(_)) | Ok(Err(ClientError::Connect(_))) | Err(_) => {}
            Ok(Err(e)) => tracing::debug!("closing a terminal: {e}"),
        }
    }
}
