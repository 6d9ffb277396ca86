//! The harness never leaves a mess and never lies about state (issue 21): SIGKILL of a kept
//! run leaves no process or scratch directory behind, Ctrl-C says "interrupted", one `up` at
//! a time with a per-user state, unique artifacts, failed runs end within their timeout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Processes (other than cargo) whose command line mentions `needle`, with their pids.
fn procs_mentioning(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) && !c.contains("cargo") {
                out.push((pid, c));
            }
        }
    }
    out
}

/// A sandbox: its own temp directory (scratch) and state directory, and a working directory.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for d in ["tmp", "state", "a", "b"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        Sandbox { dir }
    }
    fn p(&self, x: &str) -> PathBuf {
        self.dir.path().join(x)
    }
    fn cmd(&self, cwd: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lnetlab"));
        c.args(args).current_dir(self.p(cwd)).env("TMPDIR", self.p("tmp")).env("XDG_STATE_HOME", self.p("state"));
        c
    }
    fn run(&self, cwd: &str, args: &[&str]) -> std::process::Output {
        self.cmd(cwd, args).output().unwrap()
    }
    fn scratch_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.p("tmp")).unwrap().flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("lnetlab-run-")).collect()
    }
}

/// Starts `c` and waits until a stderr line contains `marker`; the rest of stderr is collected.
fn spawn_until(mut c: Command, marker: &str, within: Duration) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = c.stderr(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let t0 = Instant::now();
    let mut seen = String::new();
    loop {
        let left = within.saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(marker) => break,
            Ok(l) => seen += &(l + "\n"),
            Err(_) => panic!("`{marker}` not seen within {within:?}:\n{seen}"),
        }
    }
    (child, rx)
}

fn wait_gone(needle: &str, within: Duration) -> Vec<(i32, String)> {
    let t0 = Instant::now();
    loop {
        let left = procs_mentioning(needle);
        if left.is_empty() || t0.elapsed() > within {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_of_a_kept_run_leaves_no_process_and_the_next_reaps_its_scratch() {
    let sb = Sandbox::new();
    let spec = root().join("clusters/quickstart.yaml");
    let art = sb.p("runs");
    let c = sb.cmd("a", &["run", spec.to_str().unwrap(), "--keep", "--artifacts", art.to_str().unwrap()]);
    let (mut child, _rx) = spawn_until(c, "--keep: cluster left up", Duration::from_secs(120));
    let tmp = sb.p("tmp").display().to_string();
    let procs = procs_mentioning(&tmp);
    assert!(procs.len() >= 4, "dmadev and the 3 lnetd on the DMA fabric run: {procs:?}");
    // A node frozen by a pause fault at that moment must not stay stopped forever.
    let lnetd = procs.iter().find(|(_, c)| c.contains("lnetd")).unwrap().0;
    unsafe { libc::kill(lnetd, libc::SIGSTOP) };
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    for needle in [&tmp, &art.display().to_string()] {
        let left = wait_gone(needle, Duration::from_secs(5));
        assert!(left.is_empty(), "left running after SIGKILL of lnetlab: {left:?}");
    }
    assert_eq!(sb.scratch_dirs().len(), 1, "the killed run's scratch is still there");
    let out = sb.run("a", &["down", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sb.scratch_dirs().is_empty(), "down --all reaps the dead run's scratch: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn ctrl_c_at_the_terminal_reports_interrupted_without_blaming_a_node() {
    let sb = Sandbox::new();
    let spec = root().join("clusters/quickstart.yaml");
    let art = sb.p("runs");
    let mut c = sb.cmd("a", &["run", spec.to_str().unwrap(), "--artifacts", art.to_str().unwrap()]);
    // Like a shell: the run is a process group of its own, and Ctrl-C signals the whole group.
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let (mut child, rx) = spawn_until(c, "oss oss1", Duration::from_secs(120));
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let st = child.wait().unwrap();
    let err: Vec<String> = rx.iter().collect();
    let err = err.join("\n");
    assert!(err.contains("interrupted"), "{st}: {err}");
    assert!(!err.contains("exited during"), "{st}: {err}");
    assert!(!err.contains("reproduce with"), "{st}: {err}");
    assert!(wait_gone(art.to_str().unwrap(), Duration::from_secs(5)).is_empty());
    let dir = std::fs::read_dir(&art).unwrap().next().unwrap().unwrap().path();
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["error"], "interrupted", "{r}");
}

#[test]
fn one_up_at_a_time_and_down_from_anywhere() {
    let sb = Sandbox::new();
    let spec = root().join("clusters/quickstart.yaml");
    let art = sb.p("runs");
    let spec = spec.to_str().unwrap();
    let art = art.to_str().unwrap();
    // A stale state from an `up` that crashed must not make the next `up` a silent no-op.
    let stale = sb.p("state/lnetlab");
    std::fs::create_dir_all(&stale).unwrap();
    let me = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start: u64 = me[me.rfind(')').unwrap() + 2..].split(' ').nth(19).unwrap().parse().unwrap();
    std::fs::write(stale.join("up.json"), serde_json::json!({"pid": 1, "owner": {"pid": 1, "start": start + 1}, "cluster": "old", "nodes": []}).to_string()).unwrap();
    // Two `up` at once: exactly one wins, the other is refused and says why.
    let a = sb.cmd("a", &["up", spec, "--artifacts", art]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let b = sb.cmd("b", &["up", spec, "--artifacts", art]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    // On failure, the node logs of every run say why a node left (this test once saw oss1 exit).
    let node_logs = || -> String {
        let mut out = String::new();
        for run in std::fs::read_dir(art).into_iter().flatten().flatten() {
            for log in std::fs::read_dir(run.path().join("nodes")).into_iter().flatten().flatten() {
                out += &format!("--- {}\n{}\n", log.path().display(), std::fs::read_to_string(log.path()).unwrap_or_default());
            }
        }
        out
    };
    assert_eq!([a.status.success(), b.status.success()].iter().filter(|x| **x).count(), 1, "a: {}\nb: {}\n{}", String::from_utf8_lossy(&a.stderr), String::from_utf8_lossy(&b.stderr), node_logs());
    let loser = if a.status.success() { &b } else { &a };
    assert!(String::from_utf8_lossy(&loser.stderr).contains("already up"), "{}", String::from_utf8_lossy(&loser.stderr));
    // And a third, later.
    let c = sb.run("a", &["up", spec, "--artifacts", art]);
    assert!(!c.status.success() && String::from_utf8_lossy(&c.stderr).contains("already up"), "{}", String::from_utf8_lossy(&c.stderr));
    let n = procs_mentioning(art).len();
    assert!(n >= 5, "one cluster runs: {n}");
    // status and down from another directory.
    let st = sb.run("b", &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&st.stderr)));
    assert_eq!(v["alive"], true, "{v}");
    let down = sb.run("b", &["down"]);
    assert!(down.status.success() && String::from_utf8_lossy(&down.stdout).contains("cluster down"), "{}", String::from_utf8_lossy(&down.stdout));
    let left = wait_gone(art, Duration::from_secs(5));
    assert!(left.is_empty(), "down from another directory stops it: {left:?}");
    // The last cluster's logs stay readable after down.
    let logs = sb.run("b", &["logs", "oss1"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("lnetd up"), "{}", String::from_utf8_lossy(&logs.stderr));
}

#[test]
fn status_and_logs_see_a_kept_run() {
    let sb = Sandbox::new();
    let spec = root().join("clusters/quickstart.yaml");
    let art = sb.p("runs");
    let c = sb.cmd("a", &["run", spec.to_str().unwrap(), "--keep", "--artifacts", art.to_str().unwrap()]);
    let (child, _rx) = spawn_until(c, "--keep: cluster left up", Duration::from_secs(120));
    let st = sb.run("b", &["status", "--json"]);
    let logs = sb.run("b", &["logs", "c1"]);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&st.stderr)));
    assert_eq!((v["alive"].clone(), v["cluster"].clone()), (serde_json::json!(true), serde_json::json!("quickstart")), "{v}");
    assert!(String::from_utf8_lossy(&logs.stdout).contains("lnetd up"), "{}", String::from_utf8_lossy(&logs.stderr));
    assert!(out.status.success(), "a kept run that passed ends well on Ctrl-C");
}

#[test]
fn two_runs_with_one_seed_in_one_second_get_their_own_artifacts() {
    let spec = harness::cluster::spec::ClusterSpec::load(&root().join("clusters/quickstart.yaml")).unwrap();
    let base = tempfile::tempdir().unwrap();
    let a = harness::cluster::report::artifacts_dir(&spec, 7, Some(base.path())).unwrap();
    let b = harness::cluster::report::artifacts_dir(&spec, 7, Some(base.path())).unwrap();
    assert_ne!(a, b);
    assert!(a.is_dir() && b.is_dir());
    // CLUSTER-YYYYMMDDTHHMMSSZ-SEED, the second with a suffix; `latest` is the newest.
    let name = a.file_name().unwrap().to_str().unwrap();
    let stamp = name.strip_prefix("quickstart-").and_then(|r| r.strip_suffix("-7")).unwrap_or_else(|| panic!("{name}"));
    assert!(stamp.len() == 16 && &stamp[8..9] == "T" && stamp.ends_with('Z') && stamp[..8].bytes().chain(stamp[9..15].bytes()).all(|c| c.is_ascii_digit()), "{name}");
    let bn = b.file_name().unwrap().to_str().unwrap();
    assert!(bn.starts_with("quickstart-") && (bn.ends_with("-7") || bn.ends_with("-7-2")), "{bn}");
    assert_eq!(std::fs::read_link(base.path().join("latest")).unwrap(), PathBuf::from(b.file_name().unwrap()));
}

#[test]
fn a_failed_run_ends_within_its_timeout_and_names_the_stuck_node() {
    let sb = Sandbox::new();
    // The OSS freezes for good after the workload starts; a partition window closing after the
    // failure would ask the frozen OSS to remove its rules.
    let spec = sb.p("a/stuck.yaml");
    std::fs::write(&spec, "name: stuck
nets:
  dma0: {kind: dma}
nodes:
  - name: oss1
    roles: [oss]
    nis: [dma0]
    targets: [{ost: 0, size: 64MiB}]
  - {name: c1, roles: [client], nis: [dma0]}
  - {name: c2, roles: [client], nis: [dma0]}
workloads:
  - {name: w, kind: io, clients: [c1], files: 16, size: 4MiB}
faults:
  - {kind: partition, between: [[oss1], [c2]], at: 0ms, duration: 20s}
  - {kind: pause, node: oss1, at: 0ms, duration: 60s}
").unwrap();
    let art = sb.p("runs");
    let timeout = 6;
    let t0 = Instant::now();
    let out = sb.run("a", &["run", spec.to_str().unwrap(), "--json", "--timeout", &timeout.to_string(), "--artifacts", art.to_str().unwrap()]);
    let took = t0.elapsed();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["ok"], false, "{r}");
    let up = r["elapsed_s"].as_f64().unwrap();
    assert!(took < Duration::from_secs(2 * timeout) && up < 1.6 * timeout as f64, "took {took:?} ({up} s by the report): {r}");
    let e = r["error"].as_str().unwrap();
    assert!(e.contains("c1"), "names the client that did not finish: {e}");
    // And what it waits for: its RPC to the frozen OSS, named.
    assert!(e.contains("stalled") && e.contains("c1 (job w@c1") && e.contains("waits for OST_") && e.contains("(oss1), xid"), "says what c1 waits for: {e}");
}

#[test]
fn dmadev_exits_when_its_stdin_closes() {
    let fabric = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(["dmadev", "--fabric", fabric.path().to_str().unwrap(), "--exit-on-stdin-close"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let sock = fabric.path().join(lnd::dev::proto::SOCK_NAME);
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10) && c.try_wait().unwrap().is_none(), "dmadev did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(c.stdin.take());
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(3), "dmadev still runs after its stdin closed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!sock.exists(), "it removed its socket");
}
