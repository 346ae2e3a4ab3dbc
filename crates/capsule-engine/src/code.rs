//! `runCode`: code in the sandbox's stateful kernels (the agent's code
//! interpreter), collected into one result.

use std::time::Instant;

use bytes::Bytes;
use capsule_api::sandbox::{CodeError, RunCodeParams, RunCodeResult};
use capsule_api::{ApiError, ErrorKind};
use capsule_protocol::Code;
use capsule_protocol::client::ClientError;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::engine::{Engine, validate_env};
use crate::errors::from_agent;
use crate::exec::Capped;
use crate::tenancy::Principal;

/// What one run has produced so far.
struct Collected {
    stdout: Capped,
    stderr: Capped,
    results: Vec<serde_json::Map<String, Value>>,
    /// Bytes of rich results kept; past the output limit they are dropped.
    result_bytes: usize,
    error: Option<CodeError>,
    execution_count: Option<u64>,
    finished: bool,
}

impl Collected {
    fn take(&mut self, line: &[u8], limit: usize) {
        let Ok(Value::Object(mut event)) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let text = |e: &serde_json::Map<String, Value>, k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match event.get("type").and_then(Value::as_str) {
            Some("stdout") => self.stdout.push(text(&event, "text").as_bytes()),
            Some("stderr") => self.stderr.push(text(&event, "text").as_bytes()),
            Some("result") => {
                event.remove("type");
                let size = serde_json::to_vec(&event).map_or(0, |v| v.len());
                if self.result_bytes + size <= limit {
                    self.result_bytes += size;
                    self.results.push(event);
                } else {
                    self.stderr.push(
                        b"[capsule: a result was dropped: the results passed the output limit]\n",
                    );
                }
            }
            Some("error") => {
                self.error = Some(CodeError {
                    name: text(&event, "name"),
                    value: text(&event, "value"),
                    traceback: text(&event, "traceback"),
                })
            }
            Some("number_of_executions") => {
                self.execution_count = event.get("execution_count").and_then(Value::as_u64)
            }
            Some("end_of_execution") => self.finished = true,
            _ => {}
        }
    }
}

impl Engine {
    pub async fn run_code_in_context(
        &self,
        who: &Principal,
        p: RunCodeParams,
    ) -> Result<RunCodeResult, ApiError> {
        let id = p.id;
        let result = self.run_in_context_checked(who, p).await;
        self.audit(who, "sandbox.v1.runCode", Some(id.as_str()), &result);
        result
    }

    async fn run_in_context_checked(
        &self,
        who: &Principal,
        p: RunCodeParams,
    ) -> Result<RunCodeResult, ApiError> {
        validate_env(&p.env, "env")?;
        let timeout = self.exec_timeout(p.timeout_ms)?;
        if p.language.is_some() && p.context_id.is_some() {
            return Err(ApiError::invalid_params(
                "give either `language` or `context_id`, not both",
            ));
        }
        let live = self.usable(who, p.id).await?;
        let started = Instant::now();
        let request = json!({
            "code": p.code,
            "language": p.language,
            "context_id": p.context_id,
            "env_vars": p.env,
        });
        let resp = live
            .agent
            .execute_code(&request)
            .await
            .map_err(|e| match e {
                ClientError::Connect(c) if c.code == Code::NotFound => {
                    ApiError::invalid_params(c.message)
                        .with_detail("context_id", p.context_id.clone().unwrap_or_default())
                }
                ClientError::Connect(c) if c.code == Code::InvalidArgument => {
                    ApiError::invalid_params(c.message)
                }
                other => from_agent(other),
            })?;
        let limit = self.config.output_limit_bytes;
        let mut got = Collected {
            stdout: Capped::new(limit),
            stderr: Capped::new(limit),
            results: Vec::new(),
            result_bytes: 0,
            error: None,
            execution_count: None,
            finished: false,
        };
        let mut body = resp.into_body();
        let mut pending: Vec<u8> = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut timed_out = false;
        while !got.finished {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    // Dropping the response closes the connection: the agent
                    // interrupts the run.
                    timed_out = true;
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    // Most likely the sandbox ended under the run: say that.
                    self.running(p.id)?;
                    return Err(ApiError::new(
                        ErrorKind::Unavailable,
                        format!("the run's output stream broke: {e}"),
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data): Result<Bytes, _> = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(at) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=at).collect();
                got.take(&line[..line.len() - 1], limit);
            }
        }
        if !got.finished && !timed_out {
            self.running(p.id)?;
        }
        let (stdout, stdout_truncated) = got.stdout.text();
        let (stderr, stderr_truncated) = got.stderr.text();
        Ok(RunCodeResult {
            stdout,
            stderr,
            results: got.results,
            error: got.error,
            execution_count: got.execution_count,
            timed_out,
            duration_ms: started.elapsed().as_millis() as u64,
            stdout_truncated,
            stderr_truncated,
        })
    }
}
