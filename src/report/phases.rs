//! Phase timings for profiling: with `DMPD_PHASES=1` in the environment,
//! `phase("name")` prints the time since the process started to stderr.
//! Costs one relaxed load otherwise. Benchmarks and profiling use it to
//! see where a long run spends its time without rebuilding.

use std::sync::LazyLock;
use std::time::Instant;

static START: LazyLock<Instant> = LazyLock::new(Instant::now);
static ENABLED: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("DMPD_PHASES").is_some_and(|v| v == "1"));

/// Starts the clock; call first thing in `main`.
pub fn start() {
    LazyLock::force(&START);
    LazyLock::force(&ENABLED);
}

/// Notes that `name` has been reached.
pub fn phase(name: &str) {
    if *ENABLED {
        eprintln!("phase {:>9.3} s  {name}", START.elapsed().as_secs_f64());
    }
}
