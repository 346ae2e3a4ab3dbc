//! Fuzzing on stable Rust: every parser of untrusted input gets a target,
//! run as a seeded mutation loop for a bounded time. No libFuzzer, no
//! nightly: a corpus of valid inputs, byte and token mutations, splicing,
//! and a small feedback loop that keeps inputs reaching a new outcome.
//!
//! Each target asserts more than "no panic": a resolved sandbox path never
//! climbs above the root, `decode(encode(x)) == x` for the framings, and
//! the layers that read the same input agree on what it says.
//!
//! `CAPSULE_FUZZ_SECS` sets the time per target (default 5 s),
//! `CAPSULE_FUZZ_SEED` the seed (default: from the clock; printed on
//! failure so a run can be repeated).

mod mutate;
pub mod targets;

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

pub use mutate::Rng;

/// One fuzz target: a parser, its seed corpus, tokens worth splicing in,
/// and the function that runs one input and checks the invariants.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub dictionary: &'static [&'static [u8]],
    /// Runs one input: a coarse signature of what happened (inputs with a
    /// new signature join the corpus), or the invariant it broke.
    pub run: fn(&[u8]) -> Result<u64, String>,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    pub iterations: u64,
    pub corpus: usize,
    pub outcomes: usize,
    pub elapsed: Duration,
}

/// An input that broke an invariant or panicked, shrunk where possible.
#[derive(Debug, Clone)]
pub struct Failure {
    pub target: &'static str,
    pub seed: u64,
    pub iteration: u64,
    pub input: Vec<u8>,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz target {} failed at iteration {} (CAPSULE_FUZZ_SEED={}):\n  {}\n  input ({} bytes): b\"{}\"",
            self.target,
            self.iteration,
            self.seed,
            self.message,
            self.input.len(),
            self.input.escape_ascii()
        )
    }
}

/// The time per target: `CAPSULE_FUZZ_SECS`, or `default`.
pub fn budget(default: Duration) -> Duration {
    std::env::var("CAPSULE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(default)
}

/// The seed: `CAPSULE_FUZZ_SEED`, or one from the clock.
pub fn seed() -> u64 {
    std::env::var("CAPSULE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x5eed)
        })
}

/// The largest input the mutator builds.
const MAX_INPUT: usize = 1 << 16;
/// The most inputs kept in the corpus.
const MAX_CORPUS: usize = 4096;

thread_local! {
    /// Set while a target runs: its panics are caught and reported with
    /// the input, so the panic hook stays quiet about them.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, once, a panic hook that is silent on threads running a target
/// and defers to the previous hook everywhere else.
fn quiet_panics_in_targets() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs one input, turning a panic into a failure message.
fn run_one(target: &Target, input: &[u8]) -> Result<u64, String> {
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    QUIET.with(|q| q.set(false));
    match result {
        Ok(result) => result,
        Err(payload) => Err(format!("panicked: {}", panic_message(&payload))),
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

/// Fuzzes `target` for `budget`: the seeds first, then mutations of the
/// corpus until time runs out or an input fails.
pub fn fuzz(target: &Target, budget: Duration, seed: u64) -> Result<Report, Box<Failure>> {
    quiet_panics_in_targets();
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    let mut seen = HashSet::new();
    let mut iterations = 0u64;
    let fail = |iteration: u64, input: Vec<u8>, message: String| {
        let (input, message) = shrink(target, input, message);
        Box::new(Failure {
            target: target.name,
            seed,
            iteration,
            input,
            message,
        })
    };
    for input in corpus.clone() {
        iterations += 1;
        match run_one(target, &input) {
            Ok(sig) => {
                seen.insert(sig);
            }
            Err(message) => return Err(fail(iterations, input, message)),
        }
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let deadline = start + budget;
    loop {
        if iterations.is_multiple_of(64) && Instant::now() >= deadline {
            break;
        }
        iterations += 1;
        let base = &corpus[rng.below(corpus.len())];
        let other = &corpus[rng.below(corpus.len())];
        let input = mutate::mutate(&mut rng, base, other, target.dictionary, MAX_INPUT);
        match run_one(target, &input) {
            Ok(sig) => {
                if seen.insert(sig) && corpus.len() < MAX_CORPUS {
                    corpus.push(input);
                }
            }
            Err(message) => return Err(fail(iterations, input, message)),
        }
    }
    Ok(Report {
        target: target.name,
        seed,
        iterations,
        corpus: corpus.len(),
        outcomes: seen.len(),
        elapsed: start.elapsed(),
    })
}

/// Removes chunks of a failing input while it keeps failing, so the
/// report shows the smallest input found within a bounded effort.
fn shrink(target: &Target, mut input: Vec<u8>, mut message: String) -> (Vec<u8>, String) {
    let mut tries = 0;
    let mut chunk = input.len().div_ceil(2).max(1);
    while chunk >= 1 && tries < 4000 {
        let mut at = 0;
        let mut shrunk = false;
        while at < input.len() && tries < 4000 {
            tries += 1;
            let mut candidate = input.clone();
            candidate.drain(at..(at + chunk).min(input.len()));
            match run_one(target, &candidate) {
                Err(m) => {
                    input = candidate;
                    message = m;
                    shrunk = true;
                }
                Ok(_) => at += chunk,
            }
        }
        if !shrunk {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    (input, message)
}

/// Runs `name` for the configured budget and panics with the failure, for
/// the test harness.
pub fn run_target_test(name: &str) {
    let target = targets::all()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target named {name}"));
    match fuzz(&target, budget(Duration::from_secs(5)), seed()) {
        Ok(r) => println!(
            "{}: {} inputs in {:.1}s, {} outcomes, corpus {} (seed {})",
            r.target,
            r.iterations,
            r.elapsed.as_secs_f64(),
            r.outcomes,
            r.corpus,
            r.seed
        ),
        Err(f) => panic!("{f}"),
    }
}
