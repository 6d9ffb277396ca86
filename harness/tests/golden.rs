//! Golden traces and the simulation backend: insta snapshots of every golden scenario, the same
//! seed replaying byte for byte, other seeds interleaving differently, the serial scenario
//! telling the same story on sim and process, and `lnetlab golden check` failing with a diff.

use harness::golden::{run_scenario, run_scenario_in, scenarios, snap_name};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn golden_snapshots() {
    for f in scenarios(&root().join("clusters/golden")).unwrap() {
        let (_, story) = run_scenario(&f, "sim", None, true).unwrap();
        insta::with_settings!({snapshot_path => root().join("golden"), prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_snapshot!(snap_name(&f), story);
        });
    }
}

fn raw_traces(report: &harness::cluster::report::Report) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(&report.artifacts).join("traces");
    let mut v: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap())).collect();
    v.sort();
    v
}

#[test]
fn same_seed_same_bytes_other_seed_other_interleaving() {
    let f = root().join("clusters/golden/concurrent.yaml");
    let art = tempfile::tempdir().unwrap();
    let (r0, s0) = run_scenario_in(&f, "sim", Some(11), true, art.path()).unwrap();
    let t0 = raw_traces(&r0);
    for _ in 0..9 {
        let (r, s) = run_scenario_in(&f, "sim", Some(11), true, art.path()).unwrap();
        assert_eq!(s, s0);
        assert_eq!(raw_traces(&r), t0, "traces are byte-identical for one seed");
    }
    // Another seed: the OSS sees the clients' requests in another order.
    let order = |s: &str| -> Vec<String> { s.split("## ").nth(1).unwrap().lines().filter(|l| l.starts_with("rpc")).map(|l| l.split_whitespace().last().unwrap().to_string()).collect() };
    let (_, s1) = run_scenario(&f, "sim", Some(12), true).unwrap();
    assert_eq!(order(&s0).len(), order(&s1).len());
    assert_ne!(order(&s0), order(&s1), "different seeds interleave the clients differently");
}

#[test]
fn serial_scenario_tells_the_same_story_on_sim_and_process() {
    let f = root().join("clusters/golden/serial.yaml");
    let (_, sim) = run_scenario(&f, "sim", None, false).unwrap();
    std::env::set_var("LNETLAB_BIN", env!("CARGO_BIN_EXE_lnetlab"));
    let (_, process) = run_scenario(&f, "process", None, false).unwrap();
    assert!(sim.lines().count() > 100);
    if sim != process {
        panic!("sim and process differ:\n{}", harness::golden::diff(&sim, &process));
    }
}

#[test]
fn golden_check_passes_and_an_edited_golden_fails_with_a_diff() {
    let bin = env!("CARGO_BIN_EXE_lnetlab");
    let ok = Command::new(bin).args(["golden", "check", "--scenarios"]).arg(root().join("clusters/golden")).arg("--golden").arg(root().join("golden")).output().unwrap();
    assert!(ok.status.success(), "{}{}", String::from_utf8_lossy(&ok.stdout), String::from_utf8_lossy(&ok.stderr));
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root().join("golden")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let snap = tmp.path().join("serial.snap");
    let t = std::fs::read_to_string(&snap).unwrap().replacen("rpc    OST_CREATE x3 from c1", "rpc    OST_CREATE x3 from c9", 1);
    std::fs::write(&snap, t).unwrap();
    let bad = Command::new(bin).args(["golden", "check", "--scenarios"]).arg(root().join("clusters/golden")).arg("--golden").arg(tmp.path()).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(out.contains("MISMATCH serial"), "{out}");
    assert!(out.contains("-rpc    OST_CREATE x3 from c9") && out.contains("+rpc    OST_CREATE x3 from c1"), "{out}");
    assert!(out.contains("ok       concurrent"));
}

#[test]
fn a_run_with_faults_replays_byte_for_byte_in_sim() {
    let f = root().join("clusters/faults.yaml");
    let art = tempfile::tempdir().unwrap();
    let (r1, s1) = run_scenario_in(&f, "sim", Some(9), true, art.path()).unwrap();
    let (r2, s2) = run_scenario_in(&f, "sim", Some(9), true, art.path()).unwrap();
    assert!(r1.faults_injected > 0 && r1.resends > 0, "faults happened");
    // Every kind, the windows on virtual time included, so pauses, partitions, restarts of
    // the OSS and of the device and late completions replay too.
    assert!(r1.faults_skipped.is_empty(), "{:?}", r1.faults_skipped);
    for k in ["pause", "partition", "restart", "device_restart", "dma_late"] {
        assert!(r1.faults.contains_key(k), "{k}: {:?}", r1.faults);
    }
    assert_eq!(r1.faults, r2.faults);
    assert_eq!(r1.trace_hash, r2.trace_hash);
    assert_eq!((r1.faults_injected, r1.resends), (r2.faults_injected, r2.resends));
    assert_eq!(s1, s2);
    assert_eq!(raw_traces(&r1), raw_traces(&r2));
}

/// The concurrent scenario's clients each tell the same story (order ignored) on sim, in its
/// snapshot, and on the process backend, where they really run at once.
#[test]
fn concurrent_scenario_tells_the_same_client_stories_on_sim_and_process() {
    let f = root().join("clusters/golden/concurrent.yaml");
    let art = tempfile::tempdir().unwrap();
    let (r, _) = run_scenario_in(&f, "sim", None, false, art.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let sim = harness::golden::client_stories(&r).unwrap();
    insta::with_settings!({snapshot_path => root().join("golden"), prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("concurrent.clients", sim);
    });
    std::env::set_var("LNETLAB_BIN", env!("CARGO_BIN_EXE_lnetlab"));
    let (r, _) = run_scenario_in(&f, "process", None, false, art.path()).unwrap_or_else(|e| panic!("{e:#}"));
    let process = harness::golden::client_stories(&r).unwrap();
    assert!(sim.lines().count() > 30);
    if sim != process {
        panic!("the clients' stories differ between sim and process:\n{}", harness::golden::diff(&sim, &process));
    }
}
