//! The one [`Progress`] every command prints through: plain lines on stderr, and on a
//! terminal a spinner while cargo compiles and a bar (resources done / total, with the latest
//! stack events beneath it) while CloudFormation works.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use deployer::cloud::cfn::{self, StackEvent, StackProgress};
use deployer::progress::Progress;
use deployer::verify::smoke::{CheckResult, SmokeProgress};
use indicatif::{ProgressBar, ProgressStyle};

use crate::target::secs;

/// Stack events shown under the bar.
const RECENT: usize = 4;

pub struct Console {
    prefix: &'static str,
    tty: bool,
    bar: Mutex<Option<ProgressBar>>,
    recent: Mutex<VecDeque<String>>,
}

impl Console {
    /// `prefix` starts every line (`deploy`, `build`, …).
    pub fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            tty: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// A line above the bar (or plain, without one).
    fn line(&self, text: &str) {
        let text = format!("{:<6} {text}", self.prefix);
        match self.bar.lock().ok().as_deref().and_then(Option::as_ref) {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Replaces the bar (spinner or resource bar); `None` clears it.
    fn set_bar(&self, bar: Option<ProgressBar>) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.take() {
                old.finish_and_clear();
            }
            *slot = bar;
        }
    }

    /// Clears whatever is on screen below the last line.
    pub fn finish(&self) {
        self.set_bar(None);
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.finish();
    }
}

fn event_line(e: &StackEvent) -> String {
    let mut s = format!("{:<32} {:<20} {}", e.logical_id, e.status, e.resource_type);
    if !e.reason.is_empty() && cfn::is_failed(&e.status) {
        s.push_str(&format!(" - {}", e.reason));
    }
    s
}

pub fn check_line(c: &CheckResult) -> String {
    let width = deployer::verify::smoke::CheckName::ALL
        .iter()
        .map(|n| n.as_str().len())
        .max()
        .unwrap_or(0);
    format!(
        "{} {:<width$} {:>8}  {}",
        if c.passed { "ok  " } else { "FAIL" },
        c.name.as_str(),
        secs(c.elapsed_ms),
        c.detail
    )
}

impl Progress for Console {
    fn step(&self, message: &str) {
        self.line(message);
    }

    fn function_step(&self, function: &str, message: &str) {
        self.line(&format!("{function:<9} {message}"));
    }

    fn compiled(&self, unit: &str, count: usize) {
        if !self.tty {
            if count.is_multiple_of(50) {
                self.line(&format!("compiled {count} units (last {unit})"));
            }
            return;
        }
        let mut slot = match self.bar.lock() {
            Ok(s) => s,
            Err(_) => return,
        };
        let bar = slot.get_or_insert_with(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        bar.set_message(format!("compiled {count} units, last {unit}"));
    }

    fn confirm(&self, question: &str) -> Option<bool> {
        if !(self.tty && std::io::stdin().is_terminal()) {
            return None;
        }
        self.set_bar(None);
        eprint!("{question} [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).ok()?;
        Some(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
    }
}

impl StackProgress for Console {
    fn begin(&self, total: usize) {
        if !self.tty {
            self.set_bar(None);
            return;
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} resources\n{msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        self.set_bar(Some(bar));
    }

    fn event(&self, e: &StackEvent, done: usize) {
        let line = event_line(e);
        let slot = self.bar.lock();
        let Some(bar) = slot.as_ref().ok().and_then(|s| s.as_ref()) else {
            drop(slot);
            self.line(&line);
            return;
        };
        if done as u64 > bar.length().unwrap_or(0) {
            bar.set_length(done as u64);
        }
        bar.set_position(done as u64);
        if let Ok(mut recent) = self.recent.lock() {
            recent.push_back(format!("  {line}"));
            while recent.len() > RECENT {
                recent.pop_front();
            }
            bar.set_message(recent.iter().cloned().collect::<Vec<_>>().join("\n"));
        }
        if cfn::is_failed(&e.status) {
            bar.println(format!("{:<6} {line}", self.prefix));
        }
    }

    fn end(&self) {
        self.set_bar(None);
        if let Ok(mut r) = self.recent.lock() {
            r.clear();
        }
    }
}

impl SmokeProgress for Console {
    fn check(&self, c: &CheckResult) {
        self.line(&check_line(c));
    }
}
