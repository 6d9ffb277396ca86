//! Issue 14: the harness drives nodes it did not start, over their TCP control endpoints with
//! the run's token (what the Kubernetes Job of `lnetlab export --k8s` does): each node is an
//! `lnetd --await-config --control ADDR`, configured over that connection; the quickstart runs
//! with every byte verified, the nodes quit at the end, and the token is in no artifact.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "remote-backend-test-6e0f4a2d91";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A daemon killed when the test ends, however it ends.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lnetlab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lnetlab"));
    c.env("LNETLAB_CONTROL_TOKEN", TOKEN);
    c
}

/// Starts an unconfigured node listening on `ip`; returns it and its control address.
fn node(ip: &str, log: &Path) -> (Daemon, String) {
    let mut c = lnetlab().args(["lnetd", "--await-config", "--control", &format!("{ip}:0"), "--log", log.to_str().unwrap()]).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(c.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("`{first}`: {e}"));
    assert_eq!(v["awaiting"], "config", "{v}");
    (Daemon(c), v["control"].as_str().unwrap().to_string())
}

fn alive(d: &mut Daemon) -> bool {
    d.0.try_wait().unwrap().is_none()
}

#[test]
fn the_harness_configures_and_drives_nodes_over_their_control_endpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let fabric = tmp.path().join("fabric-dma0");
    std::fs::create_dir_all(&fabric).unwrap();
    let mut dev = Daemon(lnetlab().args(["dmadev", "--fabric", fabric.to_str().unwrap(), "--exit-on-stdin-close"]).stdin(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap());
    let t0 = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(fabric.join("dmadev.sock")).is_err() {
        assert!(t0.elapsed().as_secs() < 10 && alive(&mut dev), "dmadev did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The quickstart's nodes; the two on tcp0 each on an address of their own.
    let mut daemons = Vec::new();
    let mut endpoints = serde_json::Map::new();
    for (name, ip) in [("oss1", "127.0.88.1"), ("c1", "127.0.88.2"), ("c2", "127.0.88.3"), ("c3", "127.0.88.4")] {
        let (d, addr) = node(ip, &tmp.path().join(format!("{name}.log")));
        daemons.push(d);
        endpoints.insert(name.into(), addr.into());
    }
    let file = tmp.path().join("endpoints.json");
    let doc = serde_json::json!({"nodes": endpoints, "fabrics": {"dma0": fabric}, "targets": tmp.path().join("targets"), "port": 10988, "unprivileged": true});
    std::fs::write(&file, doc.to_string()).unwrap();
    let art = tmp.path().join("art");
    let out = lnetlab()
        .args(["run", root().join("clusters/quickstart.yaml").to_str().unwrap(), "--json", "--seed", "5", "--timeout", "120", "--backend", &format!("remote:file:{}", file.display()), "--artifacts", art.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("no report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["ok"], true, "{r}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(r["backend"].as_str().unwrap().starts_with("remote:file:"), "{r}");
    let w = &r["workloads"][0];
    let want = 3 * 4 * (8u64 << 20);
    assert_eq!((w["bytes_written"].as_u64(), w["bytes_verified"].as_u64(), w["errors"].as_u64()), (Some(want), Some(want), Some(0)), "{r}");
    // The nodes took their NIDs from where they are, and quit when the run ended.
    let t0 = std::time::Instant::now();
    while daemons.iter_mut().any(alive) {
        assert!(t0.elapsed().as_secs() < 10, "nodes still running after the run");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let logs: String = ["oss1", "c3"].iter().map(|n| std::fs::read_to_string(tmp.path().join(format!("{n}.log"))).unwrap()).collect();
    assert!(logs.contains("127.0.88.1@tcp") && logs.contains("127.0.88.4@tcp"), "{logs}");
    for dir in [&art, &tmp.path().to_path_buf()] {
        let leaked = std::process::Command::new("grep").args(["-rl", TOKEN, dir.to_str().unwrap()]).output().unwrap();
        assert!(leaked.stdout.is_empty(), "the token is in {}", String::from_utf8_lossy(&leaked.stdout));
    }
}

/// A remote backend without the run's token, or whose nodes hold another run's, stops at once
/// with a clear error.
#[test]
fn a_remote_run_needs_the_token_and_says_who_refused_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (_d, addr) = node("127.0.89.1", &tmp.path().join("n.log"));
    let file = tmp.path().join("endpoints.json");
    let spec = tmp.path().join("one.yaml");
    std::fs::write(&spec, "name: one\nnets: {tcp0: {kind: tcp}}\nnodes:\n  - {name: n1, roles: [client], nis: [tcp0]}\nworkloads: []\n").unwrap();
    std::fs::write(&file, serde_json::json!({"nodes": {"n1": addr}, "port": 10988, "unprivileged": true}).to_string()).unwrap();
    let backend = format!("remote:file:{}", file.display());
    let run = |token: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lnetlab"));
        c.args(["run", spec.to_str().unwrap(), "--backend", &backend, "--timeout", "20", "--artifacts", tmp.path().join("art").to_str().unwrap()]).env_remove("LNETLAB_CONTROL_TOKEN");
        if let Some(t) = token {
            c.env("LNETLAB_CONTROL_TOKEN", t);
        }
        let o = c.output().unwrap();
        assert!(!o.status.success());
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let e = run(None);
    assert!(e.contains("LNETLAB_CONTROL_TOKEN"), "{e}");
    let e = run(Some("another-run-token-00000000"));
    assert!(e.contains("node n1") && e.contains("refused the run's token"), "{e}");
}
