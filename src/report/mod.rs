//! How a tool talks to its user: nothing at all (`-q`), plain lines on
//! stderr (not a terminal), or a progress bar (stderr is a terminal).

pub mod findings;
pub mod phases;

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Quiet,
    Plain,
    Terminal,
}

pub struct Reporter {
    mode: Mode,
    bar: Mutex<Option<ProgressBar>>,
    /// (position, length) of the last bar when it finished.
    finished: Mutex<Option<(u64, u64)>>,
}

impl Reporter {
    /// Quiet when asked; otherwise a progress bar if stderr is a terminal.
    pub fn new(quiet: bool) -> Reporter {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Reporter::with_mode(mode)
    }

    pub fn with_mode(mode: Mode) -> Reporter {
        Reporter {
            mode,
            bar: Mutex::new(None),
            finished: Mutex::new(None),
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.mode == Mode::Quiet
    }

    /// A `KEY=value` fact on stdout (suppressed only by quiet).
    pub fn fact(&self, line: &str) {
        if !self.is_quiet() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// A title, sub-title, warning or error line on stderr.
    pub fn line(&self, line: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Plain => eprintln!("{line}"),
            Mode::Terminal => match &*self.bar.lock().unwrap() {
                Some(bar) => bar.println(line),
                None => eprintln!("{line}"),
            },
        }
    }

    /// Starts a progress bar over `total` units (terminal mode only).
    pub fn start_progress(&self, title: &str, total: u64) -> Progress {
        if self.mode != Mode::Terminal {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {percent}% ETA {left}")
                .unwrap()
                .with_key(
                    "left",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let len = state.len().unwrap_or(0);
                        let _ = w.write_str(&time_left(state.elapsed(), state.pos(), len));
                    },
                )
                .progress_chars("=> "),
        );
        bar.set_message(title.to_string());
        *self.bar.lock().unwrap() = Some(bar.clone());
        Progress { bar: Some(bar) }
    }

    pub fn finish_progress(&self) {
        if let Some(bar) = self.bar.lock().unwrap().take() {
            *self.finished.lock().unwrap() = Some((bar.position(), bar.length().unwrap_or(0)));
            bar.finish_and_clear();
        }
    }

    /// Where the last bar stood when it finished, against its length
    /// (tests hold the bar to the work with it).
    pub fn finished_progress(&self) -> Option<(u64, u64)> {
        *self.finished.lock().unwrap()
    }
}

/// A handle worker threads advance.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn none() -> Progress {
        Progress { bar: None }
    }

    #[inline]
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
}

/// The time left when `pos` of `len` units took `elapsed`, at the mean
/// rate since the start: steadier than a recent rate, which swings with
/// each burst of cold reads. "--" until there is enough to go on (half a
/// second and 1 % of the work), so the first figure shown is sane.
pub fn time_left(elapsed: Duration, pos: u64, len: u64) -> String {
    if pos >= len {
        return "0s".into();
    }
    if elapsed < Duration::from_millis(500) || pos.saturating_mul(100) < len {
        return "--".into();
    }
    let secs = (elapsed.as_secs_f64() * (len - pos) as f64 / pos as f64).ceil() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_waits_for_enough_work_then_extrapolates_the_mean_rate() {
        let ms = Duration::from_millis;
        // Too early, or too little done: no figure yet.
        assert_eq!(time_left(ms(100), 500, 1000), "--");
        assert_eq!(time_left(ms(2000), 9, 1000), "--");
        // Half done in a second: a second to go.
        assert_eq!(time_left(ms(1000), 500, 1000), "1s");
        assert_eq!(time_left(ms(1000), 10, 1000), "1m39s");
        assert_eq!(time_left(ms(60_000), 10, 1000), "1h39m");
        assert_eq!(time_left(ms(10), 1000, 1000), "0s");
        assert_eq!(time_left(ms(10), 1200, 1000), "0s");
        assert_eq!(time_left(ms(700), 0, 0), "0s");
    }
}
