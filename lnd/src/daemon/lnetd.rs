//! `lnetd`: runs one node — LNet with its NIs (a DMA NI on a fabric's `dmadev`, TCP NIs via
//! socklnd), routes and optionally routing — driven by JSON commands on stdin, answering and
//! reporting events on stdout. With `--await-config` it is driven over its TCP control endpoint
//! alone and waits there for the rest of its arguments (`{"op":"config","args":[...]}`): the
//! harness of an orchestrator learns the nodes' addresses only once they run.

use super::control::Controller;
use crate::dev::client::{ShmDevice, ShmWaker};
use crate::dev::DmaDevice;
use crate::dmalnd::DmaLndConfig;
use crate::node::{dma_lnd, NodeBuilder};
use crate::sock::io::ThreadIo;
use crate::sock::pcap::Capture;
use crate::sock::SockConfig;
use crate::wire::{LndType, Net, Nid, ProcessId};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tracing::{error, info};

enum Input {
    Line(String),
    Eof,
    Wake,
    /// The device of attachment `k` went away.
    DeviceGone(usize, String),
}

/// One DMA NI's attachment to its fabric's `dmadev`, kept to attach again (same queue and
/// memory, so every MD stays where it is) if the device restarts.
struct Attachment {
    fabric: PathBuf,
    nid: Nid,
    q: Arc<crate::mem::Mem>,
    mem: Arc<crate::mem::Mem>,
    waker: Option<ShmWaker>,
    /// While the device is gone: when it went, and when we last tried to attach again.
    gone: Option<(std::time::Instant, std::time::Instant)>,
}

/// Reads a device's doorbells on a thread of its own: each wakes the main loop; an error
/// (the device went away) is reported once, for attachment `k`, and ends the thread.
fn doorbell_thread(w: &ShmWaker, k: usize, tx: mpsc::Sender<Input>) -> std::io::Result<()> {
    let bell = w.clone_for_thread()?;
    std::thread::spawn(move || loop {
        match bell.read_doorbell(None) {
            Ok(_) => {
                if tx.send(Input::Wake).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Input::DeviceGone(k, e.to_string()));
                return;
            }
        }
    });
    Ok(())
}

const USAGE_KEYS: &[&str] = &["fabric", "nid", "mem", "log", "pid", "peer-credits", "route", "port", "pcap", "router-buffers", "trace", "wait-device", "tcp-ports", "t0", "mailbox", "peer", "ni-priority", "health-sensitivity", "retry-count", "transaction-timeout", "recovery-interval", "control"];
const FLAGS: &[&str] = &["routing", "multi-rail", "await-config"];

/// A control endpoint opened before the node exists (`--await-config`): where it listens,
/// the controller's connection, and the command lines that follow the configuration.
struct Early {
    bound: String,
    remote: super::endpoint::Remote,
    lines: mpsc::Receiver<String>,
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let a = super::parse_args(args, USAGE_KEYS, FLAGS)?;
    if !a.flag("await-config") {
        return run(args, None);
    }
    super::init_logging(a.get("log"))?;
    let addr = a.get("control").ok_or_else(|| anyhow::anyhow!("--await-config needs --control ADDR (where the configuration comes from)"))?;
    let token = super::endpoint::token_from_env()?;
    let remote = super::endpoint::Remote::default();
    let (tx, lines) = mpsc::channel();
    let tx = Mutex::new(tx);
    let bound = super::endpoint::serve(addr, token, remote.clone(), move |l| tx.lock().unwrap().send(l).is_ok())?.to_string();
    println!("{}", serde_json::json!({"control": bound, "awaiting": "config"}));
    info!(control = %bound, "waiting for the node's configuration");
    let extra = loop {
        let l = lines.recv().map_err(|_| anyhow::anyhow!("control endpoint closed"))?;
        match before_config(&l) {
            Ok(Before::Config(x)) => break x,
            // Where am I? (An orchestrator assigns the addresses: the harness asks before it
            // gives a TCP NID.)
            Ok(Before::Addresses) => {
                let a: Vec<String> = crate::dev::linkio::local_addresses().unwrap_or_default().iter().map(|a| a.to_string()).collect();
                super::endpoint::copy_to(&remote, &serde_json::json!({ "addresses": a }).to_string());
            }
            Ok(Before::Other) => super::endpoint::copy_to(&remote, &serde_json::json!({"error": "configure the node first: {\"op\":\"config\",\"args\":[...]} (or ask {\"op\":\"addresses\"})"}).to_string()),
            Err(e) => super::endpoint::copy_to(&remote, &serde_json::json!({"error": e}).to_string()),
        }
    };
    let mut all: Vec<String> = args.iter().filter(|x| *x != "--await-config").cloned().collect();
    all.extend(extra);
    run(&all, Some(Early { bound, remote, lines }))
}

/// What a line asks of a node not configured yet.
enum Before {
    /// `config`: the rest of its arguments.
    Config(Vec<String>),
    /// `addresses`: where it is.
    Addresses,
    Other,
}

/// Reads a line sent before the configuration. Configuration arguments that open endpoints or
/// files of the caller's choosing are refused (the endpoint is already open).
fn before_config(line: &str) -> Result<Before, String> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| format!("not JSON: {e}"))?;
    match v["op"].as_str() {
        Some("config") => {}
        Some("addresses") => return Ok(Before::Addresses),
        _ => return Ok(Before::Other),
    }
    let args: Vec<String> = serde_json::from_value(v["args"].clone()).map_err(|e| format!("config: `args` must be a list of strings: {e}"))?;
    if let Some(bad) = args.iter().find(|x| ["--control", "--await-config", "--log"].contains(&x.as_str())) {
        return Err(format!("config: {bad} is given on the command line, not by config"));
    }
    super::parse_args(&args, USAGE_KEYS, FLAGS).map_err(|e| format!("config: {e}"))?;
    Ok(Before::Config(args))
}

fn run(args: &[String], early: Option<Early>) -> anyhow::Result<()> {
    let a = super::parse_args(args, USAGE_KEYS, FLAGS)?;
    let remotely = early.is_some();
    if early.is_none() {
        super::init_logging(a.get("log"))?;
    }
    let nids: Vec<Nid> = a.all("nid").iter().map(|s| s.parse().map_err(|e| anyhow::anyhow!("--nid {s}: {e}"))).collect::<anyhow::Result<_>>()?;
    if nids.is_empty() {
        anyhow::bail!("at least one --nid is required (N@dma and/or a.b.c.d@tcp)");
    }
    let mem = match a.get("mem") {
        Some(s) => super::parse_size(s).map_err(|e| anyhow::anyhow!("--mem: {e}"))?,
        None => 64 << 20,
    };
    let pid = match a.get("pid") {
        Some(p) => p.parse().map_err(|_| anyhow::anyhow!("--pid `{p}` is not a number"))?,
        None => ProcessId::PID_LUSTRE,
    };
    let mut dcfg = DmaLndConfig::default();
    if let Some(c) = a.get("peer-credits") {
        dcfg.peer_credits = c.parse().map_err(|_| anyhow::anyhow!("--peer-credits `{c}` is not a number"))?;
    }
    let mut scfg = SockConfig::default();
    if let Some(p) = a.get("port") {
        scfg.port = p.parse().map_err(|_| anyhow::anyhow!("--port `{p}` is not a port number"))?;
    }
    // `secure` (default, as Lustre's accept=secure): connect from and accept only ports below
    // 1024. `unprivileged`: the explicit test mode for nodes run without root.
    if let Some(p) = a.get("tcp-ports") {
        scfg.ports = p.parse().map_err(|e| anyhow::anyhow!("--tcp-ports {e}"))?;
    }
    let wait_device = match a.get("wait-device") {
        Some(w) => Duration::from_secs(w.parse().map_err(|_| anyhow::anyhow!("--wait-device `{w}` is not a number of seconds"))?),
        None => Duration::from_secs(10),
    };
    // Mailbox slots on each fabric: as many as the peers there need (the harness computes it
    // from the cluster; `dev::ring::mailbox_slots`), else the smallest.
    let mailbox = match a.get("mailbox") {
        Some(m) => m.parse::<u32>().ok().filter(|n| n.is_power_of_two() && (crate::dev::ring::MB_MIN..=crate::dev::ring::MB_MAX).contains(n)).ok_or_else(|| anyhow::anyhow!("--mailbox `{m}`: a power of two {}..={} (slots)", crate::dev::ring::MB_MIN, crate::dev::ring::MB_MAX))?,
        None => crate::dev::ring::MB_MIN,
    };
    let incarnation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    let (tx, rx) = mpsc::channel();
    // Counts socklnd inputs, so the main loop's poll before sleeping sees them as it sees the
    // devices' completions.
    let sock_inputs = Arc::new(AtomicU64::new(0));
    let spin = crate::dev::spin::Spin::default();
    let mut b = NodeBuilder::new(pid, incarnation);
    b.mem_size(mem as usize);
    if let Some(nid) = nids.iter().find(|n| !matches!(n.net().lnd(), LndType::DMALND | LndType::SOCKLND)) {
        anyhow::bail!("--nid {nid}: lnetd serves DMA NIs (N@dma) and TCP NIs (a.b.c.d@tcp)");
    }
    // The k-th --fabric is the fabric of the k-th DMA NID.
    let fabrics = a.all("fabric");
    let dma_nids: Vec<&Nid> = nids.iter().filter(|n| n.net().lnd() == LndType::DMALND).collect();
    if let Some(nid) = dma_nids.get(fabrics.len()) {
        anyhow::bail!("--fabric DIR is required for {nid} (one --fabric per DMA NID, in the same order)");
    }
    if fabrics.len() > dma_nids.len() {
        anyhow::bail!("{} --fabric but {} DMA --nid: give one --fabric DIR per DMA NID, in the same order", fabrics.len(), dma_nids.len());
    }
    let mut fabrics = fabrics.into_iter().map(PathBuf::from);
    let mut dma: Vec<Attachment> = Vec::new();
    for nid in &nids {
        match nid.net().lnd() {
            LndType::DMALND => {
                let fabric = fabrics.next().expect("counted");
                // The device may still be starting (containers start in any order), or still
                // hold our address for the incarnation a restart just killed: retry briefly.
                // A second fabric's device registers the memory of the first: one node memory.
                let dev = match dma.first() {
                    None => ShmDevice::connect_within(&fabric, nid.addr(), mem as usize, mailbox, wait_device),
                    Some(first) => ShmDevice::attach_within(&fabric, nid.addr(), crate::mem::Mem::memfd("lnet-queue", crate::dev::ring::queue_bytes(mailbox))?, first.mem.clone(), wait_device),
                }
                .map_err(|e| anyhow::anyhow!("attach {nid} to {}: {e}", fabric.display()))?;
                dma.push(Attachment { fabric, nid: *nid, q: dev.queue().clone(), mem: dev.mem().clone(), waker: Some(dev.waker()?), gone: None });
                b.dma(*nid, Box::new(dev), dcfg.clone());
            }
            LndType::SOCKLND => {
                let t = Mutex::new(tx.clone());
                let seq = sock_inputs.clone();
                let io = ThreadIo::new(Arc::new(move || {
                    seq.fetch_add(1, Ordering::Release);
                    let _ = t.lock().unwrap().send(Input::Wake);
                }));
                b.tcp(*nid, Box::new(io), scfg.clone());
            }
            _ => unreachable!("NIDs of other LNDs were refused above"),
        }
    }
    for r in a.all("route") {
        let (net, gw) = r.split_once(char::is_whitespace).or_else(|| r.split_once(':')).ok_or_else(|| anyhow::anyhow!("--route `{r}`: expected `NET GATEWAY`, e.g. `tcp0 5@dma0`"))?;
        let net: Net = net.trim().parse().map_err(|e| anyhow::anyhow!("--route `{r}`: {e}"))?;
        let gw: Nid = gw.trim().parse().map_err(|e| anyhow::anyhow!("--route `{r}`: {e}"))?;
        b.route(net, gw);
    }
    if a.flag("routing") {
        let (small, large) = match a.get("router-buffers") {
            Some(s) => {
                let (x, y) = s.split_once(',').ok_or_else(|| anyhow::anyhow!("--router-buffers `{s}`: expected SMALL,LARGE"))?;
                (x.parse()?, y.parse()?)
            }
            None => (256, 16),
        };
        b.routing(512, small, large);
    }
    if let Some(p) = a.get("pcap") {
        b.capture(Arc::new(Mutex::new(Capture::append_to(std::path::Path::new(p), true).map_err(|e| anyhow::anyhow!("--pcap {p}: {e}"))?)));
    }
    b.multi_rail(multi_rail(&a)?);
    let node = b.build()?;
    let mut ctl = Controller::new(node);
    if let Some(t) = a.get("trace") {
        ctl.set_trace(std::path::Path::new(t)).map_err(|e| anyhow::anyhow!("--trace {t}: {e}"))?;
    }
    if let Some(t0) = a.get("t0") {
        // The run's start, as microseconds since the Unix epoch: trace times count from it.
        let t0: u64 = t0.parse().map_err(|e| anyhow::anyhow!("--t0 {t0}: {e} (microseconds since the Unix epoch)"))?;
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        let now = std::time::Instant::now();
        ctl.set_trace_origin(now.checked_sub(Duration::from_micros(now_us.saturating_sub(t0))).unwrap_or(now));
    }
    info!(nids = ?nids.iter().map(|n| n.to_string()).collect::<Vec<_>>(), "lnetd up");

    let txl = tx.clone();
    if early.is_none() {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) => {
                        if txl.send(Input::Line(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = txl.send(Input::Eof);
        });
    }
    for (k, d) in dma.iter().enumerate() {
        if let Some(w) = &d.waker {
            doorbell_thread(w, k, tx.clone())?;
        }
    }

    // `--control ADDR`: the same JSON lines over TCP, for a harness on another host; replies
    // and events are copied to the controller that presented the run's token.
    let (remote, control) = match early {
        // Configured over the endpoint: its lines go on arriving there (stdin is not read).
        Some(e) => {
            let txc = tx.clone();
            std::thread::spawn(move || {
                for l in e.lines {
                    if txc.send(Input::Line(l)).is_err() {
                        return;
                    }
                }
            });
            (e.remote, Some(e.bound))
        }
        None => open_control(&a, &tx)?,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Driven over the endpoint alone, stdout is a copy nobody may read: its errors do not count.
    let stdout_optional = remotely;
    let say = |out: &mut std::io::StdoutLock, v: &dyn std::fmt::Display| -> std::io::Result<()> {
        let line = v.to_string();
        super::endpoint::copy_to(&remote, &line);
        match writeln!(out, "{line}") {
            Err(_) if stdout_optional => Ok(()),
            r => r,
        }
    };
    say(&mut out, &serde_json::json!({"ready": true, "nids": nids, "pid": pid, "control": control}))?;
    let _ = out.flush();
    loop {
        let seen = sock_inputs.load(Ordering::Acquire);
        ctl.node.step();
        for e in ctl.drain_events() {
            say(&mut out, &e)?;
        }
        match out.flush() {
            Err(_) if remotely => {}
            r => r?,
        }
        if ctl.quit {
            // Let what is in flight finish (bounded), so events and traces are complete.
            let t0 = std::time::Instant::now();
            while !ctl.node.idle() && t0.elapsed() < Duration::from_secs(2) {
                ctl.node.step();
                for e in ctl.drain_events() {
                    say(&mut out, &e)?;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = out.flush();
            // The trace is complete on disk before we say so; this line is our last.
            ctl.flush_trace();
            info!(drained = ctl.node.idle(), after = ?t0.elapsed(), "lnetd stopped (quit)");
            return Ok(());
        }
        // Work queued by roles while handling events goes out before we sleep.
        if ctl.node.lnet.has_actions() {
            continue;
        }
        for (k, d) in dma.iter_mut().enumerate() {
            let Some((since, last_try)) = d.gone else { continue };
            if last_try.elapsed() < Duration::from_millis(100) {
                continue;
            }
            match ShmDevice::attach_with(&d.fabric, d.nid.addr(), d.q.clone(), d.mem.clone()) {
                Ok(dev) => {
                    let w = dev.waker()?;
                    doorbell_thread(&w, k, tx.clone())?;
                    d.waker = Some(w);
                    dma_lnd(&mut ctl.node.lnds, d.nid).expect("a DMA NI has a DMA LND").set_device(Box::new(dev));
                    info!(nid = %d.nid, after = ?since.elapsed(), "DMA device back: attached again");
                    d.gone = None;
                }
                Err(e) if since.elapsed() > wait_device => {
                    error!("DMA device of {} did not come back within {wait_device:?}: {e}", d.nid);
                    anyhow::bail!("DMA device of {} lost and not back within {wait_device:?}: {e}", d.nid);
                }
                Err(_) => d.gone = Some((since, std::time::Instant::now())),
            }
        }
        // Poll the devices a while first when that has paid lately (a reply is often
        // microseconds away; a sleep costs two thread wake-ups), then sleep only when no
        // completion is pending (arming first closes the race).
        let spun = spin.spin(|| sock_inputs.load(Ordering::Acquire) != seen || dma.iter().any(|d| d.waker.as_ref().is_some_and(|w| w.pending())));
        let mut armed = !spun;
        for d in dma.iter().filter(|_| !spun) {
            armed &= d.waker.as_ref().map(|w| w.arm()).unwrap_or(true);
        }
        let nap = if dma.iter().any(|d| d.gone.is_some()) { Duration::from_millis(100) } else { Duration::from_millis(300) };
        let timeout = if armed { ctl.next_due().unwrap_or(Duration::MAX).min(nap) } else { Duration::ZERO };
        let slept = std::time::Instant::now();
        let got = rx.recv_timeout(timeout);
        if armed && matches!(got, Ok(Input::Wake)) {
            spin.woken_after(slept.elapsed());
        }
        match got {
            Ok(Input::Line(l)) if l.trim().is_empty() => {}
            Ok(Input::Line(l)) => {
                let r = ctl.handle_line(&l);
                say(&mut out, &r)?;
            }
            Ok(Input::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(Input::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                info!("stdin closed; exiting");
                return Ok(());
            }
            Ok(Input::DeviceGone(k, e)) => {
                // In-flight transfers fail now; the node keeps serving its other NIs and
                // attaches again when the device is back (a new dmadev on the same fabric).
                let d = &mut dma[k];
                error!("DMA device of {} lost: {e}; waiting up to {wait_device:?} for it to come back", d.nid);
                d.waker = None;
                let node = &mut ctl.node;
                if let Some(l) = dma_lnd(&mut node.lnds, d.nid) {
                    l.device_lost(&mut node.lnet);
                }
                let now = std::time::Instant::now();
                d.gone = Some((now, now - Duration::from_millis(100)));
            }
        }
    }
}

/// `--multi-rail` (say so in our ping info), `--peer PRIMARY,NID,...` (a Multi-Rail peer),
/// `--ni-priority NID=P`, and the health
/// parameters `--health-sensitivity N`, `--retry-count N`, `--transaction-timeout MS`,
/// `--recovery-interval MS`.
/// `--control ADDR`: the same JSON lines over TCP, for a harness on another host; replies and
/// events are copied to the controller that presented the run's token.
fn open_control(a: &super::Args, tx: &mpsc::Sender<Input>) -> anyhow::Result<(super::endpoint::Remote, Option<String>)> {
    let remote = super::endpoint::Remote::default();
    let Some(addr) = a.get("control") else { return Ok((remote, None)) };
    let token = super::endpoint::token_from_env()?;
    let txc = Mutex::new(tx.clone());
    let bound = super::endpoint::serve(addr, token, remote.clone(), move |l| txc.lock().unwrap().send(Input::Line(l)).is_ok())?;
    Ok((remote, Some(bound.to_string())))
}

fn multi_rail(a: &super::Args) -> anyhow::Result<crate::node::MultiRail> {
    let mut mr = crate::node::MultiRail { announce: a.flag("multi-rail"), ..Default::default() };
    let nid = |opt: &str, s: &str| s.trim().parse::<Nid>().map_err(|e| anyhow::anyhow!("--{opt} `{s}`: {e}"));
    for p in a.all("peer") {
        let nids: Vec<Nid> = p.split(',').map(|s| nid("peer", s)).collect::<anyhow::Result<_>>()?;
        if nids.len() < 2 {
            anyhow::bail!("--peer `{p}`: expected PRIMARY,NID[,NID...] (a peer with several NIDs)");
        }
        mr.peers.push((nids[0], nids));
    }
    for p in a.all("ni-priority") {
        let (n, v) = p.split_once('=').ok_or_else(|| anyhow::anyhow!("--ni-priority `{p}`: expected NID=PRIORITY"))?;
        mr.priorities.push((nid("ni-priority", n)?, v.trim().parse().map_err(|_| anyhow::anyhow!("--ni-priority `{p}`: the priority is not a number"))?));
    }
    let num = |opt: &str| -> anyhow::Result<Option<u64>> { a.get(opt).map(|v| v.parse::<u64>().map_err(|_| anyhow::anyhow!("--{opt} `{v}` is not a number"))).transpose() };
    if let Some(v) = num("health-sensitivity")? {
        mr.tunables.sensitivity = u32::try_from(v).ok().filter(|v| *v <= crate::lnet::health::MAX_HEALTH).ok_or_else(|| anyhow::anyhow!("--health-sensitivity {v}: at most {}", crate::lnet::health::MAX_HEALTH))?;
    }
    if let Some(v) = num("retry-count")? {
        mr.tunables.retry_count = u32::try_from(v).map_err(|_| anyhow::anyhow!("--retry-count {v}: too large"))?;
    }
    if let Some(v) = num("transaction-timeout")? {
        if v < 1000 {
            anyhow::bail!("--transaction-timeout {v}: at least 1000 ms");
        }
        mr.tunables.transaction_timeout_ms = v;
    }
    if let Some(v) = num("recovery-interval")? {
        mr.tunables.recovery_interval_ms = v.max(1);
    }
    Ok(mr)
}
