//! The Docker backend leaves no mess and tells the truth (issue 21): teardown waits for nodes
//! to finish writing, artifacts come through the Engine's API (no bind mount, owned by us), the
//! image comes from the node binaries beside lnetlab, subnets are allocated atomically, and a
//! SIGKILLed run is cleaned by `down --all`. Needs `--features cluster` and the static node
//! binaries (`.ci/run` builds them into target/static first).
#![cfg(feature = "cluster")]

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};




/// Objects labelled with `label` (containers, networks, volumes) still in the Engine.
fn objects(label: &str) -> Vec<String> {
    let mut out = Vec::new();
    for what in [&["ps", "-aq"][..], &["network", "ls", "-q"][..], &["volume", "ls", "-q"][..]] {
        let o = Command::new("docker").args(what).args(["--filter", &format!("label={label}")]).output().unwrap();
        out.extend(String::from_utf8_lossy(&o.stdout).lines().map(|l| format!("{} {l}", what[0])));
    }
    out
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Waits until the run of lnetlab `pid` has at least `n` running containers.
fn wait_containers(pid: u32, n: usize, child: &mut std::process::Child) {
    let t0 = Instant::now();
    loop {
        let o = Command::new("docker").args(["ps", "-q", "--filter", &format!("label=lnetlab.pid={pid}")]).output().unwrap();
        if String::from_utf8_lossy(&o.stdout).lines().count() >= n {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it came up");
        assert!(t0.elapsed() < Duration::from_secs(180), "the run never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn artifacts_come_through_the_api_with_every_last_line() {
    let art = tempfile::tempdir().unwrap();
    let mut child = lnetlab()
        .args(["run", root().join("clusters/quickstart.yaml").to_str().unwrap(), "--backend", "docker", "--keep", "--seed", "7", "--artifacts", art.path().to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Up, the workload done, the cluster kept: its progress says so.
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.contains("cluster left up")), "the run never got to --keep");
    std::thread::spawn(move || lines.for_each(drop));
    // `lnetlab logs` of a kept cluster shows what its nodes wrote so far (copied out of the
    // containers when the cluster was kept).
    let logs = lnetlab().args(["logs", "oss1"]).output().unwrap();
    let o = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=lnetlab.pid={pid}")]).output().unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect();
    let o = Command::new("docker").arg("inspect").args(["--format", "{{.Name}} {{range .Mounts}}{{.Type}}:{{.Source}} {{end}}"]).args(&ids).output().unwrap();
    let mounts = String::from_utf8_lossy(&o.stdout).to_string();
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    assert!(st.success() || st.code() == Some(130), "{st}");
    // Every point checked, every failure shown.
    let mut bad = Vec::new();
    let run = std::fs::read_dir(art.path()).unwrap().next().unwrap().unwrap().path();
    for n in ["oss1", "c1", "c2", "c3"] {
        let log = std::fs::read_to_string(run.join("nodes").join(format!("{n}.log"))).unwrap_or_default();
        if !log.contains("lnetd stopped") {
            bad.push(format!("{n}: the line lnetd writes last, at quit, is not in its log (it ends: {:?})", log.lines().last()));
        }
        let trace = std::fs::read_to_string(run.join("traces").join(format!("{n}.jsonl"))).unwrap_or_default();
        if trace.is_empty() || !trace.ends_with('\n') {
            bad.push(format!("{n}: its trace is not whole ({} bytes)", trace.len()));
        }
    }
    if !String::from_utf8_lossy(&logs.stdout).contains("lnetd up") {
        bad.push(format!("`lnetlab logs oss1` of the kept cluster: {}{}", String::from_utf8_lossy(&logs.stdout), String::from_utf8_lossy(&logs.stderr).trim()));
    }
    if mounts.contains("bind:") {
        bad.push(format!("containers write into host directories (a remote or virtualised Engine has none of ours): {}", mounts.trim().replace('\n', "; ")));
    }
    let all = files(&run);
    let me = unsafe { libc::geteuid() };
    use std::os::unix::fs::MetadataExt;
    let foreign: Vec<_> = all.iter().filter(|p| std::fs::metadata(p).unwrap().uid() != me).collect();
    if !foreign.is_empty() {
        bad.push(format!("artifacts not ours: {foreign:?}"));
    }
    if !run.join("dmadev-dma0.log").is_file() {
        bad.push(format!("no dmadev-dma0.log among {all:?}"));
    }
    let left = objects(&format!("lnetlab.pid={pid}"));
    if !left.is_empty() {
        bad.push(format!("left: {left:?}"));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn nodes_interrupted_mid_workload_still_write_their_last_lines() {
    // Ctrl-C while c1 holds messages (every one to it delayed 1.5 s): its lnetd drains them
    // (up to 2 s) before its last line; the teardown waits for that instead of copying the
    // artifacts and removing the container under it.
    let art = tempfile::tempdir().unwrap();
    let spec = art.path().join("slow-quit.yaml");
    let text = std::fs::read_to_string(root().join("clusters/quickstart.yaml")).unwrap();
    assert!(text.contains("\nfaults: []"));
    std::fs::write(&spec, text.replace("\nfaults: []", "\nfaults:\n  - {kind: lnet_delay, node: c1, rate: 1, latency: 1500ms}")).unwrap();
    let runs = art.path().join("runs");
    let mut child = lnetlab()
        .args(["run", spec.to_str().unwrap(), "--backend", "docker", "--seed", "8", "--artifacts", runs.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(lines.by_ref().map_while(Result::ok).any(|l| l.contains("oss oss1:")), "the run never started its OSS");
    std::thread::spawn(move || lines.for_each(drop));
    std::thread::sleep(Duration::from_millis(1000));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    let run = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap().path();
    let report = std::fs::read_to_string(run.join("report.json")).unwrap_or_default();
    let mut bad = Vec::new();
    for n in ["oss1", "c1", "c2", "c3"] {
        let log = std::fs::read_to_string(run.join("nodes").join(format!("{n}.log"))).unwrap_or_default();
        if !log.contains("lnetd stopped") {
            bad.push(format!("{n}: its last line (at quit) is missing; the log ends {:?}", log.lines().last()));
        }
    }
    assert!(bad.is_empty(), "{st}, report {report}\n{}", bad.join("\n"));
}

#[test]
fn node_binaries_beside_an_installed_lnetlab_make_the_image_without_cargo() {
    // An installed lnetlab: no source tree, no cargo on PATH, the static node binaries beside it.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("lnetlab");
    std::fs::copy(env!("CARGO_BIN_EXE_lnetlab"), &bin).unwrap();
    for b in ["lnetd", "dmadev"] {
        std::fs::copy(static_dir().join(b), dir.path().join(b)).unwrap();
    }
    let out = dir.path().join("compose.yml");
    let o = Command::new(&bin)
        .args(["export", root().join("clusters/routed.yaml").to_str().unwrap(), "--compose", "-o", out.to_str().unwrap()])
        .env_remove("CARGO")
        .env_remove("LNETLAB_NODE_BINARIES")
        .env("PATH", "/usr/bin:/bin")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&out).unwrap().contains("lnetlab-node:"));
}

#[test]
fn missing_or_dynamic_node_binaries_are_a_clear_error() {
    let spec = root().join("clusters/routed.yaml");
    let export = |dir: &Path| lnetlab().args(["export", spec.to_str().unwrap(), "--compose", "--node-binaries", dir.to_str().unwrap()]).output().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let o = export(empty.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("lnetd") && err.contains(&empty.path().display().to_string()) && err.contains("--node-binaries"), "{err}");
    // The ordinary (dynamically linked) build cannot run in a FROM scratch image.
    let dynamic = Path::new(env!("CARGO_BIN_EXE_lnetlab")).parent().unwrap().to_path_buf();
    let o = export(&dynamic);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not statically linked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn two_quickstart_runs_started_together_both_pass() {
    let arts: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let children: Vec<_> = arts
        .iter()
        .map(|a| lnetlab().args(["run", root().join("clusters/quickstart.yaml").to_str().unwrap(), "--backend", "docker", "--json", "--artifacts", a.path().to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn a_taken_explicit_subnet_is_an_error_not_replaced() {
    let salt = std::process::id();
    let subnet = format!("10.77.{}.0/24", salt % 250);
    let net = format!("lnetlab-test21-taken-{salt}");
    let o = Command::new("docker").args(["network", "create", "--label", &format!("lnetlab.test21={salt}"), "--subnet", &subnet, &net]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("taken.yaml");
    let text = std::fs::read_to_string(root().join("clusters/routed.yaml")).unwrap();
    let tcp = text.lines().find(|l| l.trim_start().starts_with("tcp0:")).expect("routed.yaml has tcp0").to_string();
    std::fs::write(&spec, text.replace(&tcp, &format!("  tcp0: {{kind: tcp, subnet: {subnet}}}"))).unwrap();
    let o = lnetlab().args(["run", spec.to_str().unwrap(), "--backend", "docker", "--json", "--artifacts", dir.path().join("runs").to_str().unwrap()]).output().unwrap();
    let _ = Command::new("docker").args(["network", "rm", &net]).output();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "the run must not silently use another subnet: {out}");
    assert!(out.contains(&subnet) && out.contains("taken"), "{out}");
}

#[test]
fn a_sigkilled_kept_run_is_removed_by_down_all() {
    let art = tempfile::tempdir().unwrap();
    let mut child = lnetlab()
        .args(["run", root().join("clusters/routed.yaml").to_str().unwrap(), "--backend", "docker", "--keep", "--artifacts", art.path().to_str().unwrap()])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_containers(pid, 5, &mut child);
    child.kill().unwrap(); // SIGKILL: no teardown runs
    child.wait().unwrap();
    let mine = format!("lnetlab.pid={pid}");
    assert!(objects(&mine).len() >= 5, "a killed run leaves its objects: {:?}", objects(&mine));
    let o = lnetlab().args(["down", "--all"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(objects(&mine).is_empty(), "down --all left {:?}", objects(&mine));
}

/// Networks made by a subnet test: labelled, removed at the end.
fn remove_test_networks(salt: u32) {
    let o = Command::new("docker").args(["network", "ls", "-q", "--filter", &format!("label=lnetlab.test21={salt}")]).output().unwrap();
    for id in String::from_utf8_lossy(&o.stdout).lines() {
        let _ = Command::new("docker").args(["network", "rm", id]).output();
    }
}

#[test]
fn subnets_are_claimed_atomically_and_the_search_is_bounded() {
    use harness::cluster::backends::docker::subnet::{create_network, Subnet, SubnetError};
    use harness::cluster::backends::docker::Engine;
    let salt = std::process::id();
    let lab = std::collections::HashMap::from([("lnetlab.test21".to_string(), salt.to_string())]);
    let third = 100 + salt % 100;
    let cands: Vec<Subnet> = (0..3).map(|i| Subnet::parse(&format!("10.7{i}.{third}.0/24")).unwrap()).collect();
    // Two runs after the same candidates at the same moment: each gets one of its own.
    let got: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|j| {
                let (lab, cands) = (&lab, &cands);
                s.spawn(move || create_network(&Engine::connect().unwrap(), &format!("lnetlab-test21-{salt}-{j}"), "tcp0", lab, cands, false))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // All three taken now (the third by hand): a bounded search ends with a clear error.
    let third_net = create_network(&Engine::connect().unwrap(), &format!("lnetlab-test21-{salt}-2"), "tcp0", &lab, &cands, false);
    let none = create_network(&Engine::connect().unwrap(), &format!("lnetlab-test21-{salt}-3"), "tcp0", &lab, &cands, false);
    let explicit = create_network(&Engine::connect().unwrap(), &format!("lnetlab-test21-{salt}-4"), "tcp0", &lab, &cands[..1], true);
    remove_test_networks(salt);
    let (a, b) = (got[0].as_ref().expect("first claim"), got[1].as_ref().expect("second claim"));
    assert_ne!(a, b, "both runs got a subnet, not the same one");
    assert!(third_net.is_ok());
    let err = none.expect_err("every candidate is taken");
    assert!(matches!(err, SubnetError::Exhausted { tries: 3, .. }), "{err}");
    assert!(err.to_string().contains("taken") && err.to_string().contains("subnet:"), "{err}");
    assert!(matches!(explicit, Err(SubnetError::Taken { .. })), "a taken explicit subnet is an error: {explicit:?}");
}
