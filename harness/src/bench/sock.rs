//! `bench sock`: socklnd 1 MiB PUT bandwidth over loopback against iperf3 (one stream, same run),
//! and 1 MiB GETs from a DMA node through a router to a TCP node.

use super::metric::Metric;
use crate::runner::{serve, Notify};
use lnd::dev::client::ShmDevice;
use lnd::dmalnd::DmaLndConfig;
use lnd::lnet::{opt, EventKind, Insert, MdSpec};
use lnd::mem::Seg;
use lnd::node::{Node, NodeBuilder};
use lnd::sock::{PortPolicy, SockConfig};
use lnd::wire::{Nid, ProcessId};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u32 = 1 << 20;
const PORTAL: u32 = 21;

#[derive(Debug, Clone)]
pub struct SockBenchOpts {
    pub count: usize,
    pub window: usize,
    pub port: u16,
}

fn nid(s: &str) -> Nid {
    s.parse().expect("bench NIDs are valid")
}

fn target_md(n: &mut Node, ops: u32) -> anyhow::Result<()> {
    let off = n.arena.alloc(MIB as u64).ok_or_else(|| anyhow::anyhow!("no memory for the target buffer"))?;
    n.mem.fill(off, MIB as u64, 0x5a)?;
    let me = n.lnet.me_attach(PORTAL, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail)?;
    n.lnet.md_attach(me, MdSpec { iov: vec![Seg { off, len: MIB }], options: ops | opt::MANAGE_REMOTE | opt::TRUNCATE, threshold: None, max_size: 0, user_ptr: 0 })?;
    Ok(())
}

/// Keeps `window` operations of 1 MiB in flight from `me` until `count` complete; GB/s.
fn drive(me: &mut Node, notify: &Notify, dma: Option<&lnd::dev::client::ShmWaker>, target: ProcessId, get: bool, count: usize, window: usize) -> anyhow::Result<f64> {
    let off = me.arena.alloc(MIB as u64).ok_or_else(|| anyhow::anyhow!("no memory for the source buffer"))?;
    let md = me.lnet.md_bind(MdSpec { iov: vec![Seg { off, len: MIB }], options: 0, threshold: None, max_size: 0, user_ptr: 0 }, false);
    let done_kind = if get { EventKind::Reply } else { EventKind::Send };
    let mut run = |n: usize| -> anyhow::Result<Duration> {
        let (mut sent, mut done) = (0, 0);
        let t0 = Instant::now();
        while done < n {
            while sent < n && sent - done < window {
                if get {
                    me.lnet.get(md, target, PORTAL, 0, 0)?;
                } else {
                    me.lnet.put(md, false, target, PORTAL, 0, 0, 0)?;
                }
                sent += 1;
            }
            let busy = me.step();
            while let Some(e) = me.poll_event() {
                if e.status != 0 {
                    anyhow::bail!("{:?} failed with status {}", e.kind, e.status);
                }
                if e.kind == done_kind {
                    done += 1;
                }
            }
            if !busy && dma.map(|w| w.arm()).unwrap_or(true) {
                notify.wait(Duration::from_millis(5));
            }
            if t0.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("benchmark stalled: {done}/{n} done");
            }
        }
        Ok(t0.elapsed())
    };
    run((count / 10).max(4))?;
    let el = run(count)?;
    Ok(count as f64 * MIB as f64 / el.as_secs_f64() / 1e9)
}

/// Runs iperf3 (one stream, loopback, 3 s) and returns GB/s, or `None` when it is not installed.
pub fn iperf3_gbps(port: u16) -> anyhow::Result<Option<f64>> {
    if Command::new("iperf3").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Ok(None);
    }
    let mut server = Command::new("iperf3").args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let guard = scopeguard(&mut server);
    let mut out = None;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        let o = Command::new("iperf3").args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "3", "-J"]).output()?;
        if o.status.success() {
            out = Some(o.stdout);
            break;
        }
    }
    drop(guard);
    let Some(out) = out else { anyhow::bail!("iperf3 client never connected to its server on port {port}") };
    let v: serde_json::Value = serde_json::from_slice(&out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"].as_f64().ok_or_else(|| anyhow::anyhow!("iperf3 JSON lacks end.sum_received.bits_per_second"))?;
    Ok(Some(bps / 8.0 / 1e9))
}

fn scopeguard(c: &mut std::process::Child) -> impl Drop + '_ {
    struct G<'a>(&'a mut std::process::Child);
    impl Drop for G<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    G(c)
}

struct Bg {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, Option<String>)>>,
}

impl Bg {
    fn spawn(&mut self, node: Node, notify: Arc<Notify>, dma: Option<lnd::dev::client::ShmWaker>) {
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || serve(node, notify, dma, stop)));
    }
    fn finish(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let (mut errors, mut first) = (0, None);
        for t in self.threads {
            let (n, f) = t.join().map_err(|_| anyhow::anyhow!("node thread panicked"))?;
            errors += n;
            first = first.or(f);
        }
        if errors > 0 {
            anyhow::bail!("{errors} failed events on the serving nodes (the first: {})", first.unwrap_or_default());
        }
        Ok(())
    }
}

pub fn run(opts: &SockBenchOpts) -> anyhow::Result<Vec<Metric>> {
    // Reserved source ports need root; without it, the explicit unprivileged test mode.
    // SAFETY: geteuid has no preconditions.
    let ports = if unsafe { libc::geteuid() } == 0 { PortPolicy::Secure } else { PortPolicy::Unprivileged };
    let cfg = SockConfig { port: opts.port, ports, ..Default::default() };
    let mut bg = Bg { stop: Arc::new(AtomicBool::new(false)), threads: Vec::new() };
    // A loopback block of its own (127.a.b.1-4): two benches at once, or a bench beside a
    // cluster, never want the same listening address.
    let salt = crate::cluster::plan::random_seed() ^ std::process::id() as u64;
    let block = format!("127.{}.{}", 20 + salt % 200, (salt / 200) % 256);
    let nid = |s: &str| nid(&s.replace("127.0.10", &block));

    // TCP to TCP.
    let na = Arc::new(Notify::default());
    let nb = Arc::new(Notify::default());
    let mut a = NodeBuilder::new(ProcessId::PID_LUSTRE, 1);
    a.tcp(nid("127.0.10.1@tcp"), Box::new(na.tcp_io()), cfg.clone()).mem_size(8 << 20);
    let mut a = a.build()?;
    let mut b = NodeBuilder::new(ProcessId::PID_LUSTRE, 2);
    b.tcp(nid("127.0.10.2@tcp"), Box::new(nb.tcp_io()), cfg.clone()).mem_size(8 << 20);
    let mut b = b.build()?;
    target_md(&mut b, opt::OP_PUT | opt::OP_GET)?;
    bg.spawn(b, nb, None);
    let sock = drive(&mut a, &na, None, ProcessId::new(nid("127.0.10.2@tcp"), ProcessId::PID_LUSTRE), false, opts.count, opts.window);

    // DMA client -> router -> TCP server, GETs.
    let routed = (|| -> anyhow::Result<f64> {
        let dir = tempfile::Builder::new().prefix("lnetlab-bench-").tempdir()?;
        let _dev = crate::procs::start_dmadev(dir.path(), Duration::from_secs(10), &[], None)?;
        let nc = Arc::new(Notify::default());
        let dc = ShmDevice::connect(dir.path(), 1, 8 << 20)?;
        let wc = dc.waker()?;
        let mut c = NodeBuilder::new(ProcessId::PID_LUSTRE, 3);
        c.dma(nid("1@dma"), Box::new(dc), DmaLndConfig::default()).route("tcp".parse()?, nid("2@dma"));
        let mut c = c.build()?;
        let nr = Arc::new(Notify::default());
        let dr = ShmDevice::connect(dir.path(), 2, 64 << 20)?;
        let wr = dr.waker()?;
        nr.watch_dma(&wr)?;
        let mut r = NodeBuilder::new(ProcessId::PID_LUSTRE, 4);
        r.dma(nid("2@dma"), Box::new(dr), DmaLndConfig::default()).tcp(nid("127.0.10.3@tcp"), Box::new(nr.tcp_io()), cfg.clone()).routing(512, 256, 32);
        bg.spawn(r.build()?, nr, Some(wr));
        let ns = Arc::new(Notify::default());
        let mut s = NodeBuilder::new(ProcessId::PID_LUSTRE, 5);
        s.tcp(nid("127.0.10.4@tcp"), Box::new(ns.tcp_io()), cfg.clone()).mem_size(8 << 20).route("dma".parse()?, nid("127.0.10.3@tcp"));
        let mut s = s.build()?;
        target_md(&mut s, opt::OP_GET)?;
        bg.spawn(s, ns, None);
        nc.watch_dma(&wc)?;
        drive(&mut c, &nc, Some(&wc), ProcessId::new(nid("127.0.10.4@tcp"), ProcessId::PID_LUSTRE), true, opts.count, opts.window)
    })();
    bg.finish()?;
    let sock = sock?;
    let routed = routed?;
    let iperf = iperf3_gbps(opts.port.wrapping_add(4213).max(1024))?;
    if iperf.is_none() {
        eprintln!("bench sock: iperf3 not installed (apt-get install iperf3): no baseline for sock_put_1MiB_GBps");
    }
    Ok(vec![
        Metric::new("iperf3_loopback_GBps", iperf.unwrap_or(0.0), "GB/s", None),
        Metric::new("sock_put_1MiB_GBps", sock, "GB/s", iperf),
        Metric::new("routed_get_1MiB_GBps", routed, "GB/s", Some(sock)),
    ])
}
