//! `bench io`: OST WRITE and READ bandwidth of 1 MiB RPCs (client and OSS on the DMA fabric,
//! one file-backed OST, checksums off) against the raw DMA LND 1 MiB PUT bandwidth measured in
//! the same run, beside the storage limit: 1 MiB pwrite/pread of as many bytes on the OST's
//! file system.

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
    let _dev = crate::procs::start_dmadev(dir.path(), Duration::from_secs(10), &[], None)?;
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
    let (fs_w, fs_r) = fs_bandwidth(&store.path().join("fs-baseline"), opts.mib)?;
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
        Metric::new("ost_fs_pwrite_1MiB_GBps", fs_w, "GB/s", None),
        Metric::new("ost_fs_pread_1MiB_GBps", fs_r, "GB/s", None),
        // Which limit binds: the OST path against its own storage.
        Metric::new("ost_write_vs_fs_pwrite", w, "GB/s", Some(fs_w)),
        Metric::new("ost_read_vs_fs_pread", r, "GB/s", Some(fs_r)),
    ])
}

/// The storage limit: `mib` 1 MiB pwrites into a fresh file (then fdatasync, as the OST's
/// commit), and as many preads back, in GB/s; the file is removed.
fn fs_bandwidth(path: &std::path::Path, mib: u64) -> anyhow::Result<(f64, f64)> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    lnd::ptlrpc::pattern_fill(1, 0, 0, &mut buf);
    let bytes = (mib << 20) as f64;
    let t = Instant::now();
    for i in 0..mib {
        f.write_all_at(&buf, i << 20)?;
    }
    f.sync_data()?;
    let w = bytes / t.elapsed().as_secs_f64() / 1e9;
    let t = Instant::now();
    for i in 0..mib {
        f.read_exact_at(&mut buf, i << 20)?;
    }
    let r = bytes / t.elapsed().as_secs_f64() / 1e9;
    drop(f);
    std::fs::remove_file(path)?;
    Ok((w, r))
}
