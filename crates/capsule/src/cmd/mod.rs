//! One module per command; `run` maps every failure to a message and an
//! exit code in one place.

mod admin;
mod cp;
mod exec;
mod mcp;
mod sandbox;
mod serve;
mod shell;
mod state;

use std::process::ExitCode;

use crate::args::{Cli, Command};
use crate::client::{CallError, Client};

/// Exit code for failures of capsule itself (not of a command it ran).
pub const EXIT_FAILURE: u8 = 1;

pub async fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Mcp(args) => mcp::run(cli.url.as_deref(), cli.api_key.clone(), args).await,
        other => match Client::new(
            cli.url.as_deref().unwrap_or(crate::args::DEFAULT_URL),
            cli.api_key.clone(),
        ) {
            Ok(client) => dispatch(&client, other, json).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e, json);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

async fn dispatch(client: &Client, command: Command, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(_) | Command::Mcp(_) => unreachable!("handled before"),
        Command::Create(a) => sandbox::create(client, a, json).await,
        Command::Exec(a) => exec::exec(client, a, json).await,
        Command::Run(a) => exec::run(client, a, json).await,
        Command::Shell(a) => shell::run(client, a).await,
        Command::Cp(a) => cp::run(client, a, json).await,
        Command::Ls(a) => sandbox::ls(client, a, json).await,
        Command::Rm(a) => sandbox::rm(client, a, json).await,
        Command::Inspect(a) => sandbox::inspect(client, a, json).await,
        Command::Timeout(a) => sandbox::timeout(client, a, json).await,
        Command::Templates => sandbox::templates(client, json).await,
        Command::Pause(a) => state::pause(client, a, false, json).await,
        Command::Resume(a) => state::pause(client, a, true, json).await,
        Command::Snapshot(a) => state::snapshot(client, a, json).await,
        Command::Snapshots(c) => state::snapshots(client, c, json).await,
        Command::Fork(a) => state::fork(client, a, json).await,
        Command::Volume(c) => state::volume(client, c, json).await,
        Command::Stats(a) => state::stats(client, a, json).await,
        Command::Pools(c) => state::pools(client, c, json).await,
        Command::Keys(c) => admin::keys(client, c, json).await,
        Command::Tenants(c) => admin::tenants(client, c, json).await,
        Command::Audit(a) => admin::audit(client, a, json).await,
    }
}

fn report(e: &anyhow::Error, json: bool) {
    let api = e.downcast_ref::<CallError>().and_then(|c| match c {
        CallError::Api(api) => Some(api),
        CallError::Other(_) => None,
    });
    if json {
        let value = match api {
            Some(api) => {
                serde_json::json!({ "error": { "kind": api.kind.as_str(), "message": api.message } })
            }
            None => {
                serde_json::json!({ "error": { "kind": "client", "message": format!("{e:#}") } })
            }
        };
        eprintln!("{value}");
    } else {
        eprintln!("error: {e:#}");
    }
}

/// Prints a value as JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("values serialize")
    );
}
