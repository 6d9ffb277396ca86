//! `bench dma`: DMA LND bandwidth and latency over a real `dmadev` process, against the
//! one-copy limit (cache-resident memcpy of the same size) and the device's raw SMSG round trip.

use super::metric::Metric;
use lnd::dev::client::{ShmDevice, ShmWaker};
use lnd::dev::{CompKind, Desc, DmaDevice, Op};
use lnd::dmalnd::DmaLndConfig;
use lnd::lnet::{opt, Event, EventKind, Insert, MdSpec};
use lnd::mem::Seg;
use lnd::node::Node;
use lnd::wire::{Nid, ProcessId};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const PORTAL: u32 = 20;
const WAIT: Option<Duration> = Some(Duration::from_millis(20));
/// Distinct 1 MiB buffers the bandwidth runs cycle through at each end (at least the window).
pub(crate) const BUFS: usize = 8;

#[derive(Debug, Clone)]
pub struct DmaBenchOpts {
    /// 1 MiB PUTs measured (after a warm-up).
    pub count: usize,
    /// PUTs kept in flight.
    pub window: usize,
    /// PUT+ACK round trips measured.
    pub rtts: usize,
    /// Write SVG charts here.
    pub plot: Option<std::path::PathBuf>,
}

impl Default for DmaBenchOpts {
    fn default() -> Self {
        DmaBenchOpts { count: 2000, window: 8, rtts: 5000, plot: None }
    }
}

pub(crate) struct BenchNode {
    pub(crate) node: Node,
    waker: ShmWaker,
}

impl BenchNode {
    pub(crate) fn attach(dir: &Path, addr: u32) -> anyhow::Result<BenchNode> {
        Self::attach_mem(dir, addr, (BUFS + 1) * MIB)
    }

    pub(crate) fn attach_mem(dir: &Path, addr: u32, mem: usize) -> anyhow::Result<BenchNode> {
        let dev = ShmDevice::connect(dir, addr, mem)?;
        let waker = dev.waker()?;
        let nid = nid(addr);
        let node = Node::with_dma(dev, nid, ProcessId::PID_LUSTRE, addr as u64, DmaLndConfig { peer_credits: 16, ..Default::default() });
        Ok(BenchNode { node, waker })
    }

    /// Runs the node until quiet, handing out events; returns whether anything happened.
    fn pump(&mut self, mut f: impl FnMut(Event)) -> bool {
        let mut any = self.node.step();
        while let Some(e) = self.node.poll_event() {
            any = true;
            f(e);
        }
        any
    }

    pub(crate) fn wait(&self) -> anyhow::Result<()> {
        self.waker.wait(WAIT)?;
        Ok(())
    }
}

fn nid(addr: u32) -> Nid {
    format!("{addr}@dma").parse().expect("dma nid")
}

/// Single-thread memcpy over `bufs` distinct pairs of `size`-byte buffers in turn — the
/// working set of a transfer that keeps `bufs` messages in flight, each in its own buffer at
/// both ends — in GB/s: the one-copy limit of that transfer (after at least 8 warm-up copies).
pub fn memcpy_ws_gbps(size: usize, bufs: usize, reps: usize) -> f64 {
    let src: Vec<Vec<u8>> = (0..bufs).map(|b| (0..size).map(|i| (i + b) as u8).collect()).collect();
    let mut dst: Vec<Vec<u8>> = (0..bufs).map(|_| vec![0u8; size]).collect();
    for r in 0..bufs.max(8) {
        let k = r % bufs;
        dst[k].copy_from_slice(black_box(&src[k]));
    }
    let t0 = Instant::now();
    for r in 0..reps {
        let k = r % bufs;
        black_box(&mut dst[k]).copy_from_slice(black_box(&src[k]));
    }
    (size * reps) as f64 / t0.elapsed().as_secs_f64() / 1e9
}

/// Single-thread memcpy between the same two buffers, repeated: the cache-resident one-copy
/// limit, in GB/s.
pub fn memcpy_gbps(size: usize, reps: usize) -> f64 {
    memcpy_ws_gbps(size, 1, reps)
}

/// Runs the target side: one ME taking every PUT (and serving every GET) at the offset its
/// initiator names in a buffer of `BUFS` MiB, so messages in flight land in distinct buffers.
pub(crate) fn target(mut b: BenchNode, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let me = b.node.lnet.me_attach(PORTAL, ProcessId::ANY, 0, u64::MAX, false, Insert::Tail)?;
    let len = (BUFS * MIB).min(b.node.mem.len()) as u32;
    let spec = MdSpec { iov: vec![Seg { off: 0, len }], options: opt::OP_PUT | opt::OP_GET | opt::MANAGE_REMOTE | opt::TRUNCATE, threshold: None, max_size: 0, user_ptr: 0 };
    b.node.lnet.md_attach(me, spec)?;
    while !stop.load(Ordering::Relaxed) {
        let mut bad = None;
        if !b.pump(|e| {
            if e.status != 0 {
                bad = Some(e.status)
            }
        }) {
            b.wait()?;
        }
        if let Some(s) = bad {
            anyhow::bail!("target saw a failed event (status {s})");
        }
    }
    Ok(())
}

pub(crate) fn put_bandwidth_to(a: &mut BenchNode, target_addr: u32, count: usize, window: usize) -> anyhow::Result<f64> {
    bandwidth(a, target_addr, MIB, false, count, window)
}

/// GB/s of `count` PUTs (or GETs) of `size` bytes with `window` LNet messages in flight, after
/// a warm-up. A transfer above LNET_MTU (1 MiB) goes as consecutive 1 MiB messages, as a Lustre
/// bulk of several MiB does.
pub(crate) fn bandwidth(a: &mut BenchNode, target_addr: u32, size: usize, get: bool, count: usize, window: usize) -> anyhow::Result<f64> {
    let part = size.min(MIB);
    let parts = size.div_ceil(part);
    // One MD per 1 MiB buffer, used in turn (a transfer above 1 MiB spans consecutive ones);
    // the target's offset follows, so every message in flight has its own buffer at both ends.
    let nbuf = BUFS.min(a.node.mem.len() / MIB).max(1);
    let mds: Vec<_> = (0..nbuf).map(|i| a.node.lnet.md_bind(MdSpec { iov: vec![Seg { off: (i * MIB) as u64, len: part as u32 }], options: 0, threshold: None, max_size: 0, user_ptr: 0 }, false)).collect();
    let target = ProcessId::new(nid(target_addr), ProcessId::PID_LUSTRE);
    let done_kind = if get { EventKind::Reply } else { EventKind::Send };
    let run = |a: &mut BenchNode, n: usize| -> anyhow::Result<Duration> {
        let n = n * parts;
        let (mut sent, mut done) = (0usize, 0usize);
        let t0 = Instant::now();
        while done < n {
            while sent < n && sent - done < window {
                let k = sent % nbuf;
                let (md, off) = (mds[k], (k * MIB) as u32);
                if get {
                    a.node.lnet.get(md, target, PORTAL, 0, off)?;
                } else {
                    a.node.lnet.put(md, false, target, PORTAL, 0, off, 0)?;
                }
                sent += 1;
            }
            let mut err = None;
            let progressed = a.pump(|e| {
                if e.status != 0 {
                    err = Some(e.status);
                }
                if e.kind == done_kind {
                    done += 1;
                }
            });
            if let Some(s) = err {
                anyhow::bail!("{} failed with status {s}", if get { "GET" } else { "PUT" });
            }
            if !progressed {
                a.wait()?;
            }
        }
        Ok(t0.elapsed())
    };
    run(a, (count / 10).max(4))?;
    let el = run(a, count)?;
    Ok((count * size) as f64 / el.as_secs_f64() / 1e9)
}

/// Transfer sizes of the sweep (above 1 MiB: several 1 MiB LNet messages).
pub const SWEEP: [usize; 7] = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 2 << 20, 4 << 20];

/// Round-trip samples (µs) of 0-byte PUT+ACK, for the latency CDF.
pub(crate) fn rtt_samples(a: &mut BenchNode, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        put_ack_rtt(a, 1)?;
        v.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok(v)
}

fn put_ack_rtt(a: &mut BenchNode, n: usize) -> anyhow::Result<f64> {
    let src = a.node.lnet.md_bind(MdSpec { iov: vec![], options: 0, threshold: None, max_size: 0, user_ptr: 0 }, false);
    let target = ProcessId::new(nid(2), ProcessId::PID_LUSTRE);
    let once = |a: &mut BenchNode| -> anyhow::Result<()> {
        a.node.lnet.put(src, true, target, PORTAL, 0, 0, 0)?;
        let mut acked = false;
        while !acked {
            let mut err = None;
            let p = a.pump(|e| {
                if e.status != 0 {
                    err = Some(e.status);
                }
                acked |= e.kind == EventKind::Ack;
            });
            if let Some(s) = err {
                anyhow::bail!("PUT+ACK failed with status {s}");
            }
            if !p && !acked {
                a.wait()?;
            }
        }
        Ok(())
    };
    for _ in 0..(n / 10).min(100) {
        once(a)?;
    }
    let t0 = Instant::now();
    for _ in 0..n {
        once(a)?;
    }
    Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// The device alone: an SMSG to an echo node and back, in µs — the floor under any LNet round trip.
fn smsg_rtt(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let mut a = ShmDevice::connect(dir, 3, 4096)?;
    let wa = a.waker()?;
    let mut b = ShmDevice::connect(dir, 4, 4096)?;
    let wb = b.waker()?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let echo = std::thread::spawn(move || -> anyhow::Result<()> {
        while !st.load(Ordering::Relaxed) {
            let mut got = Vec::new();
            b.poll(&mut |c, d| {
                if c.kind == CompKind::SmsgRecv {
                    got.push(d.to_vec())
                }
            });
            for d in got.iter() {
                b.submit(&Desc { tag: 0, op: Op::Smsg { dst: 3, data: d.clone() } })?;
            }
            b.doorbell();
            if got.is_empty() {
                wb.wait(WAIT)?;
            }
        }
        Ok(())
    });
    let mut once = || -> anyhow::Result<()> {
        a.submit(&Desc { tag: 0, op: Op::Smsg { dst: 4, data: vec![0u8; 24] } })?;
        a.doorbell();
        let mut back = false;
        while !back {
            let n = a.poll(&mut |c, _| back |= c.kind == CompKind::SmsgRecv);
            if n == 0 {
                wa.wait(WAIT)?;
            }
        }
        Ok(())
    };
    for _ in 0..100 {
        once()?;
    }
    let t0 = Instant::now();
    for _ in 0..n {
        once()?;
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    stop.store(true, Ordering::Relaxed);
    echo.join().map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    Ok(us)
}

/// Runs the DMA benchmarks against a fresh `dmadev`; returns the metrics.
pub fn run(opts: &DmaBenchOpts) -> anyhow::Result<Vec<Metric>> {
    let dir = tempfile::Builder::new().prefix("lnetlab-bench-").tempdir()?;
    let _dev = crate::procs::start_dmadev(dir.path(), Duration::from_secs(10), &[], None)?;
    let mut a = BenchNode::attach(dir.path(), 1)?;
    let b = BenchNode::attach(dir.path(), 2)?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let tgt = std::thread::spawn(move || target(b, st));
    let res = (|| -> anyhow::Result<Vec<Metric>> {
        let bw = put_bandwidth_to(&mut a, 2, opts.count, opts.window)?;
        let memcpy = memcpy_gbps(MIB, opts.count.max(64));
        let memcpy_ws = memcpy_ws_gbps(MIB, BUFS, opts.count.max(64));
        let rtt = put_ack_rtt(&mut a, opts.rtts)?;
        let floor = smsg_rtt(dir.path(), opts.rtts)?;
        let mut m = vec![
            Metric::new("memcpy_1MiB_GBps", memcpy, "GB/s", None),
            Metric::new("dma_put_1MiB_GBps", bw, "GB/s", Some(memcpy)),
            Metric::new("memcpy_1MiB_x8_GBps", memcpy_ws, "GB/s", None),
            Metric::new("dma_put_1MiB_vs_memcpy_ws_GBps", bw, "GB/s", Some(memcpy_ws)),
            Metric::new("dma_smsg_rtt_us", floor, "us", None),
            Metric::new("dma_put_ack_rtt_us", rtt, "us", Some(floor)),
        ];
        // Bandwidth by message size, each against memcpy of the same size.
        for &size in &SWEEP {
            let count = ((opts.count * MIB) / size).clamp(64, 200_000) / if size < 64 << 10 { 4 } else { 1 };
            let base = memcpy_gbps(size, (count * 4).max(256));
            for get in [false, true] {
                let v = bandwidth(&mut a, 2, size, get, count.max(16), opts.window)?;
                let name = format!("dma_{}_{}KiB_GBps", if get { "get" } else { "put" }, size >> 10);
                m.push(Metric::new(&name, v, "GB/s", Some(base)));
            }
        }
        match fi_pingpong_shm((opts.count / 4).clamp(50, 2000), (opts.rtts / 2).clamp(100, 20000))? {
            Some(fi) => {
                m.push(Metric::new("fi_pingpong_shm_1MiB_GBps", fi.gbps_1m, "GB/s", None));
                m.push(Metric::new("dma_put_1MiB_vs_libfabric_GBps", bw, "GB/s", Some(fi.gbps_1m)));
                m.push(Metric::new("fi_pingpong_shm_4KiB_GBps", fi.gbps_4k, "GB/s", None));
                let put4k = m.iter().find(|x| x.name == "dma_put_4KiB_GBps").map(|x| x.value).unwrap_or(0.0);
                m.push(Metric::new("dma_put_4KiB_vs_libfabric_GBps", put4k, "GB/s", Some(fi.gbps_4k)));
                m.push(Metric::new("fi_pingpong_shm_1B_us", fi.us_1b, "us", None));
                m.push(Metric::new("dma_put_ack_rtt_vs_libfabric_us", rtt, "us", Some(fi.us_1b)));
            }
            None => eprintln!("bench dma: fi_pingpong not installed (apt-get install libfabric-bin): no libfabric baseline"),
        }
        if let Some(dir) = &opts.plot {
            let samples = rtt_samples(&mut a, opts.rtts.min(2000))?;
            super::plot::dma_charts(dir, &SWEEP, &m, &samples)?;
        }
        Ok(m)
    })();
    stop.store(true, Ordering::Relaxed);
    let t = tgt.join().map_err(|_| anyhow::anyhow!("target thread panicked"))?;
    let metrics = res?;
    t?;
    Ok(metrics)
}

/// What `fi_pingpong` measured over libfabric's shm provider.
pub struct FiPingpong {
    pub gbps_1m: f64,
    pub gbps_4k: f64,
    pub us_1b: f64,
}

/// libfabric's shm provider through `fi_pingpong` (apt `libfabric-bin`), when installed:
/// 1 MiB and 4 KiB GB/s, 1-byte µs per transfer. `None` when the tool is missing.
pub fn fi_pingpong_shm(iters_big: usize, iters_small: usize) -> anyhow::Result<Option<FiPingpong>> {
    use std::process::{Command, Stdio};
    if Command::new("fi_pingpong").arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Ok(None);
    }
    let run = |size: &str, iters: usize, port: u16| -> anyhow::Result<Vec<f64>> {
        let mut srv = Command::new("fi_pingpong").args(["-p", "shm", "-e", "rdm", "-I", &iters.to_string(), "-S", size, "-B", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let mut out = None;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(50));
            let o = Command::new("fi_pingpong").args(["-p", "shm", "-e", "rdm", "-I", &iters.to_string(), "-S", size, "-P", &port.to_string(), "127.0.0.1"]).output()?;
            if o.status.success() {
                out = Some(o.stdout);
                break;
            }
        }
        let _ = srv.kill();
        let _ = srv.wait();
        let text = String::from_utf8_lossy(&out.ok_or_else(|| anyhow::anyhow!("fi_pingpong client never connected"))?).to_string();
        // Columns: bytes #sent #ack total time MB/sec usec/xfer Mxfers/sec
        let row = text.lines().last().unwrap_or("");
        let cols: Vec<&str> = row.split_whitespace().collect();
        let num = |i: usize| cols.get(i).and_then(|c| c.parse::<f64>().ok()).ok_or_else(|| anyhow::anyhow!("unexpected fi_pingpong output: {row}"));
        Ok(vec![num(5)?, num(6)?])
    };
    let port = 47600 + (std::process::id() % 1000) as u16;
    let big = run("1048576", iters_big, port)?;
    let small = run("1", iters_small, port + 1)?;
    let page = run("4096", iters_small, port + 2)?;
    Ok(Some(FiPingpong { gbps_1m: big[0] / 1000.0, gbps_4k: page[0] / 1000.0, us_1b: small[1] }))
}
