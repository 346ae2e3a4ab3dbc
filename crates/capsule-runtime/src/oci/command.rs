//! Running the OCI runtime's command line: every call has a time limit, and
//! every failure names the runtime, the command and what it printed.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::flavor::OciFlavor;

/// The most of a runtime's output quoted in an error.
const QUOTED_OUTPUT: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{runtime} could not be started for `{command}`")]
    Spawn {
        runtime: OciFlavor,
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{runtime}: `{command}` did not finish within {}s", timeout.as_secs())]
    Timeout {
        runtime: OciFlavor,
        command: String,
        timeout: Duration,
    },
    #[error("{runtime}: `{command}` {status}: {output}")]
    Failed {
        runtime: OciFlavor,
        command: String,
        status: String,
        output: String,
    },
}

impl CommandError {
    /// What the runtime printed, for recognising "no such container".
    pub fn output(&self) -> &str {
        match self {
            CommandError::Failed { output, .. } => output,
            _ => "",
        }
    }
}

/// One OCI runtime binary and the global flags every call carries.
#[derive(Debug, Clone)]
pub struct Cli {
    pub flavor: OciFlavor,
    pub path: PathBuf,
    pub global: Vec<String>,
    /// A program (and its arguments) the runtime runs under, e.g. a mount
    /// namespace of its own; empty to run the runtime directly.
    pub wrapper: Vec<String>,
}

impl Cli {
    fn command_line(&self, args: &[&str]) -> String {
        let mut words = self.wrapper.clone();
        words.push(self.path.display().to_string());
        words.extend(self.global.iter().cloned());
        words.extend(args.iter().map(|a| (*a).to_owned()));
        words.join(" ")
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(rest).arg(&self.path);
                cmd
            }
            None => tokio::process::Command::new(&self.path),
        };
        cmd.args(&self.global)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `args` and returns what it printed on stdout.
    pub async fn run(&self, args: &[&str], timeout: Duration) -> Result<String, CommandError> {
        let command = self.command_line(args);
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| CommandError::Spawn {
                runtime: self.flavor,
                command: command.clone(),
                source,
            })?;
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Err(_) => {
                return Err(CommandError::Timeout {
                    runtime: self.flavor,
                    command,
                    timeout,
                });
            }
            Ok(Err(source)) => {
                return Err(CommandError::Spawn {
                    runtime: self.flavor,
                    command,
                    source,
                });
            }
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if output.is_empty() {
            output = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        Err(CommandError::Failed {
            runtime: self.flavor,
            command,
            status: out.status.to_string(),
            output: tail(&output),
        })
    }

    /// Runs `args` with stdout and stderr appended to `log`. For commands
    /// whose children outlive them (`create` hands its stdio to the
    /// container): a pipe would stay open as long as the sandbox runs.
    pub async fn run_logged(
        &self,
        args: &[&str],
        timeout: Duration,
        log: &Path,
    ) -> Result<(), CommandError> {
        let command = self.command_line(args);
        let spawn_error = |source| CommandError::Spawn {
            runtime: self.flavor,
            command: command.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(spawn_error)?;
        let start = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut child = self
            .command(args)
            .stdout(file.try_clone().map_err(spawn_error)?)
            .stderr(file)
            .spawn()
            .map_err(spawn_error)?;
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Err(_) => {
                return Err(CommandError::Timeout {
                    runtime: self.flavor,
                    command,
                    timeout,
                });
            }
            Ok(Err(source)) => return Err(spawn_error(source)),
            Ok(Ok(status)) => status,
        };
        if status.success() {
            return Ok(());
        }
        Err(CommandError::Failed {
            runtime: self.flavor,
            command,
            status: status.to_string(),
            output: read_log_since(log, start),
        })
    }
}

/// The last part of `text`, at most [`QUOTED_OUTPUT`] bytes.
fn tail(text: &str) -> String {
    let max = QUOTED_OUTPUT as usize;
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// What was appended to `log` after offset `start` (its tail, trimmed).
pub fn read_log_since(log: &Path, start: u64) -> String {
    let Ok(mut file) = fs::File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = start.max(len.saturating_sub(QUOTED_OUTPUT));
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Cli {
        Cli {
            flavor: OciFlavor::Runc,
            path: "/bin/sh".into(),
            global: vec!["-c".into()],
            wrapper: vec![],
        }
    }

    #[tokio::test]
    async fn failures_name_the_runtime_the_command_and_its_output() {
        let err = sh()
            .run(&["echo oops >&2; exit 3"], Duration::from_secs(5))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("runc: `/bin/sh -c echo oops"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.ends_with("oops"), "{text}");
        assert_eq!(err.output(), "oops");
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_at_its_deadline() {
        let started = std::time::Instant::now();
        let err = sh()
            .run(&["sleep 30"], Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_spawn_error() {
        let cli = Cli {
            flavor: OciFlavor::Crun,
            path: "/nonexistent/crun".into(),
            global: vec![],
            wrapper: vec![],
        };
        let err = cli.run(&["state", "x"], Duration::from_secs(5)).await;
        let err = err.unwrap_err();
        assert!(matches!(err, CommandError::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent/crun state x"));
    }

    #[tokio::test]
    async fn logged_commands_quote_only_their_own_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        fs::write(&log, "earlier output\n").unwrap();
        let err = sh()
            .run_logged(&["echo broken; exit 1"], Duration::from_secs(5), &log)
            .await
            .unwrap_err();
        assert_eq!(err.output(), "broken");
        sh().run_logged(&["true"], Duration::from_secs(5), &log)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_wrapper_runs_the_runtime() {
        let cli = Cli {
            flavor: OciFlavor::Crun,
            path: "/bin/echo".into(),
            global: vec!["--root".into(), "/x".into()],
            wrapper: vec!["/usr/bin/env".into(), "-i".into()],
        };
        let out = cli.run(&["state", "id"], Duration::from_secs(5)).await;
        assert_eq!(out.unwrap(), "--root /x state id\n");
    }

    #[test]
    fn long_output_keeps_its_end() {
        let long = "x".repeat(10_000) + "the end";
        let t = tail(&long);
        assert!(t.len() <= QUOTED_OUTPUT as usize + 3);
        assert!(t.ends_with("the end"));
    }
}
