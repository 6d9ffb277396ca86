//! `bench --compare FILE`: this run's figures against an earlier run's `--json` lines, each by
//! its ratio to its same-run baseline where both runs have one (so a faster or slower machine
//! does not count), else by its value; a figure worse by more than the tolerance is a regression.

use super::metric::Metric;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: not a bench figure ({why}); expected a line of `lnetlab bench --json`")]
    Line { path: PathBuf, line: usize, why: String },
    #[error("{path}: no bench figures in it")]
    Empty { path: PathBuf },
}

/// One figure of both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub name: String,
    /// `ratio` or `value`: what was compared.
    pub basis: &'static str,
    pub before: f64,
    pub now: f64,
    /// How much better (positive) or worse (negative), as a fraction of `before`.
    pub gain: f64,
    pub regressed: bool,
}

/// Units where less is better (latencies, times, memory); the rest are rates.
pub fn lower_is_better(unit: &str) -> bool {
    matches!(unit, "us" | "ms" | "s" | "MiB")
}

/// The figures of an earlier `lnetlab bench --json` (other lines, such as progress, are refused).
pub fn read_earlier(path: &Path) -> Result<Vec<Metric>, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|source| CompareError::Read { path: path.into(), source })?;
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let m: Metric = serde_json::from_str(l).map_err(|e| CompareError::Line { path: path.into(), line: i + 1, why: e.to_string() })?;
        out.push(m);
    }
    if out.is_empty() {
        return Err(CompareError::Empty { path: path.into() });
    }
    Ok(out)
}

/// Compares every figure measured in both runs; `tolerance` is the fraction a figure may lose.
pub fn compare(now: &[Metric], before: &[Metric], tolerance: f64) -> Vec<Change> {
    let mut out = Vec::new();
    for n in now {
        let Some(b) = before.iter().find(|b| b.name == n.name) else { continue };
        let (basis, x0, x1) = match (b.ratio, n.ratio) {
            (Some(r0), Some(r1)) => ("ratio", r0, r1),
            _ => ("value", b.value, n.value),
        };
        if x0 <= 0.0 {
            continue;
        }
        let rel = (x1 - x0) / x0;
        let gain = if lower_is_better(&n.unit) { -rel } else { rel };
        out.push(Change { name: n.name.clone(), basis, before: x0, now: x1, gain, regressed: gain < -tolerance });
    }
    out
}

/// A table of the changes, with the figures only one run has.
pub fn render(changes: &[Change], now: &[Metric], before: &[Metric]) -> String {
    let mut t = String::new();
    for c in changes {
        let flag = if c.regressed { "REGRESSED" } else { "" };
        t += &format!("{:<34} {:<5} {:>10.3} -> {:>10.3} {:>+7.1}% {flag}\n", c.name, c.basis, c.before, c.now, c.gain * 100.0);
    }
    for n in now.iter().filter(|n| !before.iter().any(|b| b.name == n.name)) {
        t += &format!("{:<34} new\n", n.name);
    }
    for b in before.iter().filter(|b| !now.iter().any(|n| n.name == b.name)) {
        t += &format!("{:<34} not measured this time\n", b.name);
    }
    let bad = changes.iter().filter(|c| c.regressed).count();
    t += &format!("{} figures compared, {bad} regressed\n", changes.len());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, value: f64, unit: &str, baseline: Option<f64>) -> Metric {
        Metric::new(name, value, unit, baseline)
    }

    #[test]
    fn ratios_are_compared_where_both_runs_have_them_and_direction_follows_the_unit() {
        let before = [m("bw", 10.0, "GB/s", Some(20.0)), m("rtt", 50.0, "us", Some(1.0)), m("t", 2.0, "s", None)];
        // A machine twice as fast: the same ratio, no change; the latency ratio doubled: worse.
        let now = [m("bw", 20.0, "GB/s", Some(40.0)), m("rtt", 100.0, "us", Some(1.0)), m("t", 1.0, "s", None)];
        let c = compare(&now, &before, 0.3);
        assert_eq!(c.iter().map(|c| (c.name.as_str(), c.basis, c.regressed)).collect::<Vec<_>>(), [("bw", "ratio", false), ("rtt", "ratio", true), ("t", "value", false)]);
        assert!((c[0].gain).abs() < 1e-9 && (c[1].gain + 1.0).abs() < 1e-9 && (c[2].gain - 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_loss_within_the_tolerance_is_not_a_regression() {
        let before = [m("bw", 10.0, "GB/s", None)];
        assert!(!compare(&[m("bw", 7.5, "GB/s", None)], &before, 0.3)[0].regressed);
        assert!(compare(&[m("bw", 6.5, "GB/s", None)], &before, 0.3)[0].regressed);
    }

    #[test]
    fn a_file_that_is_not_bench_output_names_its_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.jsonl");
        std::fs::write(&p, "{\"name\":\"x\",\"value\":1.0,\"unit\":\"s\",\"baseline\":null,\"ratio\":null}\nbench dma: ...\n").unwrap();
        let e = read_earlier(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: not a bench figure", p.display())), "{e}");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_earlier(&p).unwrap_err().to_string().contains("no bench figures"));
    }

    #[test]
    fn render_lists_new_and_missing_figures() {
        let before = [m("a", 1.0, "s", None), m("gone", 1.0, "s", None)];
        let now = [m("a", 1.0, "s", None), m("fresh", 1.0, "s", None)];
        let t = render(&compare(&now, &before, 0.3), &now, &before);
        assert!(t.contains("fresh") && t.contains("new") && t.contains("gone") && t.contains("not measured") && t.ends_with("1 figures compared, 0 regressed\n"), "{t}");
    }
}
