//! Issue 14: `lnetd` and `dmadev` take commands over TCP (`--control ADDR`) only from a
//! connection that presents the run's token; anything else is refused and logged, and the token
//! itself appears in no log.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "run-a-5f0e9d3c2b1a4e6f";
const OTHER_RUN: &str = "run-b-0123456789abcdef";

/// A daemon killed when the test ends, however it ends (a failed assertion included).
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a daemon with `args` and the run's token; returns it and its first stdout line.
fn start(bin: &str, args: &[&str], log: &std::path::Path) -> (Daemon, Value) {
    let mut c = Command::new(bin)
        .args(args)
        .env("LNETLAB_CONTROL_TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(c.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let v = serde_json::from_str(&first).unwrap_or_else(|e| panic!("`{first}`: {e}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default()));
    (Daemon(c), v)
}

/// Connects, sends `lines`, and returns what comes back until the peer closes or goes quiet.
fn talk(addr: &str, lines: &[&str], until: impl Fn(&str) -> bool) -> Vec<String> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    for l in lines {
        writeln!(w, "{l}").unwrap();
    }
    let mut got = Vec::new();
    for l in BufReader::new(s).lines() {
        let Ok(l) = l else { break };
        let done = until(&l);
        got.push(l);
        if done {
            break;
        }
    }
    got
}

fn refused(got: &[String]) -> bool {
    got.len() == 1 && got[0].contains("refused")
}

#[test]
fn the_control_endpoint_takes_only_the_runs_token() {
    let dir = tempfile::tempdir().unwrap();
    let fabric = dir.path().to_str().unwrap();
    let (dlog, nlog) = (dir.path().join("dmadev.log"), dir.path().join("lnetd.log"));
    let (dev, d) = start(env!("CARGO_BIN_EXE_dmadev"), &["--fabric", fabric, "--control", "127.0.0.1:0", "--exit-on-stdin-close"], &dlog);
    let dev_ctl = d["control"].as_str().unwrap().to_string();
    let (node, ready) = start(env!("CARGO_BIN_EXE_lnetd"), &["--fabric", fabric, "--nid", "1@dma", "--mem", "4MiB", "--control", "127.0.0.1:0"], &nlog);
    assert_eq!(ready["ready"], true, "{ready}");
    let ctl = ready["control"].as_str().unwrap().to_string();

    // No token, another run's token, a token that is not JSON: refused, connection closed.
    assert!(refused(&talk(&ctl, &[r#"{"op":"stats","id":1}"#], |_| false)), "a command without a token");
    assert!(refused(&talk(&ctl, &[&format!(r#"{{"token":"{OTHER_RUN}"}}"#)], |_| false)), "another run's token");
    assert!(refused(&talk(&ctl, &[TOKEN], |_| false)), "the token, but not as a token line");
    assert!(refused(&talk(&dev_ctl, &[&format!(r#"{{"token":"{OTHER_RUN}"}}"#), "cut 1 2 on"], |_| false)), "the device too");

    // The run's token: the connection drives the node like its stdin does.
    let hello = format!(r#"{{"token":"{TOKEN}"}}"#);
    let got = talk(&ctl, &[&hello, r#"{"op":"stats","id":7}"#], |l| l.contains("\"id\":7"));
    assert!(got[0].contains("controller attached"), "{got:?}");
    let reply: Value = serde_json::from_str(got.last().unwrap()).unwrap();
    assert_eq!((reply["id"].as_u64(), reply["ok"].as_bool()), (Some(7), Some(true)), "{got:?}");
    let got = talk(&dev_ctl, &[&hello, "cut 1 2 on", "cut 1 two on"], |l| l.contains("error"));
    assert_eq!(got[1..], [r#"{"ok":"cut 1 2 on"}"#.to_string(), r#"{"error":"`two` is not a fabric address"}"#.to_string()], "{got:?}");

    drop((node, dev));
    for log in [&nlog, &dlog] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(text.contains("control connection refused"), "refusals are logged:\n{text}");
        assert!(!text.contains(TOKEN) && !text.contains(OTHER_RUN), "no token in the log:\n{text}");
    }
}

#[test]
fn control_without_a_token_in_the_environment_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dmadev")).args(["--fabric", dir.path().to_str().unwrap(), "--control", "127.0.0.1:0"]).env_remove("LNETLAB_CONTROL_TOKEN").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("LNETLAB_CONTROL_TOKEN"), "{err}");
}
