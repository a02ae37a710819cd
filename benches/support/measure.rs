//! What the LXD benchmarks measure alike: their knobs, percentiles, and the floor every
//! runner latency is read against (a raw `lxc launch` on the same daemon, in the same run).

use crate::lxd_fixture::LxdFixture;
use std::time::Instant;

/// `name` from the environment, else `default`.
pub fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `p` percentile of sorted values (NaN for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Seconds of a raw `lxc launch` of one container: the median of five.
pub fn raw_launch_median(fx: &LxdFixture) -> f64 {
    let took = sorted(
        (0..5)
            .map(|i| {
                let name = format!("raw-{i}");
                let t = Instant::now();
                fx.lxc_ok(&["launch", "jammy", &name, "--ephemeral", "--quiet"]);
                let took = t.elapsed().as_secs_f64();
                let _ = fx.lxc(&["delete", "--force", &name]);
                took
            })
            .collect(),
    );
    took[took.len() / 2]
}
