//! The Docker backend (`cargo test --features cluster`): the quickstart and routed clusters in
//! containers, an OSS killed and restarted with its data intact, and a SIGKILLed run reaped by
//! the next one. Afterwards nothing labelled `lnetlab.run` is left.
#![cfg(feature = "cluster")]

mod common;
use common::*;

use harness::cluster::backend::Backend;
use harness::cluster::backends::docker::{DockerBackend, LABEL_RUN};
use harness::cluster::plan::plan;
use harness::cluster::spec::ClusterSpec;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};




/// Objects of one run (or all runs) still in the engine: containers, networks, volumes.
fn leftovers(run: Option<&str>) -> Vec<String> {
    let filter = match run {
        Some(r) => format!("label={LABEL_RUN}={r}"),
        None => format!("label={LABEL_RUN}"),
    };
    let mut out = Vec::new();
    for what in [&["ps", "-aq"][..], &["network", "ls", "-q"][..], &["volume", "ls", "-q"][..]] {
        let o = Command::new("docker").args(what).args(["--filter", &filter]).output().unwrap();
        out.extend(String::from_utf8_lossy(&o.stdout).lines().map(|l| format!("{} {l}", what[0])));
    }
    out
}

fn run_cli(file: &str, want: u64) -> serde_json::Value {
    run_cli_with(file, want, &[]).0
}

/// The report, and the artifacts' directory (gone when dropped).
fn run_cli_with(file: &str, want: u64, extra: &[&str]) -> (serde_json::Value, tempfile::TempDir) {
    let art = tempfile::tempdir().unwrap();
    let out = lnetlab()
        .args(["run", root().join(file).to_str().unwrap(), "--backend", "docker", "--json", "--seed", "4", "--artifacts", art.path().to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{file}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((r["ok"].clone(), r["backend"].clone()), (json!(true), json!("docker")), "{r}");
    assert_eq!(r["workloads"][0]["bytes_verified"], want);
    let dir = PathBuf::from(r["artifacts"].as_str().unwrap());
    assert!(std::fs::read_dir(dir.join("containers")).unwrap().count() >= 4, "container logs saved");
    (r, art)
}

#[test]
fn faults_of_many_kinds_in_docker_lose_nothing() {
    // Paused containers, a killed and restarted OSS container, a killed and restarted dmadev
    // container, LNet rules, a partition and device faults.
    let r = run_cli("clusters/faults.yaml", 3 * 2 * (4 << 20));
    let kinds = r["faults"].as_object().unwrap();
    assert!(r["faults_injected"].as_u64().unwrap() >= 20 && kinds.len() >= 5, "{r}");
    assert!(kinds.contains_key("pause"), "containers were paused: {r}");
    if kinds.contains_key("restart") {
        assert!(r["reconnects"].as_u64().unwrap() >= 1, "clients reconnected to the restarted OSS container: {r}");
    }
    assert_eq!((r["lost_acked_writes"].clone(), r["silent_corruptions"].clone(), r["workloads"][0]["errors"].clone()), (json!(0), json!(0), json!(0)), "{r}");
}

/// The concurrent golden scenario in containers: each client tells the story of its snapshot
/// (`golden/concurrent.clients.snap`, made on sim; order across clients ignored).
#[test]
fn concurrent_scenario_tells_the_golden_client_stories_in_docker() {
    let art = tempfile::tempdir().unwrap();
    // The spec's own seed (7), as on sim: the data, and so the RPCs' checksums, are the same.
    let out = lnetlab().args(["run", root().join("clusters/golden/concurrent.yaml").to_str().unwrap(), "--backend", "docker", "--json", "--artifacts", art.path().to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: harness::cluster::report::Report = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((report.backend.as_str(), report.seed), ("docker", 7));
    let got = harness::golden::client_stories(&report).unwrap();
    let want = harness::golden::read_snap(&root().join("golden/concurrent.clients.snap")).expect("the snapshot");
    if got != want {
        panic!("the clients' stories in Docker differ from the snapshot:\n{}", harness::golden::diff(&want, &got));
    }
}

/// A `crash` of the OSS container (SIGKILL: the uncommitted cache in lnetd's memory is gone, the
/// volume keeps what was committed): the clients replay, every byte is verified.
#[test]
fn a_crashed_oss_container_is_recovered_by_replay() {
    let r = run_cli("clusters/crash.yaml", 2 * 2 * (32 << 20));
    assert_eq!(r["faults"]["crash"], 1, "{r}");
    assert!(r["replays"].as_u64().unwrap() >= 1, "the clients replayed what the crash lost: {r}");
    assert_eq!((r["lost_acked_writes"].clone(), r["silent_corruptions"].clone(), r["workloads"][0]["errors"].clone()), (json!(0), json!(0), json!(0)), "{r}");
}

/// (The quickstart with `--capture`: the TCP nodes' and the device's containers write their
/// pcap files into `/art/pcap`, copied out with the rest; tests/capture.rs has Wireshark read them.)
#[test]
fn quickstart_and_routed_in_docker_then_nothing_left() {
    let (r, _art) = run_cli_with("clusters/quickstart.yaml", 3 * 4 * (8 << 20), &["--capture"]);
    let pcap = PathBuf::from(r["artifacts"].as_str().unwrap()).join("pcap");
    for n in ["oss1", "c3"] {
        let b = std::fs::read(pcap.join(format!("{n}.pcap"))).unwrap_or_default();
        assert!(b.len() > 4 << 20 && b[..4] == 0xa1b2_c3d4u32.to_le_bytes(), "{n}.pcap: {} bytes", b.len());
    }
    // The device container's capture of the fabric (link type USER0, 147).
    let b = std::fs::read(pcap.join("dma-dma0.pcap")).unwrap_or_default();
    assert!(b.len() > 64 << 10 && b[20..24] == 147u32.to_le_bytes(), "dma-dma0.pcap: {} bytes", b.len());
    assert!(!pcap.join("c1.pcap").exists(), "c1 is on DMA only: nothing to capture");
    run_cli("clusters/routed.yaml", 2 * 2 * (4 << 20));
}

#[test]
fn oss_killed_and_restarted_keeps_its_data() {
    let spec = ClusterSpec::load(&root().join("clusters/quickstart.yaml")).unwrap();
    let b = DockerBackend::with_node_binaries(Some(static_dir())).unwrap();
    let p = plan(&spec, 5, b.tcp_addressing(&spec).unwrap().unwrap().as_ref());
    let art = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let t = Duration::from_secs(120);
    let mut c = b.up(&p, scratch.path(), art.path(), t, &|s: &str| eprintln!("{s}")).unwrap();
    let oss = p.nodes.iter().position(|n| n.name == "oss1").unwrap();
    let c3 = p.nodes.iter().position(|n| n.name == "c3").unwrap();
    let start_oss = |c: &mut harness::cluster::control::Cluster| {
        let targets: Vec<_> = p.nodes[oss].targets.iter().map(|x| json!({"index": x.ost, "dir": c.target_dirs[&("oss1".to_string(), x.ost)], "size": x.size.0})).collect();
        c.cmd(oss, json!({"op": "oss_start", "targets": targets}), t).unwrap();
    };
    let io = |c: &mut harness::cluster::control::Cluster, extra: serde_json::Value| -> serde_json::Value {
        let mut job = json!({"name": "restart", "targets": p.targets_for("c3"), "files": 2, "file_size": 3 << 20, "stripe_size": 1 << 20, "stripe_count": 2, "seed": 9});
        for (k, v) in extra.as_object().unwrap() {
            job[k] = v.clone();
        }
        c.cmd(c3, json!({"op": "io", "job": job}), t).unwrap();
        let deadline = Instant::now() + t;
        loop {
            if let Some(pos) = c.backlog.iter().position(|(i, v)| *i == c3 && v.get("io_done").is_some()) {
                return c.backlog.remove(pos).1["io_done"].clone();
            }
            match c.next(deadline).unwrap() {
                (i, harness::cluster::control::NodeLine::Line(v)) => c.backlog.push((i, v)),
                (i, _) => panic!("node {i} exited"),
            }
        }
    };
    start_oss(&mut c);
    let first = io(&mut c, json!({}));
    assert_eq!((first["errors"].clone(), first["bytes_written"].clone()), (json!(0), json!(2 * (3 << 20))), "{first}");
    b.restart(&mut c, oss, t).unwrap();
    start_oss(&mut c);
    let again = io(&mut c, json!({"objects": first["objects"], "write": false}));
    assert_eq!((again["errors"].clone(), again["bytes_verified"].clone()), (json!(0), json!(2 * (3 << 20))), "{again}");
    let run = b.run_id.clone();
    c.down();
    assert!(leftovers(Some(&run)).is_empty(), "{:?}", leftovers(Some(&run)));
}

#[test]
fn a_sigkilled_run_is_reaped_by_the_next() {
    let art = tempfile::tempdir().unwrap();
    let child = lnetlab()
        .args(["run", root().join("clusters/routed.yaml").to_str().unwrap(), "--backend", "docker", "--keep", "--artifacts", art.path().to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed however the test ends: a `--keep` run left behind holds its cluster (and its node
    // image) up for every later test.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let pid = child.0.id().to_string();
    let mine = || {
        let o = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=lnetlab.pid={pid}")]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    let t0 = Instant::now();
    while mine() < 5 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the run never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Its scratch directory, named on its containers (asked of each: in a loaded CI run the
    // first one listed once answered nothing).
    let o = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=lnetlab.pid={pid}")]).output().unwrap();
    let labels: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|c| {
            let o = Command::new("docker").args(["inspect", "--format", "{{index .Config.Labels \"lnetlab.scratch\"}}", c]).output().unwrap();
            format!("{}{}", String::from_utf8_lossy(&o.stdout).trim(), String::from_utf8_lossy(&o.stderr).trim())
        })
        .collect();
    let scratch = PathBuf::from(labels.iter().find(|l| l.starts_with('/')).unwrap_or_else(|| panic!("no container names its scratch directory: {labels:?}")));
    assert!(scratch.is_dir(), "{}", scratch.display());
    child.0.kill().unwrap(); // SIGKILL: no teardown runs
    child.0.wait().unwrap();
    assert!(mine() >= 5, "a killed run leaves its containers");
    // The next run starts by reaping runs whose lnetlab is gone.
    let b = DockerBackend::new().unwrap();
    assert_eq!(mine(), 0, "reaped");
    assert!(!scratch.exists(), "its scratch directory went with it");
    let o = Command::new("docker").args(["network", "ls", "-q", "--filter", &format!("label=lnetlab.pid={pid}")]).output().unwrap();
    assert!(o.stdout.is_empty());
    let o = Command::new("docker").args(["volume", "ls", "-q", "--filter", &format!("label=lnetlab.pid={pid}")]).output().unwrap();
    assert!(o.stdout.is_empty());
    drop(b);
}

#[test]
fn exported_compose_file_brings_the_cluster_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yml");
    let st = lnetlab().args(["export", root().join("clusters/routed.yaml").to_str().unwrap(), "--compose", "-o", file.to_str().unwrap()]).status().unwrap();
    assert!(st.success());
    let (prog, pre): (&str, &[&str]) = if Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success()) {
        ("docker-compose", &[])
    } else {
        ("docker", &["compose"])
    };
    let project = format!("lnetlabtest{}", std::process::id());
    let dc = |args: &[&str]| Command::new(prog).args(pre).args(["-f", file.to_str().unwrap(), "-p", &project]).args(args).output().unwrap();
    let up = dc(&["up", "-d"]);
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let t0 = Instant::now();
    let ready = loop {
        let logs = String::from_utf8_lossy(&dc(&["logs"]).stdout).matches("\"ready\":true").count();
        if logs >= 4 || t0.elapsed() > Duration::from_secs(60) {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let down = dc(&["down", "-v"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert_eq!(ready, 4, "every node of the routed cluster came up under compose");
}

/// testcontainers for the one thing it fits: a single container of our image starts and its
/// device serves.
#[tokio::test]
async fn image_smoke_test_with_testcontainers() {
    use testcontainers::core::WaitFor;
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};
    let tag = tokio::task::spawn_blocking(|| {
        let e = harness::cluster::backends::docker::Engine::connect().unwrap();
        harness::cluster::backends::docker::ensure_image_from(&e, Some(&static_dir())).unwrap()
    })
    .await
    .unwrap();
    let (repo, version) = tag.split_once(':').unwrap();
    let c = GenericImage::new(repo, version)
        .with_entrypoint("/dmadev")
        .with_wait_for(WaitFor::message_on_stderr("dmadev serving"))
        .with_cmd(["--fabric", "/fabric"])
        .with_label(LABEL_RUN, format!("smoke-{}", std::process::id()))
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("the node image starts and its dmadev serves");
    let id = c.id().to_string();
    c.rm().await.unwrap();
    let o = Command::new("docker").args(["ps", "-aq", "--filter", &format!("id={id}")]).output().unwrap();
    assert!(o.stdout.is_empty(), "removed");
}

#[test]
fn ctrl_c_on_a_docker_run_tears_everything_down() {
    let art = tempfile::tempdir().unwrap();
    let mut child = lnetlab()
        .args(["run", root().join("clusters/quickstart.yaml").to_str().unwrap(), "--backend", "docker", "--keep", "--artifacts", art.path().to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let count = |what: &[&str]| {
        let o = Command::new("docker").args(what).args(["--filter", &format!("label=lnetlab.pid={pid}")]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    let t0 = Instant::now();
    while count(&["ps", "-q"]) < 5 {
        assert!(t0.elapsed() < Duration::from_secs(120), "the run never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert_eq!((count(&["ps", "-aq"]), count(&["network", "ls", "-q"]), count(&["volume", "ls", "-q"])), (0, 0, 0), "left after Ctrl-C ({st})");
    let logs = std::fs::read_dir(art.path()).unwrap().next().unwrap().unwrap().path().join("containers");
    assert!(std::fs::read_dir(logs).unwrap().count() >= 5, "container logs saved before removal");
}

/// A labelled volume standing for one object of a run (`lnetlab.run=RUN` plus `labels`).
fn fake_run_volume(run: &str, labels: &[(&str, String)]) -> String {
    let name = format!("lnetlab-test21-{run}");
    let mut c = Command::new("docker");
    c.args(["volume", "create", "--label", &format!("{LABEL_RUN}={run}")]);
    for (k, v) in labels {
        c.args(["--label", &format!("{k}={v}")]);
    }
    let o = c.arg(&name).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    name
}

#[test]
fn only_provably_dead_runs_are_reaped() {
    use harness::cluster::backends::docker::{host_identity, Engine, LABEL_HOST, LABEL_PID, LABEL_START};
    let salt = std::process::id();
    let me = harness::procs::ProcId::me();
    let init = std::fs::read_to_string("/proc/1/stat").unwrap();
    let init_start = init[init.rfind(')').unwrap() + 2..].split(' ').nth(19).unwrap().to_string();
    // lnetlab in another pid namespace (a CI container on the host's socket): pid 999999 means
    // nothing here.
    let other_ns = fake_run_volume(&format!("ns{salt}"), &[(LABEL_PID, "999999".into()), (LABEL_HOST, "another-host/pid:[1]".into()), (LABEL_START, "5".into())]);
    // A live run (pid 1 here, as another user's would be): alive by pid and start time.
    let live = fake_run_volume(&format!("live{salt}"), &[(LABEL_PID, "1".into()), (LABEL_HOST, host_identity()), (LABEL_START, init_start)]);
    // Ours, dead: same host, our pid with another start time (the pid was reused).
    let dead = fake_run_volume(&format!("dead{salt}"), &[(LABEL_PID, me.pid.to_string()), (LABEL_HOST, host_identity()), (LABEL_START, (me.start + 1).to_string())]);
    let e = Engine::connect().unwrap();
    harness::cluster::backends::docker::reap_stale(&e).unwrap();
    let exists = |v: &str| Command::new("docker").args(["volume", "inspect", v]).output().unwrap().status.success();
    let (a, b, c) = (exists(&other_ns), exists(&live), exists(&dead));
    // And `down --all` removes only what dead runs left.
    let out = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["down", "--all"]).output().unwrap();
    let (a2, b2) = (exists(&other_ns), exists(&live));
    for v in [&other_ns, &live, &dead] {
        let _ = Command::new("docker").args(["volume", "rm", v]).output();
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(a && b && !c, "another namespace's run kept: {a}, a live run kept: {b}, a dead run reaped: {}", !c);
    assert!(a2 && b2, "down --all keeps live runs: {a2} {b2}");
}

/// Issue 14: hosts in Docker — one device container per host, linked over a network of their
/// own; the fabric link cut for a second mid-run; every byte verified, pulls counted as crossing
/// the link, and nothing of the run left.
#[test]
fn two_hosts_in_docker_survive_a_cut_fabric_link() {
    let (r, _art) = run_cli_with("clusters/two-hosts-link-cut.yaml", 3 * 4 * (16 << 20), &[]);
    assert_eq!((r["lost_acked_writes"].as_u64(), r["silent_corruptions"].as_u64()), (Some(0), Some(0)), "{r}");
    assert_eq!(r["faults"]["fabric_link"], 1, "{r}");
    let l = &r["fabric_links"];
    assert!(l["bytes"].as_u64().unwrap() >= 2 * 2 * 4 * (16 << 20) && l["links_lost"].as_u64().unwrap() >= 1, "{l}");
}
