//! Live control of a running cluster on the process backend (issue 16): `lnetlab ctl` pings
//! NIDs across the DMA fabric and TCP, shows NIs, peers and counters, adds a drop rule that is
//! listed and hit and then removed; `lnetlab workload` runs a spec's workload and a file's
//! write/read-back pair on the `up` cluster; bad input gets one line and a non-zero exit.

use serde_json::Value;
use serde_yaml_ng::Value as Y;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Its own temp, state and artifacts directories; `down` when dropped.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for d in ["tmp", "state"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Sandbox { dir }
    }
    fn p(&self, x: &str) -> PathBuf {
        self.dir.path().join(x)
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(args).env("TMPDIR", self.p("tmp")).env("XDG_STATE_HOME", self.p("state")).env_remove("LNETLAB_STATE_DIR").output().unwrap()
    }
    /// `lnetlab up SPEC --seed SEED`, artifacts in the sandbox; it must succeed.
    fn up(&self, spec: &std::path::Path, seed: &str) {
        let up = self.run(&["up", spec.to_str().unwrap(), "--seed", seed, "--artifacts", self.p("runs").to_str().unwrap()]);
        assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    }
    /// Runs `lnetlab ctl …`, which must succeed; its stdout as YAML.
    fn ctl(&self, args: &[&str]) -> Y {
        let mut a = vec!["ctl"];
        a.extend_from_slice(args);
        let o = self.run(&a);
        assert!(o.status.success(), "ctl {args:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        serde_yaml_ng::from_slice(&o.stdout).unwrap_or_else(|e| panic!("ctl {args:?}: {e}: {}", String::from_utf8_lossy(&o.stdout)))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.run(&["down"]);
    }
}

/// `lnetlab ARGS` fails, within `within`, with exactly one line on stderr containing `want`.
fn fails(sb: &Sandbox, args: &[&str], want: &str, within: Duration) -> String {
    let t0 = Instant::now();
    let o = sb.run(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.contains(want), "{args:?}: `{want}` not in: {err}");
    assert!(t0.elapsed() < within, "{args:?} took {:?}", t0.elapsed());
    err
}

fn ping_nis(y: &Y) -> Vec<(String, String)> {
    y["ping"][0]["peer ni"].as_sequence().unwrap().iter().map(|n| (n["nid"].as_str().unwrap().to_string(), n["status"].as_str().unwrap().to_string())).collect()
}

/// The node whose lnetd logs to `NODE.log` of this sandbox's run.
fn lnetd_of(sb: &Sandbox, node: &str) -> i32 {
    let needle = format!("nodes/{node}.log");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let c = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).unwrap_or_default()).replace('\0', " ");
        if c.contains(" lnetd ") && c.contains(&needle) && c.contains(sb.p("runs").to_str().unwrap()) {
            return pid;
        }
    }
    panic!("no lnetd for {node}");
}

/// Every line of every node trace of the run under `runs` carries `t_us`, never decreasing
/// within a node and less than `max_s` seconds; returns the last time of each node.
fn trace_times(runs: &Path, max_s: u64) -> Vec<u64> {
    let run = std::fs::read_dir(runs).unwrap().flatten().map(|e| e.path()).find(|p| p.is_dir() && !p.is_symlink()).unwrap();
    let mut last = Vec::new();
    for t in std::fs::read_dir(run.join("traces")).unwrap().flatten() {
        let text = std::fs::read_to_string(t.path()).unwrap();
        let mut prev = 0;
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            let t_us = v["t_us"].as_u64().unwrap_or_else(|| panic!("{}: no t_us: {l}", t.path().display()));
            assert!(t_us >= prev && t_us < max_s * 1_000_000, "{}: {t_us} after {prev}", t.path().display());
            prev = t_us;
        }
        last.push(prev);
    }
    last
}

#[test]
fn ctl_pings_shows_counts_and_injects_faults_on_an_up_cluster() {
    let sb = Sandbox::new();
    let spec = root().join("clusters/quickstart.yaml");
    fails(&sb, &["ctl", "c1", "stats", "show"], "no cluster is up", Duration::from_secs(5));
    sb.up(&spec, "5");
    let st: Value = serde_json::from_slice(&sb.run(&["status", "--json"]).stdout).unwrap();
    let nids = |node: &str| -> Vec<String> { st["nodes"].as_array().unwrap().iter().find(|n| n["name"] == node).unwrap()["nids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect() };
    let oss = nids("oss1");
    let (oss_dma, oss_tcp) = (oss.iter().find(|n| n.ends_with("@dma")).unwrap().clone(), oss.iter().find(|n| n.ends_with("@tcp")).unwrap().clone());
    let c1 = nids("c1")[0].clone();
    let want: Vec<(String, String)> = oss.iter().map(|n| (n.clone(), "up".to_string())).collect();

    // LNet ping across the DMA fabric and over socklnd: the OSS's NIs, both up.
    assert_eq!(ping_nis(&sb.ctl(&["c1", "ping", &oss_dma])), want);
    assert_eq!(ping_nis(&sb.ctl(&["c3", "ping", &oss_tcp])), want);
    fails(&sb, &["ctl", "c1", "ping", &oss_tcp], "no route", Duration::from_secs(10));
    fails(&sb, &["ctl", "c1", "ping", "99@dma", "--timeout", "1000"], "ping 99@dma", Duration::from_secs(10));

    // NIs, peers, counters.
    let net = sb.ctl(&["oss1", "net", "show"]);
    let types: Vec<&str> = net["net"].as_sequence().unwrap().iter().map(|n| n["net type"].as_str().unwrap()).collect();
    assert_eq!(types, ["lo", "dma", "tcp"], "{net:?}");
    assert_eq!(net["net"][1]["local NI(s)"][0]["nid"].as_str(), Some(oss_dma.as_str()));
    let v = sb.ctl(&["oss1", "net", "show", "-v"]);
    assert_eq!(v["net"][2]["local NI(s)"][0]["tunables"]["credits"].as_u64(), Some(256), "{v:?}");
    let peers = sb.ctl(&["c1", "peer", "show", "-v"]);
    let p = peers["peer"].as_sequence().unwrap().iter().find(|p| p["primary nid"].as_str() == Some(oss_dma.as_str())).unwrap_or_else(|| panic!("c1 has sent to the OSS: {peers:?}"));
    assert_eq!(p["peer ni"][0]["max_ni_tx_credits"].as_u64(), Some(8));
    let sent = |node: &str| sb.ctl(&[node, "stats", "show"])["statistics"]["send_count"].as_u64().unwrap();
    let before = sent("c1");
    assert!(before >= 1, "c1 has pinged");
    sb.ctl(&["c1", "ping", &oss_dma]);
    assert_eq!(sent("c1"), before + 1, "one more GET");

    // A drop rule on the OSS for c1's pings: listed, hit, removed.
    let o = sb.run(&["ctl", "oss1", "fault", "add", "--src", &c1, "--type", "get", "--portal", "0", "--interval", "1"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("added drop rule `ctl-1`"), "{o:?}");
    let rules = |node: &str| sb.ctl(&[node, "fault", "list"])["fault rules"].as_sequence().unwrap().clone();
    let r = rules("oss1");
    assert_eq!((r.len(), r[0]["src"].as_str(), r[0]["type"].as_str(), r[0]["hits"].as_u64()), (1, Some(c1.as_str()), Some("GET"), Some(0)), "{r:?}");
    fails(&sb, &["ctl", "c1", "ping", &oss_dma, "--timeout", "1000"], "ping", Duration::from_secs(10));
    assert_eq!(ping_nis(&sb.ctl(&["c2", "ping", &oss_dma])), want, "the rule matches c1 only");
    let r = rules("oss1");
    assert_eq!((r[0]["matched"].as_u64(), r[0]["hits"].as_u64()), (Some(1), Some(1)), "{r:?}");
    assert_eq!(sb.ctl(&["oss1", "stats", "show"])["statistics"]["faults_dropped"].as_u64(), Some(1));
    let o = sb.run(&["ctl", "oss1", "fault", "add", "--interval", "3", "--delay-ms", "10"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("added delay rule `ctl-2`"), "{o:?}");
    assert!(sb.run(&["ctl", "oss1", "fault", "del", "ctl-1"]).status.success());
    assert_eq!(ping_nis(&sb.ctl(&["c1", "ping", &oss_dma])), want, "the drop rule is gone");
    assert_eq!(rules("oss1").len(), 1);
    assert!(sb.run(&["ctl", "oss1", "fault", "del", "--all"]).status.success());
    assert!(rules("oss1").is_empty());

    // Bad input: one line each, never a hang.
    let quick = Duration::from_secs(10);
    fails(&sb, &["ctl", "nosuch", "stats", "show"], "no node `nosuch`", quick);
    fails(&sb, &["ctl", "c1", "ping", "bogus"], "NID `bogus`", quick);
    fails(&sb, &["ctl", "oss1", "fault", "add", "--type", "GET"], "exactly one of rate and interval", quick);
    fails(&sb, &["ctl", "oss1", "fault", "add", "--rate", "2", "--type", "FOO"], "unknown message type", quick);
    fails(&sb, &["ctl", "oss1", "fault", "add", "--rate", "2", "--src", "1@"], "--src", quick);
    fails(&sb, &["ctl", "oss1", "fault", "del", "nosuch"], "no fault rule tagged `nosuch`", quick);
    fails(&sb, &["ctl", "c1", "log-level", "a=b=c"], "log level `a=b=c`", quick);
    assert!(sb.run(&["ctl", "c1", "log-level", "debug"]).status.success());

    // Workloads on the running cluster: the spec's, and a file's write then read-back.
    let wl = sb.p("second.yaml");
    std::fs::write(&wl, "workloads:\n  - {name: second-write, kind: io, clients: [c1, c3], files: 2, size: 2MiB, stripe_size: 1MiB, stripe_count: 2}\n  - {name: second-read, kind: io, clients: [c1, c3], files: 2, size: 2MiB, stripe_size: 1MiB, stripe_count: 2, read_back: second-write, verify: true}\n").unwrap();
    let o = sb.run(&["workload", wl.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((r["ok"].as_bool(), r["workloads"][1]["name"].as_str(), r["workloads"][1]["bytes_verified"].as_u64()), (Some(true), Some("second-read"), Some(2 * 2 * (2 << 20))), "{r}");
    let o = sb.run(&["workload", "write-read"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("OK"), "{}", String::from_utf8_lossy(&o.stderr));
    fails(&sb, &["workload", "nosuch"], "no workload `nosuch`", quick);
    std::fs::write(&wl, "workloads:\n  - {name: x, kind: io, clients: [zz], files: 1, size: 1MiB}\n").unwrap();
    fails(&sb, &["workload", wl.to_str().unwrap()], "second.yaml:2:", quick);

    // A node that died, and one frozen, are named; the others still answer.
    // SAFETY: signalling our own cluster's node processes.
    unsafe { libc::kill(lnetd_of(&sb, "c2"), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    fails(&sb, &["ctl", "c2", "stats", "show"], "c2 is unreachable", quick);
    let c3 = lnetd_of(&sb, "c3");
    unsafe { libc::kill(c3, libc::SIGSTOP) };
    fails(&sb, &["ctl", "c3", "stats", "show"], "did not answer", Duration::from_secs(15));
    unsafe { libc::kill(c3, libc::SIGCONT) };
    assert_eq!(ping_nis(&sb.ctl(&["c1", "ping", &oss_dma])), want);

    assert!(sb.run(&["down"]).status.success());
    fails(&sb, &["ctl", "c1", "stats", "show"], "no cluster is up", quick);
    // The run is listed, with its seed and REPRO.
    let o = sb.run(&["runs", "--artifacts", sb.p("runs").to_str().unwrap(), "--json"]);
    let runs: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {o:?}"));
    assert_eq!((runs.as_array().unwrap().len(), runs[0]["seed"].as_u64(), runs[0]["result"].as_str()), (1, Some(5), Some("ok")), "{runs}");
    assert!(runs[0]["repro"].as_str().unwrap().contains("--seed 5"), "{runs}");
    // Node traces carry the time since the run started (the workloads ran seconds in).
    assert!(trace_times(&sb.p("runs"), 600).iter().any(|&t| t > 1_000_000), "trace times count from the run's start");
}

/// `run --keep` serves `ctl` too, from a state directory that did not exist before (on sim: the
/// kept simulation runs while a command waits for its node).
#[test]
fn ctl_reaches_a_kept_sim_run() {
    use std::io::{BufRead, BufReader};
    let sb = Sandbox::new();
    let spec = root().join("clusters/quickstart.yaml");
    let mut c = Command::new(env!("CARGO_BIN_EXE_lnetlab"));
    c.args(["run", spec.to_str().unwrap(), "--backend", "sim", "--seed", "2", "--keep", "--artifacts", sb.p("runs").to_str().unwrap()]);
    c.env("TMPDIR", sb.p("tmp")).env("XDG_STATE_HOME", sb.p("fresh-state")).env_remove("LNETLAB_STATE_DIR");
    let mut child = c.stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("--keep: cluster left up") {
        let mut l = String::new();
        assert!(err.read_line(&mut l).unwrap() > 0, "the run ended: {seen}");
        seen += &l;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["ctl", "c1", "ping", "1@dma"]).env("XDG_STATE_HOME", sb.p("fresh-state")).env_remove("LNETLAB_STATE_DIR").output().unwrap();
    // SAFETY: our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
    assert!(o.status.success(), "{}\n{seen}", String::from_utf8_lossy(&o.stderr));
    let y: Y = serde_yaml_ng::from_slice(&o.stdout).unwrap();
    assert_eq!(ping_nis(&y)[0].0, "1@dma");
    // Virtual time: well under a minute of it for the quickstart, and not zero.
    assert!(trace_times(&sb.p("runs"), 60).iter().all(|&t| t > 0));
}

/// `lnetlab fault FILE` applies a fault timeline to the running cluster: its windows open and
/// close at their times from now (recorded with trace times, also in the run's faults.jsonl),
/// its untimed rule stays installed under a `live1-` tag and bites the next workload; device
/// faults, other keys and unknown nodes are refused in one line.
#[test]
fn a_fault_file_is_applied_to_an_up_cluster() {
    let sb = Sandbox::new();
    let spec = root().join("clusters/quickstart.yaml");
    sb.up(&spec, "7");
    let f = sb.p("faults.yaml");
    std::fs::write(&f, "faults:\n  - {kind: lnet_delay, node: oss1, src: c1, portal: 6, type: PUT, interval: 2, latency: 20ms}\n  - {kind: pause, node: c2, at: 100ms, duration: 300ms}\n  - {kind: partition, between: [[c3], [oss1]], at: 50ms, duration: 100ms}\n").unwrap();
    let o = sb.run(&["fault", f.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let recs = r["records"].as_array().unwrap();
    let at = |fault: &str, action: &str| recs.iter().find(|x| x["fault"].as_str().is_some_and(|f| f.contains(fault)) && x["action"] == action).and_then(|x| x["t_us"].as_u64()).unwrap_or_else(|| panic!("no {fault} {action}: {recs:?}"));
    assert!(at("pause", "resumed") - at("pause", "paused") >= 290_000, "{recs:?}");
    assert!(at("partition", "rules removed") - at("partition", "rules added") >= 90_000, "{recs:?}");
    assert_eq!(r["counts"]["pause"], 1, "{r}");
    // The rule stays, and the spec's workload runs into it (every 2nd request from c1 held).
    let list = sb.ctl(&["oss1", "fault", "list"]);
    assert_eq!(list["fault rules"][0]["tag"].as_str(), Some("live1-lnet_delay#1"), "{list:?}");
    let w = sb.run(&["workload", "write-read", "--json"]);
    let rep: Value = serde_json::from_slice(&w.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&w.stderr)));
    assert_eq!(rep["ok"], true, "{rep}");
    let hits = sb.ctl(&["oss1", "fault", "list"]);
    assert!(hits["fault rules"][0]["hits"].as_u64() > Some(0), "{hits:?}");
    let art = std::fs::read_dir(sb.p("runs")).unwrap().filter_map(|e| e.ok()).find(|e| e.file_type().unwrap().is_dir()).unwrap().path();
    let trace = std::fs::read_to_string(art.join("traces/faults.jsonl")).unwrap();
    assert!(trace.contains("\"paused\"") && trace.contains("live1-lnet_delay#1"), "{trace}");
    for (text, want) in [
        ("faults:\n  - {kind: dma_corrupt, net: dma0, rate: 5}\n", "fault 1 (`dma_corrupt`) acts on every transfer of a device"),
        ("faults:\n  - {kind: pause, node: c9, at: 1s, duration: 1s}\n", "bad.yaml:2:"),
        ("workloads: []\n", "a fault file holds only `faults:`"),
    ] {
        let bad = sb.p("bad.yaml");
        std::fs::write(&bad, text).unwrap();
        fails(&sb, &["fault", bad.to_str().unwrap()], want, Duration::from_secs(10));
    }
    fails(&sb, &["fault", sb.p("none.yaml").to_str().unwrap()], "none.yaml: No such file", Duration::from_secs(5));
}

/// `ctl NODE discover NID` (lnetctl discover) on a Multi-Rail cluster: the peer's ping info says
/// Multi-Rail, and `peer show` lists it once, by primary NID, with its NIs on both nets.
#[test]
fn ctl_discover_shows_a_multi_rail_peer() {
    let sb = Sandbox::new();
    let spec = root().join("clusters/multirail.yaml");
    sb.up(&spec, "5");
    let st: Value = serde_json::from_slice(&sb.run(&["status", "--json"]).stdout).unwrap();
    let oss: Vec<String> = st["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "oss1").unwrap()["nids"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    let d = sb.ctl(&["c1", "discover", &oss[0]]);
    assert_eq!((d["ping"][0]["primary nid"].as_str(), d["ping"][0]["Multi-Rail"].as_bool()), (Some(oss[0].as_str()), Some(true)), "{d:?}");
    let p = sb.ctl(&["c1", "peer", "show", "-v"]);
    let peer = p["peer"].as_sequence().unwrap().iter().find(|x| x["primary nid"].as_str() == Some(oss[0].as_str())).unwrap_or_else(|| panic!("no peer {}: {p:?}", oss[0]));
    assert_eq!(peer["Multi-Rail"].as_bool(), Some(true), "{peer:?}");
    let nis: Vec<&str> = peer["peer ni"].as_sequence().unwrap().iter().map(|n| n["nid"].as_str().unwrap()).collect();
    assert_eq!(nis, oss.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "both of oss1's NIs");
    assert_eq!(peer["peer ni"][0]["health stats"]["health value"].as_u64(), Some(1000));
    assert!(sb.run(&["down"]).status.success());
}
