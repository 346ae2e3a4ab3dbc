//! `capsule-fuzz`: runs the fuzz targets for longer than the tests do.
//!
//! ```sh
//! cargo run --release -p capsule-fuzz -- --list
//! cargo run --release -p capsule-fuzz -- --secs 600 sandbox_path e2b_signed_url
//! CAPSULE_FUZZ_SEED=42 cargo run --release -p capsule-fuzz      # every target, 5 s each
//! ```

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let mut secs = None;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => {
                for t in capsule_fuzz::targets::all() {
                    println!("{:<18} {}", t.name, t.about);
                }
                return ExitCode::SUCCESS;
            }
            "--secs" => match args.next().and_then(|s| s.parse::<f64>().ok()) {
                Some(s) if s > 0.0 => secs = Some(Duration::from_secs_f64(s)),
                _ => {
                    eprintln!("--secs needs a positive number of seconds");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!(
                    "usage: capsule-fuzz [--list] [--secs N] [TARGET...]  (CAPSULE_FUZZ_SECS, CAPSULE_FUZZ_SEED)"
                );
                return ExitCode::SUCCESS;
            }
            name => names.push(name.to_owned()),
        }
    }
    let budget = secs.unwrap_or_else(|| capsule_fuzz::budget(Duration::from_secs(5)));
    let seed = capsule_fuzz::seed();
    let targets: Vec<_> = capsule_fuzz::targets::all()
        .into_iter()
        .filter(|t| names.is_empty() || names.iter().any(|n| n == t.name))
        .collect();
    if let Some(unknown) = names
        .iter()
        .find(|n| !targets.iter().any(|t| t.name == n.as_str()))
    {
        eprintln!("no fuzz target named {unknown}; --list shows them");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for t in &targets {
        match capsule_fuzz::fuzz(t, budget, seed) {
            Ok(r) => println!(
                "ok    {:<18} {:>9} inputs in {:>5.1}s, {} outcomes, corpus {}",
                r.target,
                r.iterations,
                r.elapsed.as_secs_f64(),
                r.outcomes,
                r.corpus
            ),
            Err(f) => {
                println!("FAIL  {f}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
