//! `capsule`: the server and its command-line client in one binary.

mod args;
mod client;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The sandbox launcher and remover run as `capsule __sandbox-*` in a
    // fresh, single-threaded process: dispatch before anything else starts.
    capsule_runtime::native::init::dispatch_helpers();
    let cli = args::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(cmd::run(cli));
    // A blocking read of standard input (`capsule shell`) must not hold up
    // the exit.
    runtime.shutdown_background();
    code
}
