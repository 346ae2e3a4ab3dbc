//! `exec` and `run`: start a process through the agent, feed stdin, collect
//! capped output, and report how it ended.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capsule_api::sandbox::{CommandSpec, ExecParams, ExecResult, RunAs, RunParams};
use capsule_api::{ApiError, ErrorKind, SandboxId};
use capsule_protocol::Code;
use capsule_protocol::client::{AgentClient, CallOptions, ClientError};
use capsule_protocol::paths;
use capsule_protocol::process::{
    CloseStdinRequest, DataEvent, Empty, EventMessage, ProcessConfig, ProcessEvent, ProcessInput,
    ProcessSelector, SendInputRequest, StartRequest,
};

use crate::engine::{Engine, validate_env};
use crate::errors::from_agent;
use crate::paths::sandbox_path;
use crate::tenancy::Principal;

/// Output of one stream, cut at a limit.
pub(crate) struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl Capped {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            truncated: false,
        }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    pub(crate) fn text(self) -> (String, bool) {
        (
            String::from_utf8_lossy(&self.bytes).into_owned(),
            self.truncated,
        )
    }
}

/// A process to run to completion.
pub(crate) struct Job {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    pub stdin: Option<Vec<u8>>,
    pub user: RunAs,
    pub timeout: Duration,
}

impl Engine {
    pub(crate) fn exec_timeout(&self, timeout_ms: Option<u64>) -> Result<Duration, ApiError> {
        let ms = timeout_ms.unwrap_or(self.config.default_exec_timeout_ms);
        if ms == 0 || ms > self.config.max_exec_timeout_ms {
            return Err(ApiError::invalid_params(format!(
                "`timeout_ms` {ms} is out of range: it must be between 1 and {}",
                self.config.max_exec_timeout_ms
            )));
        }
        Ok(Duration::from_millis(ms))
    }

    pub async fn exec(&self, who: &Principal, p: ExecParams) -> Result<ExecResult, ApiError> {
        let id = p.id;
        let result = self.exec_checked(who, p).await;
        self.audit(who, "sandbox.v1.exec", Some(id.as_str()), &result);
        result
    }

    async fn exec_checked(&self, who: &Principal, p: ExecParams) -> Result<ExecResult, ApiError> {
        validate_env(&p.env, "env")?;
        let job = Job {
            argv: p.cmd.to_argv(),
            env: p.env,
            cwd: sandbox_path(p.cwd.as_deref().unwrap_or(crate::paths::WORKSPACE))?,
            stdin: p.stdin.map(String::into_bytes),
            user: p.user.unwrap_or_default(),
            timeout: self.exec_timeout(p.timeout_ms)?,
        };
        self.run_job(who, p.id, job).await
    }

    pub async fn run_code(&self, who: &Principal, p: RunParams) -> Result<ExecResult, ApiError> {
        let id = p.id;
        let result = self.run_checked(who, p).await;
        self.audit(who, "sandbox.v1.run", Some(id.as_str()), &result);
        result
    }

    async fn run_checked(&self, who: &Principal, p: RunParams) -> Result<ExecResult, ApiError> {
        validate_env(&p.env, "env")?;
        let live = self.usable(who, p.id).await?;
        let template = self.template(&live.record().template)?;
        let (argv, code_stdin) = template.run.command(&p.code);
        if code_stdin.is_some() && p.stdin.is_some() {
            return Err(ApiError::invalid_params(format!(
                "template {:?} reads the code from stdin, so `stdin` cannot be given",
                template.name
            )));
        }
        let job = Job {
            argv,
            env: p.env,
            cwd: crate::paths::WORKSPACE.to_owned(),
            stdin: code_stdin.or(p.stdin).map(String::into_bytes),
            user: RunAs::User,
            timeout: self.exec_timeout(p.timeout_ms)?,
        };
        self.run_job(who, p.id, job).await
    }

    /// Runs a command given as a [`CommandSpec`] (for front doors other than JSON-RPC).
    pub async fn exec_simple(
        &self,
        who: &Principal,
        id: SandboxId,
        cmd: CommandSpec,
        timeout_ms: Option<u64>,
    ) -> Result<ExecResult, ApiError> {
        self.exec(
            who,
            ExecParams {
                id,
                cmd,
                timeout_ms,
                env: BTreeMap::new(),
                cwd: None,
                stdin: None,
                user: None,
            },
        )
        .await
    }

    pub(crate) async fn run_job(
        &self,
        who: &Principal,
        id: SandboxId,
        job: Job,
    ) -> Result<ExecResult, ApiError> {
        let live = self.usable(who, id).await?;
        let result = collect(&live.agent, job, self.config.output_limit_bytes).await;
        match result {
            // The agent vanished: most likely the sandbox expired or was
            // deleted while the command ran; say that instead.
            Err(e) if e.kind == ErrorKind::Unavailable => match self.running(id) {
                Ok(_) => Err(e),
                Err(gone) => Err(gone),
            },
            other => other,
        }
    }
}

/// What happened when the process could not even start.
fn start_failure(argv0: &str, err: ClientError, started: Instant) -> Result<ExecResult, ApiError> {
    let code = match &err {
        ClientError::Connect(c) if c.code == Code::NotFound => 127,
        ClientError::Connect(c) if c.code == Code::PermissionDenied => 126,
        _ => return Err(from_agent(err)),
    };
    let message = match err {
        ClientError::Connect(c) => c.message,
        _ => unreachable!("matched above"),
    };
    Ok(ExecResult {
        stdout: String::new(),
        stderr: format!("capsule: {argv0}: {message}\n"),
        exit_code: code,
        signal: None,
        timed_out: false,
        duration_ms: started.elapsed().as_millis() as u64,
        stdout_truncated: false,
        stderr_truncated: false,
    })
}

pub(crate) async fn collect(
    agent: &AgentClient,
    job: Job,
    limit: usize,
) -> Result<ExecResult, ApiError> {
    let started = Instant::now();
    let (cmd, args) = job
        .argv
        .split_first()
        .ok_or_else(|| ApiError::invalid_params("`cmd` is empty"))?;
    let req = StartRequest {
        process: ProcessConfig {
            cmd: cmd.clone(),
            args: args.to_vec(),
            envs: job.env,
            cwd: Some(job.cwd),
        },
        pty: None,
        tag: None,
        stdin: Some(job.stdin.is_some()),
    };
    let opts = CallOptions {
        user: Some(job.user.username().to_owned()),
        timeout: Some(job.timeout),
    };
    let mut stream = match agent
        .server_stream::<_, EventMessage>(paths::PROCESS_START, &req, &opts)
        .await
    {
        Ok(s) => s,
        Err(e) => return start_failure(cmd, e, started),
    };
    let mut stdout = Capped::new(limit);
    let mut stderr = Capped::new(limit);
    let mut end = None;
    let mut timed_out = false;
    // The agent enforces the deadline; this guard only covers an agent that
    // stopped answering altogether.
    let guard = tokio::time::sleep(job.timeout + Duration::from_secs(15));
    tokio::pin!(guard);
    let mut stdin = job.stdin;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = &mut guard => {
                return Err(ApiError::new(ErrorKind::Timeout, "the sandbox's agent stopped answering during the command"));
            }
        };
        match msg {
            None => break,
            Some(Ok(EventMessage { event })) => match event {
                ProcessEvent::Start(s) => {
                    if let Some(input) = stdin.take() {
                        feed_stdin(agent.clone(), s.pid, input);
                    }
                }
                ProcessEvent::Data(DataEvent::Stdout(b) | DataEvent::Pty(b)) => stdout.push(&b),
                ProcessEvent::Data(DataEvent::Stderr(b)) => stderr.push(&b),
                ProcessEvent::End(e) => end = Some(e),
                ProcessEvent::Keepalive(_) => {}
            },
            Some(Err(ClientError::Connect(c))) if c.code == Code::DeadlineExceeded => {
                timed_out = true
            }
            Some(Err(e)) if end.is_none() => {
                // An error before the first event is a start failure.
                if stdout.bytes.is_empty() && stderr.bytes.is_empty() {
                    return start_failure(cmd, e, started);
                }
                return Err(from_agent(e));
            }
            Some(Err(_)) => break,
        }
    }
    let end = end.ok_or_else(|| {
        ApiError::new(
            ErrorKind::Unavailable,
            "the command's output ended without an exit status",
        )
    })?;
    let signal = end.signal();
    let (stdout, stdout_truncated) = stdout.text();
    let (stderr, stderr_truncated) = stderr.text();
    Ok(ExecResult {
        stdout,
        stderr,
        exit_code: if signal.is_some() { -1 } else { end.exit_code },
        signal,
        timed_out,
        duration_ms: started.elapsed().as_millis() as u64,
        stdout_truncated,
        stderr_truncated,
    })
}

/// Writes stdin in the background and closes it, so a process that does
/// not read it cannot stall the collection of its output.
fn feed_stdin(agent: AgentClient, pid: u32, input: Vec<u8>) {
    tokio::spawn(async move {
        let sel = ProcessSelector::Pid(pid);
        for chunk in input.chunks(1 << 20) {
            let req = SendInputRequest {
                process: sel.clone(),
                input: ProcessInput::Stdin(chunk.to_vec()),
            };
            if agent
                .unary::<_, Empty>(paths::PROCESS_SEND_INPUT, &req, &CallOptions::default())
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = agent
            .unary::<_, Empty>(
                paths::PROCESS_CLOSE_STDIN,
                &CloseStdinRequest { process: sel },
                &CallOptions::default(),
            )
            .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_keeps_the_first_bytes_and_flags_the_cut() {
        let mut c = Capped::new(5);
        c.push(b"abc");
        c.push(b"defgh");
        c.push(b"ij");
        let (text, cut) = c.text();
        assert_eq!(text, "abcde");
        assert!(cut);
        let mut c = Capped::new(5);
        c.push(b"abcde");
        assert_eq!(c.text(), ("abcde".into(), false));
    }

    #[test]
    fn utf8_split_across_chunks_survives() {
        let mut c = Capped::new(100);
        let snow = "☃".as_bytes();
        c.push(&snow[..1]);
        c.push(&snow[1..]);
        assert_eq!(c.text().0, "☃");
    }
}
