//! Progress of long work: an indicatif bar redrawn in place when stderr is a terminal, else a
//! plain line at most every few seconds (CI logs), through the caller's reporter.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// No bars at all (`--json`: the output is for a program).
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// What the position counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Seeds,
    Nodes,
}

/// One piece of long work (a workload's bytes, a hunt's seeds).
pub struct Progress<S: Fn(&str)> {
    bar: Option<ProgressBar>,
    say: S,
    what: String,
    unit: Unit,
    len: u64,
    every: Duration,
    last: Option<Instant>,
}

impl<S: Fn(&str)> Progress<S> {
    /// A bar on a terminal; otherwise lines through `say`, at most one every `every`.
    pub fn new(what: &str, len: u64, unit: Unit, every: Duration, say: S) -> Progress<S> {
        let tty = std::io::stderr().is_terminal() && !QUIET.load(Ordering::Relaxed);
        let bar = tty.then(|| {
            let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let count = match unit {
                Unit::Bytes => "{bytes}/{total_bytes} {bytes_per_sec}",
                Unit::Seeds => "{pos}/{len} seeds {per_sec}",
                Unit::Nodes => "{pos}/{len} {elapsed}",
            };
            let style = ProgressStyle::with_template(&format!("  {{prefix}} [{{bar:30}}] {count} {{msg}}")).expect("template").progress_chars("#>-");
            b.set_style(style);
            b.set_prefix(what.to_string());
            b
        });
        Progress { bar, say, what: what.to_string(), unit, len, every, last: None }
    }

    /// Moves to `pos` of the length; `msg` says the rest (clients done, failures).
    pub fn set(&mut self, pos: u64, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
            b.set_message(msg.to_string());
            return;
        }
        let due = self.last.is_none_or(|t| t.elapsed() >= self.every) || pos >= self.len;
        if due && !QUIET.load(Ordering::Relaxed) {
            self.last = Some(Instant::now());
            (self.say)(&self.line(pos, msg));
        }
    }

    /// The plain line for `pos`.
    pub fn line(&self, pos: u64, msg: &str) -> String {
        let pct = if self.len == 0 { 100.0 } else { 100.0 * pos as f64 / self.len as f64 };
        let count = match self.unit {
            Unit::Bytes => format!("{:.1} of {:.1} MiB", pos as f64 / 1048576.0, self.len as f64 / 1048576.0),
            Unit::Seeds => format!("{pos}/{} seeds", self.len),
            Unit::Nodes => format!("{pos}/{}", self.len),
        };
        format!("{}: {pct:5.1}% {count} {msg}", self.what).trim_end().to_string()
    }

    /// A line above the bar (or just a line).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

impl<S: Fn(&str)> Drop for Progress<S> {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn without_a_terminal_lines_come_at_most_every_interval_and_at_the_end() {
        let lines = Mutex::new(Vec::new());
        let say = |m: &str| lines.lock().unwrap().push(m.to_string());
        let mut p = Progress::new("io", 4 << 20, Unit::Bytes, Duration::from_secs(3600), &say);
        assert!(p.bar.is_none(), "tests' stderr is not a terminal");
        p.set(1 << 20, "(0 of 2 clients done)");
        p.set(2 << 20, "");
        p.set(4 << 20, "(2 of 2 clients done)");
        drop(p);
        assert_eq!(*lines.lock().unwrap(), ["io:  25.0% 1.0 of 4.0 MiB (0 of 2 clients done)", "io: 100.0% 4.0 of 4.0 MiB (2 of 2 clients done)"]);
    }
}
