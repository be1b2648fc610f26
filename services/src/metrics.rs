//! In-process counters of this node, exposed with the tables' figures on `/metrics` in the
//! Prometheus text format (see [`crate::http`]).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

/// A histogram with fixed upper bounds, cumulative as Prometheus wants it.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then +Inf.
    counts: Vec<AtomicU64>,
    /// Sum of the observations, in millionths.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Adds one observation.
    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// This process's counters.
#[derive(Debug)]
pub struct Metrics {
    /// Workflows this node claimed from queues.
    pub claims: AtomicU64,
    /// Workflow executions started here (direct starts, children and claims).
    pub executions_started: AtomicU64,
    /// Workflow outcomes recorded here: SUCCESS, ERROR.
    pub outcomes: [AtomicU64; 2],
    /// Duration of steps and transactions that ran here (not replayed), seconds.
    pub step_seconds: Histogram,
    /// Requests (starts, checkpoints, outcomes) per group commit.
    pub commit_batch_size: Histogram,
    /// From enqueue to claim by this node, seconds.
    pub queue_wait_seconds: Histogram,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    claims: AtomicU64::new(0),
    executions_started: AtomicU64::new(0),
    outcomes: [AtomicU64::new(0), AtomicU64::new(0)],
    step_seconds: Histogram::new(&[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    ]),
    commit_batch_size: Histogram::new(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
    queue_wait_seconds: Histogram::new(&[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
    ]),
});

impl Metrics {
    /// Appends the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        counter(
            out,
            "dbos_claims_total",
            "Workflows this node claimed from queues.",
            self.claims.load(Ordering::Relaxed),
        );
        counter(
            out,
            "dbos_executions_started_total",
            "Workflow executions started on this node.",
            self.executions_started.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP dbos_outcomes_total Workflow outcomes recorded by this node, by status.\n\
             # TYPE dbos_outcomes_total counter"
        );
        for (status, c) in ["SUCCESS", "ERROR"].iter().zip(&self.outcomes) {
            let _ = writeln!(
                out,
                "dbos_outcomes_total{{status=\"{status}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        self.step_seconds.render(
            out,
            "dbos_step_duration_seconds",
            "Duration of the steps and transactions this node ran.",
        );
        self.commit_batch_size.render(
            out,
            "dbos_commit_batch_requests",
            "Starts, checkpoints and outcomes written per group commit.",
        );
        self.queue_wait_seconds.render(
            out,
            "dbos_queue_wait_seconds",
            "From enqueue to claim, for the workflows this node claimed.",
        );
        counter(
            out,
            "dbos_notifications_received_total",
            "Notifications (LISTEN) this process received.",
            dbos_kernel::notify::received(),
        );
    }
}

/// Appends one counter without labels.
fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(
            out.contains("x_count 4\n") && out.contains("x_sum 12.7\n"),
            "{out}"
        );
    }
}
