//! `bench sim`: how fast the simulator replays the faults scenario (`clusters/faults.yaml`, every
//! fault kind): seeds per minute beside one run of the same seed on the process backend, and
//! virtual seconds per wall second beside real time.

use super::metric::Metric;
use crate::cluster::run::{run, RunOpts};
use std::time::{Duration, Instant};

/// The scenario, as the repository ships it.
const FAULTS: &str = include_str!("../../../clusters/faults.yaml");

/// Runs seeds `1..=seeds` on the simulator (and seed 1 on the process backend for the
/// baseline); every run must verify.
pub fn run_bench(seeds: u64, json: bool) -> anyhow::Result<Vec<Metric>> {
    if !json {
        eprintln!("bench sim: clusters/faults.yaml, seeds 1..={seeds} on the simulator, seed 1 on the process backend ...");
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("faults.yaml");
    std::fs::write(&file, FAULTS)?;
    let opts = |backend: &str, seed: u64| RunOpts { file: file.clone(), seed: Some(seed), keep: false, json: true, artifacts: Some(dir.path().join("runs")), backend: backend.into(), timeout: Duration::from_secs(300), up_only: None, only: None, capture: false };
    let checked = |r: crate::cluster::report::Report| -> anyhow::Result<crate::cluster::report::Report> {
        anyhow::ensure!(r.ok, "bench sim: {} seed {} failed: {}", r.backend, r.seed, r.error.clone().unwrap_or_else(|| format!("{:?}", r.workloads)));
        Ok(r)
    };
    let t0 = Instant::now();
    let mut virtual_s = 0.0;
    for seed in 1..=seeds {
        let r = checked(run(&opts("sim", seed))?)?;
        virtual_s += r.virtual_s.unwrap_or(0.0);
    }
    let wall = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    checked(run(&opts("process", 1))?)?;
    let process_per_min = 60.0 / t1.elapsed().as_secs_f64();
    Ok(vec![
        Metric::new("sim_faults_seeds_per_min", seeds as f64 * 60.0 / wall, "seeds", Some(process_per_min)),
        Metric::new("sim_virtual_s_per_wall_s", virtual_s / wall, "x", Some(1.0)),
    ])
}
