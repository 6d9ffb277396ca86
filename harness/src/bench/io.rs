//! `bench io`: OST WRITE and READ bandwidth of 1 MiB RPCs (client and OSS on the DMA fabric,
//! one file-backed OST, checksums off) against the raw DMA LND 1 MiB PUT bandwidth measured in
//! the same run.

use super::dma::{put_bandwidth_to, target, BenchNode};
use super::metric::Metric;
use lnd::ost::osc::{IoJob, Osc};
use lnd::ost::oss::Oss;
use lnd::ost::store::Ost;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct IoBenchOpts {
    /// MiB written then read.
    pub mib: u64,
    pub inflight: usize,
}

fn serve_oss(mut b: BenchNode, mut oss: Oss, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut busy = b.node.step();
        while let Some(e) = b.node.poll_event() {
            busy = true;
            oss.on_event(&mut b.node, &e);
        }
        if !busy {
            let _ = b.wait();
        }
    }
}

pub fn run(opts: &IoBenchOpts) -> anyhow::Result<Vec<Metric>> {
    let dir = tempfile::Builder::new().prefix("lnetlab-bench-io-").tempdir()?;
    let _dev = crate::procs::start_dmadev(dir.path(), Duration::from_secs(10), &[])?;
    let stop = Arc::new(AtomicBool::new(false));

    // Baseline: raw 1 MiB PUTs between two other nodes on the same device.
    let mut a = BenchNode::attach(dir.path(), 3)?;
    let t = BenchNode::attach(dir.path(), 4)?;
    let st = stop.clone();
    let tgt = std::thread::spawn(move || target(t, st));
    let raw = put_bandwidth_to(&mut a, 4, (opts.mib as usize).max(64), opts.inflight);

    let mut s = BenchNode::attach_mem(dir.path(), 1, 256 << 20)?;
    // The OST lives on tmpfs when there is one: we measure the RPC and bulk path, not the disk.
    let shm = std::path::Path::new("/dev/shm");
    let store = if shm.is_dir() { tempfile::Builder::new().prefix("lnetlab-ost-").tempdir_in(shm)? } else { tempfile::Builder::new().prefix("lnetlab-ost-").tempdir()? };
    let ost = Ost::open(0, store.path().join("ost0"), (opts.mib + 64) << 20)?;
    let oss = Oss::start(&mut s.node, vec![ost]).map_err(anyhow::Error::msg)?;
    let st = stop.clone();
    let server = std::thread::spawn(move || serve_oss(s, oss, st));

    let mut c = BenchNode::attach_mem(dir.path(), 2, 64 << 20)?;
    let job = IoJob {
        name: "bench".into(),
        targets: vec![(0, "1@dma".parse()?)],
        files: 1,
        file_size: opts.mib << 20,
        stripe_size: 1 << 20,
        stripe_count: 1,
        seed: 1,
        first_file: 0,
        inflight: opts.inflight,
        verify: true,
        punch: false,
        fallocate: false,
        destroy: true,
        checksum: false,
        compare: false,
        objects: None,
        write: true,
        acked: Vec::new(),
        timeout_ms: 5000,
        at: None,
        max_tries: 8,
        obd_timeout_ms: 100_000,
    };
    let mut osc = Osc::new(job).map_err(anyhow::Error::msg)?;
    osc.pump(&mut c.node);
    let t0 = Instant::now();
    let res = (|| -> anyhow::Result<(f64, f64)> {
        while !osc.done() {
            let mut busy = c.node.step();
            while let Some(e) = c.node.poll_event() {
                busy = true;
                osc.on_event(&mut c.node, &e);
            }
            if !busy {
                c.wait()?;
            }
            if t0.elapsed() > Duration::from_secs(300) {
                anyhow::bail!("I/O benchmark stalled: {:?}", osc.report);
            }
        }
        if osc.report.errors > 0 {
            anyhow::bail!("I/O benchmark had errors: {:?}", osc.report.messages);
        }
        let at = |name: &str| osc.phases.iter().find(|p| p.0 == name).map(|p| p.1).ok_or_else(|| anyhow::anyhow!("no {name} phase"));
        let bytes = (opts.mib << 20) as f64;
        let w = bytes / at("sync")?.duration_since(at("write")?).as_secs_f64() / 1e9;
        let r = bytes / at("getattr")?.duration_since(at("read")?).as_secs_f64() / 1e9;
        Ok((w, r))
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    tgt.join().map_err(|_| anyhow::anyhow!("target thread panicked"))??;
    let raw = raw?;
    let (w, r) = res?;
    Ok(vec![
        Metric::new("dma_put_1MiB_raw_GBps", raw, "GB/s", None),
        Metric::new("ost_write_1MiB_GBps", w, "GB/s", Some(raw)),
        Metric::new("ost_read_1MiB_GBps", r, "GB/s", Some(raw)),
    ])
}
