//! `exec` and `run`.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use capsule_api::sandbox::{ExecResult, methods};
use serde_json::json;

use super::print_json;
use crate::args::{ExecArgs, RunArgs};
use crate::client::Client;
use crate::output::{parse_duration_ms, parse_pairs};

/// The exit code that mirrors how the command ended, as a shell would.
fn exit_code(r: &ExecResult) -> ExitCode {
    if r.timed_out {
        return ExitCode::from(124);
    }
    let code = match r.signal {
        Some(sig) => 128 + sig,
        None => r.exit_code,
    };
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

fn print_result(r: &ExecResult, json: bool) -> ExitCode {
    if json {
        print_json(r);
        return exit_code(r);
    }
    let _ = std::io::stdout().write_all(r.stdout.as_bytes());
    let _ = std::io::stderr().write_all(r.stderr.as_bytes());
    if r.stdout_truncated || r.stderr_truncated {
        eprintln!("capsule: output was cut at the server's limit");
    }
    if r.timed_out {
        eprintln!(
            "capsule: the command timed out after {} ms and was killed",
            r.duration_ms
        );
    }
    exit_code(r)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading standard input")?;
    String::from_utf8(input).map_err(|_| anyhow!("standard input is not UTF-8 text"))
}

pub async fn exec(client: &Client, a: ExecArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut params = json!({ "id": a.id, "cmd": a.cmd });
    if let Some(t) = &a.timeout {
        params["timeout_ms"] = json!(parse_duration_ms(t).map_err(|e| anyhow!("--timeout: {e}"))?);
    }
    if !a.env.is_empty() {
        params["env"] = json!(parse_pairs(&a.env, "--env").map_err(|e| anyhow!(e))?);
    }
    if let Some(cwd) = &a.cwd {
        params["cwd"] = json!(cwd);
    }
    if a.root {
        params["user"] = json!("root");
    }
    if a.stdin {
        params["stdin"] = json!(read_stdin()?);
    }
    let r: ExecResult = client.call(methods::EXEC, params).await?;
    Ok(print_result(&r, json))
}

pub async fn run(client: &Client, a: RunArgs, json: bool) -> anyhow::Result<ExitCode> {
    let code = if a.code == "-" { read_stdin()? } else { a.code };
    let mut params = json!({ "id": a.id, "code": code });
    if let Some(t) = &a.timeout {
        params["timeout_ms"] = json!(parse_duration_ms(t).map_err(|e| anyhow!("--timeout: {e}"))?);
    }
    let r: ExecResult = client.call(methods::RUN, params).await?;
    Ok(print_result(&r, json))
}
