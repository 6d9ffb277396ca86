//! `bench dma`'s fabric across hosts: 1 MiB PUTs between two nodes on different (emulated)
//! hosts, so every pull crosses a loopback fabric link, against iperf3 over the same loopback.

use super::dma::{put_bandwidth_to, target, BenchNode, BUFS};
use super::metric::Metric;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1 << 20;

/// GB/s of `count` 1 MiB PUTs from a node on host 0 to one on host 1 (two `dmadev`s linked
/// over loopback TCP), `window` in flight, and iperf3's single loopback stream beside it.
pub fn run(count: usize, window: usize, iperf_port: u16) -> anyhow::Result<Vec<Metric>> {
    let wait = Duration::from_secs(10);
    let token = crate::procs::run_token()?;
    let (d0, d1) = (tempfile::Builder::new().prefix("lnetlab-bench-h0-").tempdir()?, tempfile::Builder::new().prefix("lnetlab-bench-h1-").tempdir()?);
    let stats = d1.path().join("stats.json");
    let args0: Vec<String> = ["--host", "0", "--link-listen", "127.0.0.1:0"].map(String::from).to_vec();
    let _dev0 = crate::procs::start_dmadev(d0.path(), wait, &args0, Some(&token))?;
    let addr = crate::procs::link_addr(d0.path(), wait)?;
    let args1: Vec<String> = vec!["--host".into(), "1".into(), "--link".into(), format!("0={addr}"), "--stats".into(), stats.display().to_string()];
    let _dev1 = crate::procs::start_dmadev(d1.path(), wait, &args1, Some(&token))?;
    crate::procs::wait_links_up(&stats, 1, wait)?;
    let mut a = BenchNode::attach(d0.path(), 1)?;
    let b = BenchNode::attach_mem(d1.path(), 2, (BUFS + 1) * MIB)?;
    // The target's attach crosses the link (ADDR_UP) before the first PUT needs it.
    std::thread::sleep(Duration::from_millis(50));
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let tgt = std::thread::spawn(move || target(b, st));
    let bw = put_bandwidth_to(&mut a, 2, count, window);
    stop.store(true, Ordering::Relaxed);
    let t = tgt.join().map_err(|_| anyhow::anyhow!("target thread panicked"))?;
    let bw = bw?;
    t?;
    let iperf = super::sock::iperf3_gbps(iperf_port)?;
    if iperf.is_none() {
        eprintln!("bench dma: iperf3 not installed (apt-get install iperf3): no baseline for dma_remote_put_1MiB_GBps");
    }
    Ok(vec![Metric::new("dma_remote_put_1MiB_GBps", bw, "GB/s", iperf)])
}
