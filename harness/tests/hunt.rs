//! `lnetlab hunt`: generated specs pass on sim and agree with process; a spec that fails keeps
//! its REPRO and makes hunt exit 1.

use std::process::Command;

fn hunt(args: &[&str], out: &std::path::Path) -> (i32, serde_json::Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_lnetlab")).arg("hunt").args(args).args(["--json", "--out", out.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap_or(-1), v)
}

#[test]
fn generated_specs_pass_and_backends_agree() {
    let out = tempfile::tempdir().unwrap();
    let (code, s) = hunt(&["--generate", "--single", "--seeds", "1..4", "--backend", "all", "-j", "2", "--max-clients", "4"], out.path());
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["seeds"], 4);
    assert_eq!(s["passed"], 4);
    assert_eq!(s["backends"], serde_json::json!(["sim", "process"]));
    assert!(out.path().join("hunt.json").exists());
}

#[test]
fn a_failing_seed_is_kept_with_its_repro_and_hunt_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    // Every request to the OSS is lost and clients give up after one try.
    let spec = dir.path().join("doomed.yaml");
    std::fs::write(&spec, "name: doomed\nnets: {dma0: {kind: dma}}\nnodes:\n  - {name: oss1, roles: [oss], nis: [dma0], targets: [{ost: 0, size: 64MiB}]}\n  - {name: c1, roles: [client], nis: [dma0]}\nworkloads:\n  - {name: io1, kind: io, clients: [c1], files: 1, size: 1MiB, max_tries: 1, rpc_timeout: 50ms}\nfaults:\n  - {kind: lnet_drop, node: oss1, portal: 6, interval: 1}\n").unwrap();
    let out = dir.path().join("hunt");
    let (code, s) = hunt(&[spec.to_str().unwrap(), "--seeds", "3..4", "--backend", "sim"], &out);
    assert_eq!(code, 1, "{s}");
    assert_eq!(s["passed"], 0);
    let f = &s["failed"][0];
    assert_eq!(f["seed"], 3);
    assert!(f["error"].as_str().unwrap().starts_with("sim: "), "{f}");
    assert_eq!(f["repro"][0], format!("lnetlab run {} --seed 3 --backend sim --keep", spec.display()));
    assert_eq!(f["repro"].as_array().unwrap().len(), 1, "{f}");
    // Hunting on the process backend, each failure also names its replay on the simulator.
    let (code, s) = hunt(&[spec.to_str().unwrap(), "--seeds", "3..3", "--backend", "process"], &dir.path().join("hunt-process"));
    assert_eq!(code, 1, "{s}");
    let r = &s["failed"][0]["repro"];
    assert_eq!(r[1], format!("lnetlab run {} --seed 3 --backend sim --check-determinism", spec.display()), "{s}");
}

#[test]
fn bad_hunt_arguments_are_refused_in_one_line() {
    for (args, want) in [(vec!["--generate", "--seeds", "9..1"], "empty"), (vec!["--seeds", "1..2"], "FILE or --generate"), (vec!["--generate", "--backend", "nosuch"], "nosuch")] {
        let o = Command::new(env!("CARGO_BIN_EXE_lnetlab")).arg("hunt").args(&args).output().unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn shrink_keeps_only_what_makes_the_run_fail_and_the_result_replays() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("noisy.yaml");
    // Only the drop rule (every request from c3 lost, one try) makes this fail; the rest is noise.
    std::fs::write(&spec, "name: noisy\nnets: {dma0: {kind: dma}, tcp0: {kind: tcp}}\nnodes:\n  - {name: oss1, roles: [oss], nis: [dma0, tcp0], targets: [{ost: 0, size: 64MiB}, {ost: 1, size: 64MiB}]}\n  - {name: c1, roles: [client], nis: [dma0]}\n  - {name: c2, roles: [client], nis: [tcp0]}\n  - {name: c3, roles: [client], nis: [dma0]}\nworkloads:\n  - {name: io1, kind: io, clients: [c1, c2, c3], files: 2, size: 2MiB, stripe_count: 2, max_tries: 1, rpc_timeout: 50ms}\nfaults:\n  - {kind: lnet_delay, node: c1, rate: 5, latency: 1ms}\n  - {kind: dma_mailbox, net: dma0, rate: 1000}\n  - {kind: lnet_drop, node: oss1, src: c3, portal: 6, interval: 1}\n  - {kind: lnet_delay, node: c2, rate: 9, latency: 1ms}\n").unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["shrink", "--spec", spec.to_str().unwrap(), "--seed", "2", "--backend", "sim", "--json", "--out", out.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(r["faults"].as_u64().unwrap() <= 1, "{r}");
    assert_eq!(r["workloads"], 1);
    assert!(r["nodes"].as_u64().unwrap() <= 3, "{r}");
    let shrunk = std::fs::read_to_string(out.join("shrunk.yaml")).unwrap();
    assert!(shrunk.contains("lnet_drop"), "{shrunk}");
    // The REPRO of the shrunk spec fails again.
    let replay = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["run", out.join("shrunk.yaml").to_str().unwrap(), "--seed", "2", "--backend", "sim", "--json", "--artifacts", dir.path().join("replay").to_str().unwrap()]).output().unwrap();
    let rep: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&replay.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(rep["ok"], false, "{rep}");
    // A spec that does not fail is refused.
    let fine = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["shrink", "--spec", "../clusters/regress/two-tcp-nets.yaml", "--seed", "1", "--out", dir.path().join("fine").to_str().unwrap()]).output().unwrap();
    assert!(!fine.status.success());
    assert!(String::from_utf8_lossy(&fine.stderr).contains("does not fail"), "{}", String::from_utf8_lossy(&fine.stderr));
}

#[test]
fn check_determinism_passes_on_sim_and_catches_a_run_that_reads_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let run = |mutant: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
            .args(["run", "../clusters/regress/two-tcp-nets.yaml", "--backend", "sim", "--seed", "3", "--check-determinism", "--json", "--artifacts", dir.path().to_str().unwrap()])
            .env("LNETLAB_MUTANT", mutant)
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
        (o.status.success(), r)
    };
    let (ok, r) = run("");
    assert!(ok, "{r}");
    assert!(r["trace_hash"].as_str().is_some_and(|h| h.len() == 16), "{r}");
    let (ok, r) = run("sim_wall_clock");
    assert!(!ok, "{r}");
    assert!(r["error"].as_str().unwrap().contains("not deterministic"), "{r}");
}

/// A simulated run that hangs (the `osc_no_timeout` mutant: a dropped request is never timed
/// out) stops with "stalled" and names what the client waits for; without the mutant the same
/// spec and seed pass.
#[test]
fn a_hung_sim_run_says_stalled_and_what_the_client_waits_for() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("lossy.yaml");
    std::fs::write(&spec, "name: lossy\nnets: {dma0: {kind: dma}}\nnodes:\n  - {name: oss1, roles: [oss], nis: [dma0], targets: [{ost: 0, size: 64MiB}]}\n  - {name: c1, roles: [client], nis: [dma0]}\nworkloads:\n  - {name: w, kind: io, clients: [c1], files: 4, size: 2MiB, rpc_timeout: 200ms}\nfaults:\n  - {kind: lnet_drop, node: oss1, src: c1, portal: 6, type: PUT, rate: 4}\n").unwrap();
    let run = |mutant: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
            .args(["run", spec.to_str().unwrap(), "--backend", "sim", "--seed", "1", "--timeout", "60", "--json", "--artifacts", dir.path().to_str().unwrap()])
            .env("LNETLAB_MUTANT", mutant)
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
        r
    };
    let fine = run("");
    assert_eq!(fine["ok"], true, "{fine}");
    let hung = run("osc_no_timeout");
    let e = hung["error"].as_str().unwrap_or("");
    assert!(e.contains("stalled") && e.contains("c1 (job w@c1") && e.contains("waits for OST_") && e.contains("(oss1), xid"), "{hung}");
}
