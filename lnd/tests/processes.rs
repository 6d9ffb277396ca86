//! A real `dmadev` process and two `lnetd` processes: PUT and GET of 0 B, 1 B, 4 KiB and 1 MiB,
//! unaligned buffers, truncation and no-match NAKs, checked byte for byte through the control
//! protocol.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Fabric {
    dir: PathBuf,
    dev: Child,
}

impl Fabric {
    fn start(name: &str) -> Fabric {
        let dir = std::env::temp_dir().join(format!("lnetlab-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("dmadev.log")).unwrap();
        let dev = Command::new(env!("CARGO_BIN_EXE_dmadev")).arg("--fabric").arg(&dir).stderr(log).spawn().unwrap();
        let sock = dir.join("dmadev.sock");
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(t0.elapsed() < TIMEOUT, "dmadev did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        Fabric { dir, dev }
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        let _ = self.dev.kill();
        let _ = self.dev.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Lnetd {
    name: String,
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Value>,
    next: u64,
    events: Vec<Value>,
    log: PathBuf,
}

impl Lnetd {
    fn start(fab: &Fabric, nid: &str) -> Lnetd {
        Lnetd::start_with(fab, nid, &["--nid", nid])
    }

    fn start_with(fab: &Fabric, name: &str, args: &[&str]) -> Lnetd {
        let nid = name;
        let log = fab.dir.join(format!("{nid}.log"));
        // The fabric only for a node with a DMA NID (lnetd refuses a --fabric it cannot pair).
        let fabric: &[&str] = if args.iter().any(|a| a.contains("@dma")) { &["--fabric", fab.dir.to_str().unwrap()] } else { &[] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_lnetd"))
            .args(fabric)
            .args(["--mem", "16MiB"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { return };
                let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("lnetd printed non-JSON `{l}`: {e}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut d = Lnetd { name: nid.to_string(), child, stdin, rx, next: 1, events: Vec::new(), log };
        let ready = d.recv();
        assert_eq!(ready["ready"], true, "{ready}");
        d
    }

    fn recv(&mut self) -> Value {
        match self.rx.recv_timeout(TIMEOUT) {
            Ok(v) => v,
            Err(_) => panic!("{}: no output in {TIMEOUT:?}; log:\n{}", self.name, std::fs::read_to_string(&self.log).unwrap_or_default()),
        }
    }

    fn cmd(&mut self, mut c: Value) -> Value {
        let id = self.next;
        self.next += 1;
        c["id"] = json!(id);
        writeln!(self.stdin, "{c}").unwrap();
        loop {
            let v = self.recv();
            if v.get("event").is_some() {
                self.events.push(v["event"].clone());
            } else if v["id"] == json!(id) {
                assert_eq!(v["ok"], true, "{}: {c} failed: {v}", self.name);
                return v;
            }
        }
    }

    /// Waits until `n` events are collected; returns and clears them.
    fn events(&mut self, n: usize) -> Vec<Value> {
        while self.events.len() < n {
            let v = self.recv();
            if v.get("event").is_some() {
                self.events.push(v["event"].clone());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        while let Ok(v) = self.rx.try_recv() {
            if v.get("event").is_some() {
                self.events.push(v["event"].clone());
            }
        }
        assert_eq!(self.events.len(), n, "{}: unexpected extra events {:?}", self.name, self.events);
        std::mem::take(&mut self.events)
    }

    fn read(&mut self, md: &Value) -> Vec<u8> {
        let r = self.cmd(json!({"op": "read", "md": md}));
        lnd::daemon::unhex(r["data_hex"].as_str().unwrap()).unwrap()
    }
}

impl Drop for Lnetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 131 + i / 251) as u8) ^ seed).collect()
}

fn hex(b: &[u8]) -> String {
    lnd::daemon::hex(b)
}

/// The event, minus `md`/`user_ptr` (checked separately), as an exact JSON object.
fn ev(kind: &str, peer: &str, portal: u32, bits: u64, rlen: usize, mlen: usize, offset: usize, hdr_data: u64, status: i32, unlinked: bool) -> Value {
    json!({"kind": kind, "peer": peer, "portal": portal, "match_bits": bits, "rlength": rlen, "mlength": mlen,
           "offset": offset, "hdr_data": hdr_data, "status": status, "unlinked": unlinked})
}

fn strip(mut e: Value, md: &Value) -> Value {
    assert_eq!(&e["md"], md, "event on the wrong MD: {e}");
    let o = e.as_object_mut().unwrap();
    o.remove("md");
    o.remove("user_ptr");
    e
}

fn pair(name: &str) -> (Fabric, Lnetd, Lnetd) {
    let fab = Fabric::start(name);
    let a = Lnetd::start(&fab, "1@dma");
    let b = Lnetd::start(&fab, "2@dma");
    (fab, a, b)
}

const A: &str = "12345-1@dma";
const B: &str = "12345-2@dma";

#[test]
fn put_and_get_of_every_size_between_processes() {
    let (_fab, mut a, mut b) = pair("sizes");
    for (i, size) in [0usize, 1, 4096, 1 << 20].into_iter().enumerate() {
        let data = pattern(size, i as u8);
        // PUT with ACK into an unaligned buffer.
        let sink = b.cmd(json!({"op": "post", "portal": 10, "match_bits": size, "segs": [{"len": size, "pad": 3}],
                                "options": ["put"], "threshold": 1, "unlink": true}))["md"].clone();
        let src = a.cmd(json!({"op": "bind", "segs": [{"len": size, "pad": 5}], "data_hex": hex(&data), "threshold": 2, "unlink": true}))["md"].clone();
        a.cmd(json!({"op": "put", "md": src, "target": B, "portal": 10, "match_bits": size, "ack": true, "hdr_data": 7}));
        let eb = b.events(1);
        assert_eq!(strip(eb[0].clone(), &sink), ev("PUT", A, 10, size as u64, size, size, 0, 7, 0, true));
        let ea = a.events(2);
        assert_eq!(strip(ea[0].clone(), &src), ev("SEND", B, 10, size as u64, size, size, 0, 7, 0, false));
        assert_eq!(strip(ea[1].clone(), &src), ev("ACK", B, 0, size as u64, size, size, 0, 0, 0, true));
        assert_eq!(b.read(&sink), data, "PUT of {size} bytes");

        // GET from a target buffer into an unaligned sink.
        let gdata = pattern(size, 0x5a ^ i as u8);
        let gsrc = b.cmd(json!({"op": "post", "portal": 11, "match_bits": size, "segs": [{"len": size, "pad": 9}],
                                "options": ["get"], "data_hex": hex(&gdata)}))["md"].clone();
        let gsink = a.cmd(json!({"op": "bind", "segs": [{"len": size, "pad": 1}], "threshold": 2, "unlink": true}))["md"].clone();
        a.cmd(json!({"op": "get", "md": gsink, "target": B, "portal": 11, "match_bits": size}));
        let ea = a.events(2);
        assert_eq!(strip(ea[0].clone(), &gsink), ev("SEND", B, 11, size as u64, 0, 0, 0, 0, 0, false));
        assert_eq!(strip(ea[1].clone(), &gsink), ev("REPLY", B, 0, 0, size, size, 0, 0, 0, true));
        let eb = b.events(1);
        assert_eq!(strip(eb[0].clone(), &gsrc), ev("GET", A, 11, size as u64, size, size, 0, 0, 0, false));
        assert_eq!(a.read(&gsink), gdata, "GET of {size} bytes");
    }
    let st = b.cmd(json!({"op": "stats"}));
    assert_eq!(st["idle"], true, "{st}");
    let dma = &st["lnds"][1]["stats"];
    assert!(dma["immediate"].as_u64().unwrap() >= 2 && dma["put_rdma"].as_u64().unwrap() == 0, "{dma}");
    // Replies of 0 and 1 bytes come back inline (GET_DONE); 4 KiB and 1 MiB are staged.
    assert!(dma["get_immediate"].as_u64().unwrap() == 2 && dma["get_rdma"].as_u64().unwrap() == 2, "{dma}");
}

#[test]
fn offsets_truncation_and_nak_between_processes() {
    let (_fab, mut a, mut b) = pair("trunc");
    let data = pattern(1 << 20, 0x33);
    // Remote-managed offset 4097 into a 3-segment truncating sink of 300 KiB.
    let sink = b.cmd(json!({"op": "post", "portal": 6, "match_bits": 1, "match_id": A,
        "segs": [{"len": 100_001, "pad": 7}, {"len": 99_999, "pad": 1}, {"len": 107_200, "pad": 0}],
        "options": ["put", "manage_remote", "truncate"]}))["md"].clone();
    let src = a.cmd(json!({"op": "bind", "segs": [{"len": 524_289, "pad": 2}, {"len": 524_287, "pad": 3}], "data_hex": hex(&data)}))["md"].clone();
    a.cmd(json!({"op": "put", "md": src, "target": B, "portal": 6, "match_bits": 1, "offset": 4097, "ack": true}));
    let want = 307_200 - 4097;
    assert_eq!(strip(b.events(1)[0].clone(), &sink), ev("PUT", A, 6, 1, 1 << 20, want, 4097, 0, 0, false));
    let ea = a.events(2);
    assert_eq!(ea[1]["kind"], "ACK");
    assert_eq!(ea[1]["mlength"], want);
    let got = b.read(&sink);
    assert_eq!(&got[4097..], &data[..want]);
    assert!(got[..4097].iter().all(|&x| x == 0));

    // A matching ME from the wrong source does not match: NAK, error at the initiator.
    let c = b.cmd(json!({"op": "post", "portal": 7, "match_bits": 1, "match_id": "12345-9@dma", "segs": [{"len": 8192}], "options": ["put"]}))["md"].clone();
    a.cmd(json!({"op": "put", "md": src, "target": B, "portal": 7, "match_bits": 1}));
    let ea = a.events(1);
    assert_eq!(strip(ea[0].clone(), &src), ev("SEND", B, 7, 1, 1 << 20, 1 << 20, 0, 0, -61, false));
    // GET with no match anywhere: both the SEND and the REPLY fail with ENODATA.
    let sink2 = a.cmd(json!({"op": "bind", "segs": [{"len": 10}]}))["md"].clone();
    a.cmd(json!({"op": "get", "md": sink2, "target": B, "portal": 99, "match_bits": 0}));
    let ea = a.events(2);
    assert_eq!(ea[0]["status"], -61);
    assert_eq!((ea[1]["kind"].clone(), ea[1]["status"].clone()), (json!("REPLY"), json!(-61)));
    let _ = c;
    assert_eq!(b.cmd(json!({"op": "stats"}))["lnds"][1]["stats"]["naks_sent"], 2);
}

#[test]
fn bad_commands_get_clear_errors() {
    let (_fab, mut a, _b) = pair("errors");
    writeln!(a.stdin, "this is not json").unwrap();
    let r = a.recv();
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("bad JSON"), "{r}");
    writeln!(a.stdin, r#"{{"id": 5, "op": "put", "md": 1}}"#).unwrap();
    let r = a.recv();
    assert!(r["error"].as_str().unwrap().contains("missing field"), "{r}");
    assert_eq!(r["id"], 5);
    writeln!(a.stdin, r#"{{"id": 6, "op": "bind", "segs": [{{"len": 999999999}}]}}"#).unwrap();
    assert!(a.recv()["error"].as_str().unwrap().contains("out of node memory"));
}

/// The device process dies and a new one starts on the same fabric: the nodes fail what was in
/// flight, attach again with the same memory and move data as before. A device that stays away
/// longer than `--wait-device` ends lnetd with a reason (it does not hang).
#[test]
fn device_restart_is_survived_and_device_loss_is_bounded() {
    let (mut fab, mut a, mut b) = pair("devrestart");
    fab.dev.kill().unwrap();
    fab.dev.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::File::create(fab.dir.join("dmadev2.log")).unwrap();
    fab.dev = Command::new(env!("CARGO_BIN_EXE_dmadev")).arg("--fabric").arg(&fab.dir).stderr(log).spawn().unwrap();
    let size = 1 << 20;
    let data = pattern(size, 0x42);
    let sink = b.cmd(json!({"op": "post", "portal": 10, "match_bits": 1, "segs": [{"len": size}], "options": ["put"], "threshold": 1, "unlink": true}))["md"].clone();
    // Both attach again on their own (they retry every 100 ms).
    let t0 = Instant::now();
    while ![&a, &b].iter().all(|n| std::fs::read_to_string(&n.log).unwrap().contains("DMA device back")) {
        assert!(t0.elapsed() < TIMEOUT, "the nodes did not attach to the restarted device");
        std::thread::sleep(Duration::from_millis(20));
    }
    let src = a.cmd(json!({"op": "bind", "segs": [{"len": size}], "data_hex": hex(&data), "threshold": 2, "unlink": true}))["md"].clone();
    a.cmd(json!({"op": "put", "md": src, "target": B, "portal": 10, "match_bits": 1, "ack": true}));
    let ea = a.events(2);
    assert_eq!((ea[0]["kind"].clone(), ea[0]["status"].clone(), ea[1]["kind"].clone()), (json!("SEND"), json!(0), json!("ACK")), "{ea:?}");
    assert_eq!(b.events(1)[0]["kind"], "PUT");
    assert_eq!(b.read(&sink), data);
    let st = a.cmd(json!({"op": "stats"}));
    assert_eq!(st["lnds"][1]["stats"]["device_losses"], 1, "{st}");
    assert!(std::fs::read_to_string(&a.log).unwrap().contains("DMA device lost"));
    // Now it goes for good: lnetd waits --wait-device (10 s by default, 1 s here), then exits.
    let mut c = Lnetd::start_with(&fab, "3@dma", &["--nid", "3@dma", "--wait-device", "1"]);
    fab.dev.kill().unwrap();
    fab.dev.wait().unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = c.child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < TIMEOUT, "lnetd kept running without its device");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(log.contains("not back within"), "{log}");
}

#[test]
fn lnetd_refuses_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_lnetd")).args(["--fabric", "/nonexistent", "--nid", "5@gni"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nid 5@gni: lnetd serves DMA NIs"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_lnetd")).args(["--nid", "1@dma", "--nid", "127.0.0.9@tcp", "--route", "tcp5"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fabric DIR is required for 1@dma"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_lnetd")).args(["--nid", "127.0.0.9@tcp", "--route", "tcp5"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--route `tcp5`: expected `NET GATEWAY`"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_lnetd")).args(["--fabric", "/a", "--fabric", "/b", "--nid", "1@dma"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 --fabric but 1 DMA --nid"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_lnetd")).args(["--fabric", "/nonexistent", "--nid", "1@dma", "--wait-device", "0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent"));
    let out = Command::new(env!("CARGO_BIN_EXE_lnetd")).args(["--nid", "127.0.0.9@tcp", "--tcp-ports", "all"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tcp-ports `all`: expected `secure` or `unprivileged`"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_dmadev")).args(["--bogus"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));
}

#[test]
fn routed_put_and_get_between_processes() {
    let fab = Fabric::start("routed");
    // Without root: another port, and the explicit unprivileged mode for source ports.
    let (port, ports) = if unsafe { libc::geteuid() } == 0 { ("988", "secure") } else { ("10988", "unprivileged") };
    let mut c = Lnetd::start_with(&fab, "1@dma", &["--nid", "1@dma", "--route", "tcp 2@dma"]);
    let _r = Lnetd::start_with(&fab, "2@dma", &["--nid", "2@dma", "--nid", "127.0.9.2@tcp", "--routing", "--port", port, "--tcp-ports", ports, "--mem", "64MiB"]);
    let mut s = Lnetd::start_with(&fab, "127.0.9.3@tcp", &["--nid", "127.0.9.3@tcp", "--route", "dma 127.0.9.2@tcp", "--port", port, "--tcp-ports", ports]);
    const S: &str = "12345-127.0.9.3@tcp";
    for (i, size) in [0usize, 1, 4096, 1 << 20].into_iter().enumerate() {
        let data = pattern(size, 0x40 + i as u8);
        // dma -> tcp PUT
        let sink = s.cmd(json!({"op": "post", "portal": 30, "match_bits": i, "segs": [{"len": size}], "options": ["put"]}))["md"].clone();
        let src = c.cmd(json!({"op": "bind", "segs": [{"len": size, "pad": 1}], "data_hex": hex(&data), "threshold": 2}))["md"].clone();
        c.cmd(json!({"op": "put", "md": src, "target": S, "portal": 30, "match_bits": i, "ack": true}));
        assert_eq!(strip(s.events(1)[0].clone(), &sink), ev("PUT", A, 30, i as u64, size, size, 0, 0, 0, false));
        let ea = c.events(2);
        assert_eq!(ea[1]["kind"], "ACK");
        assert_eq!(s.read(&sink), data, "routed PUT {size}");
        // tcp -> dma GET back (the REPLY travels like a PUT)
        let gsrc = c.cmd(json!({"op": "post", "portal": 31, "match_bits": i, "segs": [{"len": size}], "options": ["get"], "data_hex": hex(&data)}))["md"].clone();
        let gsink = s.cmd(json!({"op": "bind", "segs": [{"len": size, "pad": 3}], "threshold": 2}))["md"].clone();
        s.cmd(json!({"op": "get", "md": gsink, "target": A, "portal": 31, "match_bits": i}));
        // The GET's SEND and the REPLY may be reported in either order (the REPLY can arrive
        // before the LND has finished with the GET).
        let es = s.events(2);
        let reply = es.iter().find(|e| e["kind"] == "REPLY").unwrap_or_else(|| panic!("no REPLY among {es:?}"));
        assert!(es.iter().any(|e| e["kind"] == "SEND"), "no SEND among {es:?}");
        assert_eq!(strip(reply.clone(), &gsink), ev("REPLY", A, 0, 0, size, size, 0, 0, 0, false));
        assert_eq!(strip(c.events(1)[0].clone(), &gsrc), ev("GET", S, 31, i as u64, size, size, 0, 0, 0, false));
        assert_eq!(s.read(&gsink), data, "routed GET {size}");
    }
}
