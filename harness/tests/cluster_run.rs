//! The cluster harness end to end: the quickstart and a routed cluster on the process backend,
//! and a set of broken specs that must fail with file:line:col errors.

use harness::cluster::spec::ClusterSpec;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Processes whose command line mentions `needle` (a run's artifacts directory).
fn procs_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) && !c.contains("cargo") {
                out.push(c);
            }
        }
    }
    out
}

fn run_cluster(file: &str, want_bytes: u64) -> serde_json::Value {
    let art = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
        .args(["run", root().join(file).to_str().unwrap(), "--json", "--seed", "7", "--artifacts", art.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{file}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["seed"], 7);
    assert_eq!(r["backend"], "process");
    for key in ["cluster", "backend", "seed", "ok", "workloads", "artifacts"] {
        assert!(r.get(key).is_some(), "report lacks {key}");
    }
    let w = &r["workloads"][0];
    assert_eq!(w["bytes_written"], want_bytes, "{r}");
    assert_eq!(w["bytes_verified"], want_bytes, "{r}");
    assert_eq!(w["errors"], 0);
    assert!(w["rpcs"].as_u64().unwrap() > 0);
    let dir = PathBuf::from(r["artifacts"].as_str().unwrap());
    for f in ["spec.yaml", "report.json", "REPRO", "nodes", "traces"] {
        assert!(dir.join(f).exists(), "artifacts lack {f}");
    }
    let repro = std::fs::read_to_string(dir.join("REPRO")).unwrap();
    assert!(repro.contains("--seed 7"), "{repro}");
    assert!(std::fs::read_dir(dir.join("traces")).unwrap().count() >= 3);
    let left = procs_mentioning(art.path().to_str().unwrap());
    assert!(left.is_empty(), "processes left running: {left:?}");
    r
}

/// Issue 15: with the DMA device restarted and the fabric cut mid-run, LNet resends over tcp0,
/// the DMA NIs' health (ours or the peers') falls and recovers, and the traffic goes back to
/// dma0 — every byte verified, nothing lost.
#[test]
fn multirail_fails_over_to_tcp_and_comes_back() {
    let r = run_cluster("clusters/multirail.yaml", 2 * 8 * (64 << 20));
    assert_eq!((r["lost_acked_writes"].as_u64(), r["workloads"][0]["errors"].as_u64()), (Some(0), Some(0)), "{r}");
    let h = &r["lnet_health"];
    for node in ["oss1", "c1", "c2"] {
        let nis = h[node].as_array().unwrap_or_else(|| panic!("no lnet_health for {node}: {r}"));
        let (dma, tcp) = (&nis[0], &nis[1]);
        assert!(dma["nid"].as_str().unwrap().ends_with("@dma") && tcp["nid"].as_str().unwrap().ends_with("@tcp"), "{node}: {nis:?}");
        let peers_fell = dma["peer_nis"].as_array().is_some_and(|p| !p.is_empty());
        assert!(dma["health_lowest"].as_u64().unwrap() < 1000 || peers_fell, "{node}: no DMA health fell: {dma}");
        assert_eq!(dma["health"], 1000, "{node}: its DMA NI did not recover: {dma}");
        assert!(dma["peer_nis"].as_array().into_iter().flatten().all(|p| p["health"] == 1000), "{node}: a peer NI did not recover: {dma}");
        assert!(dma["sent_bytes_after_faults"].as_u64().unwrap() > 0, "{node}: nothing back on dma0 after the faults: {dma}");
    }
    let resent: u64 = ["oss1", "c1", "c2"].iter().map(|n| h[n][1]["resent"].as_u64().unwrap()).sum();
    assert!(resent > 0, "LNet resent nothing over tcp0: {h}");
    assert_eq!(r["faults"]["partition"], 1, "{r}");
    assert_eq!(r["faults"]["device_restart"], 1, "{r}");
}

#[test]
fn quickstart_runs_and_verifies_over_dma_and_socklnd() {
    run_cluster("clusters/quickstart.yaml", 3 * 4 * (8 << 20));
}

#[test]
fn routed_cluster_tcp_client_through_a_router() {
    run_cluster("clusters/routed.yaml", 2 * 2 * (4 << 20));
}

#[test]
fn broken_specs_fail_with_file_line_col() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        let want = text.lines().next().unwrap().strip_prefix("# expect: ").expect("first line says what to expect");
        let err = ClusterSpec::parse(&text, &p).expect_err(&format!("{} should fail", p.display())).to_string();
        let (pos, msg) = want.split_once(": ").unwrap();
        let prefix = format!("{}:{pos}: ", p.display());
        assert!(err.starts_with(&prefix), "{}: got `{err}`, want prefix `{prefix}`", p.display());
        assert!(err.contains(msg), "{}: got `{err}`, want `{msg}`", p.display());
        n += 1;
    }
    assert!(n >= 10);
    // And through the CLI: exit status 1, the located message on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["run", dir.join("unknown_net.yaml").to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_net.yaml:5:38: node `o`: NI on unknown net `dma9`"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["run", "/no/such/file.yaml"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/file.yaml"));
}

#[test]
fn shipped_specs_parse() {
    for f in ["clusters/quickstart.yaml", "clusters/routed.yaml"] {
        ClusterSpec::load(&root().join(f)).unwrap();
    }
}

#[test]
fn up_status_logs_down_and_interrupted_runs_leave_nothing() {
    let work = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_lnetlab");
    let spec = root().join("clusters/quickstart.yaml");
    let art = work.path().join("runs");
    let run = |args: &[&str]| Command::new(bin).args(args).current_dir(work.path()).env("XDG_STATE_HOME", work.path()).output().unwrap();
    let out = run(&["up", spec.to_str().unwrap(), "--artifacts", art.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let st = run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!((v["alive"].clone(), v["nodes"].as_array().unwrap().len()), (serde_json::json!(true), 4));
    let logs = run(&["logs", "oss1"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("lnetd up"));
    assert!(!procs_mentioning(art.to_str().unwrap()).is_empty(), "the cluster runs in the background");
    let down = run(&["down"]);
    assert!(down.status.success());
    assert!(procs_mentioning(art.to_str().unwrap()).is_empty(), "down leaves nothing");
    assert!(!run(&["status"]).status.success());

    // Ctrl-C in the middle of a run: torn down, nothing left running.
    let art2 = work.path().join("runs2");
    let mut child = Command::new(bin).args(["run", spec.to_str().unwrap(), "--keep", "--artifacts", art2.to_str().unwrap()]).current_dir(work.path()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while procs_mentioning(art2.to_str().unwrap()).len() < 5 {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30), "cluster never came up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    let left = procs_mentioning(art2.to_str().unwrap());
    assert!(left.is_empty(), "after Ctrl-C: {left:?} ({st})");
}

#[test]
fn selftest_workloads_report_rates_and_percentiles() {
    for backend in ["sim", "process"] {
        let out = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["selftest", root().join("clusters/selftest.yaml").to_str().unwrap(), "--json", "--backend", backend]).output().unwrap();
        assert!(out.status.success(), "{backend}: {}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["ok"], true);
        let ws = r["workloads"].as_array().unwrap();
        assert_eq!(ws.len(), 3, "only the selftest workloads run");
        assert_eq!(ws[0]["selftest"]["ops"], 6000, "3 clients x 2000 pings");
        for w in ws {
            let st = &w["selftest"];
            assert_eq!(w["errors"], 0, "{w}");
            assert!(st["rpc_per_s"].as_f64().unwrap() > 0.0);
            let (p50, p99, p999) = (st["p50_us"].as_f64().unwrap(), st["p99_us"].as_f64().unwrap(), st["p999_us"].as_f64().unwrap());
            assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{st}");
        }
        assert!(ws[1]["selftest"]["mb_per_s"].as_f64().unwrap() > 1.0);
    }
}

/// Runs `clusters/crash.yaml` on the process backend (with `mutant` switched on, if any).
fn crash_run(seed: &str, mutant: Option<&str>) -> (serde_json::Value, tempfile::TempDir) {
    let art = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lnetlab"));
    cmd.args(["run", root().join("clusters/crash.yaml").to_str().unwrap(), "--json", "--seed", seed, "--artifacts", art.path().to_str().unwrap()]);
    if let Some(m) = mutant {
        cmd.env("LNETLAB_MUTANT", m);
    }
    let out = cmd.output().unwrap();
    let r = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (r, art)
}

/// A `crash` (power loss) of the OSS mid-write on the process backend: lnetd is SIGKILLed with
/// its uncommitted cache; after the restart the clients replay what it lost, every byte reads
/// back and no acknowledged write is lost. The traces show the replays and the recovery. With the
/// `osc_no_replay` mutant the same crash fails the run.
#[test]
fn a_crashed_oss_is_recovered_by_replay_with_every_byte_verified() {
    let (r, art) = crash_run("3", None);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["faults"]["crash"], 1, "{r}");
    let total = 2 * 2 * (32u64 << 20);
    let w = &r["workloads"][0];
    assert_eq!((w["bytes_written"].as_u64(), w["bytes_verified"].as_u64(), w["errors"].as_u64()), (Some(total), Some(total), Some(0)), "{w}");
    assert_eq!((r["lost_acked_writes"].as_u64(), r["silent_corruptions"].as_u64()), (Some(0), Some(0)), "{r}");
    let replays = r["replays"].as_u64().unwrap();
    assert!(replays >= 1, "the clients replayed what the crash lost: {r}");
    let dir = std::fs::read_dir(art.path()).unwrap().next().unwrap().unwrap().path();
    let faults = std::fs::read_to_string(dir.join("traces/faults.jsonl")).unwrap();
    assert!(faults.contains(r#""action":"killed","fault":"crash","node":"oss1""#) && faults.contains("started again"), "{faults}");
    let oss = std::fs::read_to_string(dir.join("traces/oss1.jsonl")).unwrap();
    assert_eq!(oss.matches(r#""recovery":"over""#).count(), 2, "both OSTs recovered: {oss}");
    let clients: String = ["c1", "c2"].iter().map(|c| std::fs::read_to_string(dir.join(format!("traces/{c}.jsonl"))).unwrap()).collect();
    assert!(clients.matches(r#""recovery":"replay""#).count() >= 2, "each client replayed to the recovering OSTs");
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("nodes/oss1.stats.json")).unwrap()).unwrap();
    assert_eq!(stats["oss"]["replays"].as_u64(), Some(replays), "the restarted OSS served every replay: {stats}");

    let (r, _art) = crash_run("3", Some("osc_no_replay"));
    assert_eq!((r["ok"].clone(), r["replays"].clone()), (serde_json::json!(false), serde_json::json!(0)), "without replay the crash loses data: {r}");
    assert!(r["workloads"][0]["bytes_verified"].as_u64().unwrap() < total, "{r}");
}

#[test]
fn faults_of_many_kinds_are_survived_with_every_byte_verified() {
    for backend in ["sim", "process"] {
        let art = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
            .args(["run", root().join("clusters/faults.yaml").to_str().unwrap(), "--json", "--seed", "4", "--backend", backend, "--artifacts", art.path().to_str().unwrap()])
            .output()
            .unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{backend}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(r["ok"], true, "{backend}: {r}");
        // Both backends inject every kind in the spec (the sim on virtual time).
        let kinds = r["faults"].as_object().unwrap();
        let total: u64 = kinds.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(r["faults_injected"].as_u64().unwrap(), total, "{backend}: {r}");
        assert!(total >= 20 && kinds.len() >= 5, "{backend}: {r}");
        assert!(r.get("faults_skipped").is_none(), "{backend}: {r}");
        // Every window that opened (the last ones only if the workload was still running)
        // closed again, as the fault trace shows.
        let n = |k: &str| kinds.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        assert!(n("pause") >= 1, "the first pause comes early: {r}");
        let trace = std::fs::read_to_string(std::fs::read_dir(art.path()).unwrap().next().unwrap().unwrap().path().join("traces/faults.jsonl")).unwrap();
        assert_eq!((trace.matches("\"paused\"").count(), trace.matches("\"resumed\"").count()), (n("pause"), n("pause")), "{trace}");
        assert_eq!(trace.matches("rules removed").count(), n("partition"), "{trace}");
        let restarts = n("restart") + n("device_restart") + n("crash");
        assert_eq!((trace.matches("\"killed\"").count(), trace.matches("started again").count()), (restarts, restarts), "{trace}");
        if n("restart") > 0 {
            assert!(r["reconnects"].as_u64().unwrap() >= 1, "clients reconnected to the restarted OSS: {r}");
        }
        if backend == "sim" {
            // Virtual time reaches every window of the spec, whatever the machine's speed.
            for k in ["pause", "partition", "restart", "crash", "device_restart", "dma_late"] {
                assert!(n(k) >= 1, "{backend}: no {k}: {r}");
            }
            assert!(kinds.len() >= 10, "{backend}: {r}");
        }
        assert_eq!((r["lost_acked_writes"].clone(), r["silent_corruptions"].clone()), (serde_json::json!(0), serde_json::json!(0)), "{backend}: {r}");
        assert!(r["resends"].as_u64().unwrap() >= 1, "{backend}: {r}");
        let w = &r["workloads"][0];
        assert_eq!((w["bytes_written"].clone(), w["bytes_verified"].clone(), w["errors"].clone()), (serde_json::json!(3 * 2 * (4 << 20)), serde_json::json!(3 * 2 * (4 << 20)), serde_json::json!(0)), "{backend}: {w}");
    }
}

/// A failed process run whose faults the simulator can inject says how to replay it there
/// (stderr and REPRO), and that command fails the same way on the simulator; a failed sim run
/// names only itself.
#[test]
fn a_failed_process_run_names_its_replay_on_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("fails.yaml");
    std::fs::write(
        &spec,
        "name: fails
nets: {dma0: {kind: dma}}
nodes:
  - {name: oss1, roles: [oss], nis: [dma0], targets: [{ost: 0, size: 16MiB}]}
  - {name: c1, roles: [client], nis: [dma0]}
workloads:
  - {name: io, kind: io, clients: [c1], files: 1, size: 1MiB, stripe_count: 1, rpc_timeout: 100ms, max_tries: 1}
faults:
  - {kind: lnet_drop, node: oss1, src: c1, type: PUT, rate: 1}
  - {kind: pause, node: oss1, at: 0ms, duration: 50ms}
",
    )
    .unwrap();
    let run = |backend: &str| {
        let art = dir.path().join(format!("runs-{backend}"));
        let out = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["run", spec.to_str().unwrap(), "--seed", "2", "--backend", backend, "--artifacts", art.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{backend}: the run fails");
        let run_dir = std::fs::read_dir(&art).unwrap().next().unwrap().unwrap().path();
        (String::from_utf8_lossy(&out.stderr).to_string(), std::fs::read_to_string(run_dir.join("REPRO")).unwrap())
    };
    let sim_cmd = format!("lnetlab run {} --seed 2 --backend sim --check-determinism", spec.display());
    let (err, repro) = run("process");
    assert!(err.contains(&format!("replay on the simulator: {sim_cmd}")), "{err}");
    assert_eq!(repro.lines().collect::<Vec<_>>(), [format!("lnetlab run {} --seed 2 --backend process --keep", spec.display()), sim_cmd], "{repro}");
    let (err, repro) = run("sim");
    assert!(!err.contains("replay on the simulator"), "{err}");
    assert_eq!(repro.lines().count(), 1, "{repro}");
}
