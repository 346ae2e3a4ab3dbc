//! Medians and percentiles of timings, and sustained rates.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub runs: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
}

/// Creates sustained by concurrent clients over a fixed time.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    pub clients: usize,
    pub seconds: f64,
    pub creates: usize,
    pub per_second: f64,
    /// Latency of each client's create (and, for the alternatives, run).
    pub latency: Summary,
}

impl Throughput {
    pub fn new(clients: usize, elapsed: Duration, samples: &[Duration]) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            clients,
            seconds,
            creates: samples.len(),
            per_second: samples.len() as f64 / seconds.max(f64::EPSILON),
            latency: summarize(samples),
        }
    }
}

/// `runs` timed calls of `f`.
pub fn sample(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[Duration]) -> Summary {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    Summary {
        runs: ms.len(),
        p50_ms: percentile(&ms, 50.0),
        p99_ms: percentile(&ms, 99.0),
        mean_ms: if ms.is_empty() {
            f64::NAN
        } else {
            ms.iter().sum::<f64>() / ms.len() as f64
        },
        min_ms: ms.first().copied().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let sum = summarize(&s);
        assert_eq!(sum.p50_ms, 50.0);
        assert_eq!(sum.p99_ms, 99.0);
        assert_eq!(sum.min_ms, 1.0);
        let one = summarize(&[Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn rate_over_elapsed_time() {
        let t = Throughput::new(8, Duration::from_secs(2), &[Duration::from_millis(5); 500]);
        assert_eq!((t.creates, t.per_second), (500, 250.0));
    }
}
