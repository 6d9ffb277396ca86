//! `lnetlab hunt`: many seeds of a spec (or of generated specs), each run as its own `lnetlab run`
//! child on one or more backends, N at a time; a progress line, a summary, and for every failing
//! seed the spec kept and a REPRO line. With several backends, their results must agree.

use super::child::{failure, run_one};
use super::generate::{generate, GenOpts};
use crate::progress::{Progress, Unit};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct HuntOpts {
    /// The spec to run (None: generate one per seed).
    pub file: Option<PathBuf>,
    pub gen: GenOpts,
    pub seeds: (u64, u64),
    pub jobs: usize,
    /// Backends to run each seed on (several: their results must agree).
    pub backends: Vec<String>,
    /// Where failing specs, run artifacts and the summary go.
    pub out: PathBuf,
    /// Per run; the child is killed this long after (plus a grace period).
    pub timeout: Duration,
    pub json: bool,
    /// Run every seed twice on sim and fail when the traces differ.
    pub check_determinism: bool,
    /// Start no new seed once one has failed.
    pub first_failure: bool,
}

/// One seed's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub ok: bool,
    pub secs: f64,
    pub nodes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repro: Vec<String>,
    /// The artifacts of the first backend's failed run (for `lnetlab shrink RUN_DIR`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HuntSummary {
    pub seeds: usize,
    pub passed: usize,
    pub failed: Vec<SeedResult>,
    pub backends: Vec<String>,
    pub elapsed_s: f64,
    pub seeds_per_min: f64,
    /// Every seed's outcome, in seed order (for `--junit`).
    #[serde(skip)]
    pub results: Vec<SeedResult>,
}

/// Parses `A..B` (inclusive) or a single seed.
pub fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let n = |x: &str| x.trim().parse::<u64>().map_err(|_| format!("--seeds `{s}`: expected A..B with whole numbers, e.g. 1..200"));
    let (a, b) = (n(a)?, n(b)?);
    if b < a {
        return Err(format!("--seeds `{s}`: the range is empty ({b} < {a})"));
    }
    Ok((a, b))
}

/// What every backend must agree on: bytes written and verified per workload.
fn bytes(r: &Value) -> Vec<(Option<u64>, Option<u64>)> {
    r["workloads"].as_array().map(|ws| ws.iter().map(|w| (w["bytes_written"].as_u64(), w["bytes_verified"].as_u64())).collect()).unwrap_or_default()
}

fn hunt_seed(o: &HuntOpts, seed: u64) -> SeedResult {
    let t0 = Instant::now();
    let scratch = o.out.join("runs").join(seed.to_string());
    let _ = std::fs::create_dir_all(&scratch);
    let (spec, text) = match &o.file {
        Some(f) => (f.clone(), None),
        None => {
            let y = generate(seed, o.gen);
            let p = scratch.join(format!("gen{seed}.yaml"));
            if let Err(e) = std::fs::write(&p, &y) {
                return SeedResult { seed, ok: false, secs: 0.0, nodes: 0, error: Some(format!("cannot write {}: {e}", p.display())), spec: None, repro: Vec::new(), run_dir: None };
            }
            (p, Some(y))
        }
    };
    let nodes = text.as_deref().map_or(0, |y| y.lines().filter(|l| l.contains("\"roles\"")).count());
    let mut reports = Vec::new();
    let mut error = None;
    let mut run_dir = None;
    for b in &o.backends {
        let extra: Vec<String> = if o.check_determinism && b == "sim" { vec!["--check-determinism".into()] } else { Vec::new() };
        match run_one(&spec, seed, b, &scratch.join(b), o.timeout, &extra) {
            Ok(r) => {
                if let Some(why) = failure(&r) {
                    error.get_or_insert(format!("{b}: {why}"));
                    run_dir = run_dir.or_else(|| r["artifacts"].as_str().map(String::from));
                }
                reports.push((b.clone(), r));
            }
            Err(why) => {
                error.get_or_insert(format!("{b}: {why}"));
            }
        }
    }
    if error.is_none() {
        if let Some((b0, r0)) = reports.first() {
            if let Some((b, r)) = reports.iter().find(|(_, r)| bytes(r) != bytes(r0)) {
                error = Some(format!("backends disagree: {b0} {:?} vs {b} {:?} (bytes written, verified per workload)", bytes(r0), bytes(r)));
            }
        }
    }
    let ok = error.is_none();
    let mut kept = None;
    if ok {
        let _ = std::fs::remove_dir_all(&scratch);
    } else if let Some(y) = &text {
        let dir = o.out.join("failed");
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join(format!("gen{seed}.yaml"));
        if std::fs::write(&p, y).is_ok() {
            kept = Some(p.display().to_string());
        }
    }
    let shown = kept.clone().unwrap_or_else(|| spec.display().to_string());
    let mut repro: Vec<String> = if ok { Vec::new() } else { o.backends.iter().map(|b| format!("lnetlab run {shown} --seed {seed} --backend {b} --keep")).collect() };
    if !ok && !o.backends.iter().any(|b| b == "sim") {
        // The same faults on virtual time, where a replay is exact.
        repro.extend(crate::cluster::run::sim_repro(std::path::Path::new(&shown), seed, &o.backends[0]));
    }
    SeedResult { seed, ok, secs: t0.elapsed().as_secs_f64(), nodes, error, spec: kept, repro, run_dir }
}

/// Runs every seed, `jobs` at a time; progress on stderr (a bar on a terminal, else a line
/// every 10 s and at the end).
pub fn hunt(o: &HuntOpts) -> anyhow::Result<HuntSummary> {
    std::fs::create_dir_all(&o.out)?;
    let (a, b) = o.seeds;
    let total = (b - a + 1) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<SeedResult>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let t0 = Instant::now();
    let say = |m: &str| eprintln!("{m}");
    let bar = Mutex::new((!o.json).then(|| Progress::new("hunt", total as u64, Unit::Seeds, Duration::from_secs(10), say)));
    std::thread::scope(|s| {
        for _ in 0..o.jobs.max(1) {
            let (next, results, stop, bar) = (next.clone(), results.clone(), &stop, &bar);
            s.spawn(move || loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k >= total || crate::interrupt::interrupted() || (o.first_failure && stop.load(Ordering::SeqCst)) {
                    return;
                }
                let r = hunt_seed(o, a + k as u64);
                if !r.ok {
                    stop.store(true, Ordering::SeqCst);
                }
                let mut g = results.lock().unwrap();
                let mut bar = bar.lock().unwrap();
                if let (Some(bar), false) = (bar.as_mut(), r.ok) {
                    bar.println(&format!("seed {} FAILED: {}", r.seed, r.error.as_deref().unwrap_or("?")));
                    for line in &r.repro {
                        bar.println(&format!("    reproduce: {line}"));
                    }
                }
                g.push(r);
                if let Some(bar) = bar.as_mut() {
                    bar.set(g.len() as u64, &format!("{} failed", g.iter().filter(|r| !r.ok).count()));
                }
            });
        }
    });
    drop(bar);
    let mut all = Arc::try_unwrap(results).map_err(|_| anyhow::anyhow!("hunt workers still hold results"))?.into_inner().unwrap();
    all.sort_by_key(|r| r.seed);
    let elapsed = t0.elapsed().as_secs_f64();
    let failed: Vec<SeedResult> = all.iter().filter(|r| !r.ok).cloned().collect();
    let summary = HuntSummary { seeds: all.len(), passed: all.len() - failed.len(), failed, backends: o.backends.clone(), elapsed_s: elapsed, seeds_per_min: all.len() as f64 * 60.0 / elapsed.max(1e-3), results: all.clone() };
    std::fs::write(o.out.join("hunt.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    Ok(summary)
}

/// The human summary.
pub fn table(s: &HuntSummary) -> String {
    let mut t = format!("{:>8} {:>6} {:>8}  {}\n", "seed", "nodes", "secs", "failure");
    for r in &s.failed {
        t += &format!("{:>8} {:>6} {:>8.1}  {}\n", r.seed, r.nodes, r.secs, r.error.as_deref().unwrap_or(""));
    }
    t += &format!("{} seeds on {}: {} passed, {} failed in {:.0}s ({:.1} seeds/min)\n", s.seeds, s.backends.join("+"), s.passed, s.failed.len(), s.elapsed_s, s.seeds_per_min);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seeds("1..200"), Ok((1, 200)));
        assert_eq!(parse_seeds("7"), Ok((7, 7)));
        assert!(parse_seeds("5..1").unwrap_err().contains("empty"));
        assert!(parse_seeds("a..b").unwrap_err().contains("A..B"));
    }

    #[test]
    fn failures_and_disagreements_are_named() {
        let ok = serde_json::json!({"ok": true, "workloads": [{"bytes_written": 4, "bytes_verified": 4}]});
        assert_eq!(failure(&ok), None);
        let bad = serde_json::json!({"ok": false, "workloads": [{"messages": ["io1@c1: timed out"]}]});
        assert_eq!(failure(&bad).as_deref(), Some("io1@c1: timed out"));
        let other = serde_json::json!({"ok": true, "workloads": [{"bytes_written": 4, "bytes_verified": 0}]});
        assert_ne!(bytes(&ok), bytes(&other));
    }
}
