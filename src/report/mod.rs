//! How a tool talks to its user: nothing at all (`-q`), plain lines on
//! stderr (not a terminal), or a progress bar (stderr is a terminal).

pub mod findings;
pub mod phases;

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Quiet,
    Plain,
    Terminal,
}

pub struct Reporter {
    mode: Mode,
    bar: Mutex<Option<ProgressBar>>,
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
            ProgressStyle::with_template("{msg} [{bar:40}] {percent}% ETA {eta}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_message(title.to_string());
        *self.bar.lock().unwrap() = Some(bar.clone());
        Progress { bar: Some(bar) }
    }

    pub fn finish_progress(&self) {
        if let Some(bar) = self.bar.lock().unwrap().take() {
            bar.finish_and_clear();
        }
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
