//! Small specs that once failed (mostly found by generated clusters), each under
//! `clusters/regress/`, run on the sim and process backends: both must pass and verify the same
//! bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `spec` on `backend` with seed 1; returns the report.
fn run(spec: &Path, backend: &str) -> serde_json::Value {
    let art = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
        .args(["run", spec.to_str().unwrap(), "--json", "--seed", "1", "--backend", backend, "--timeout", "120", "--artifacts", art.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{}: no report ({e}): {stdout}\n{}", spec.display(), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn regression_specs_pass_on_sim_and_process_alike() {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(root().join("clusters/regress")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect();
    specs.sort();
    assert!(!specs.is_empty());
    for spec in &specs {
        let sim = run(spec, "sim");
        let process = run(spec, "process");
        for r in [&sim, &process] {
            assert_eq!(r["ok"], true, "{}: {r}", spec.display());
        }
        let bytes = |r: &serde_json::Value| r["workloads"].as_array().unwrap().iter().map(|w| (w["bytes_written"].as_u64(), w["bytes_verified"].as_u64())).collect::<Vec<_>>();
        assert_eq!(bytes(&sim), bytes(&process), "{}: the backends disagree", spec.display());
    }
}
