//! `bench scale`: process-backend clusters of 2, 4, ... N nodes (one OSS node, the rest DMA
//! clients): resident memory of every idle node, then aggregate brw-write bandwidth of all
//! clients against the OSS node for one second.

use super::metric::Metric;
use crate::cluster::backend::Backend;
use crate::cluster::backends::process::ProcessBackend;
use crate::cluster::plan::{loopback, plan};
use crate::cluster::workloads::selftest::run_selftest;
use crate::cluster::spec::ClusterSpec;
use std::path::Path;
use std::time::Duration;

fn spec(n: usize) -> anyhow::Result<ClusterSpec> {
    let mut y = format!("name: scale{n}\nnets: {{dma0: {{kind: dma}}}}\nnodes:\n  - {{name: oss1, roles: [oss], nis: [dma0], targets: [{{ost: 0, size: 64MiB}}]}}\n");
    let clients: Vec<String> = (1..n).map(|i| format!("c{i}")).collect();
    for c in &clients {
        y += &format!("  - {{name: {c}, roles: [client], nis: [dma0]}}\n");
    }
    y += &format!("workloads:\n  - {{name: brw, kind: selftest, test: brw_write, from: [{}], to: [oss1], size: 1MiB, concurrency: 2, duration: 1s}}\n", clients.join(", "));
    Ok(ClusterSpec::parse(&y, Path::new("<scale>"))?)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn run(max_nodes: usize, plot: Option<&Path>) -> anyhow::Result<Vec<Metric>> {
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    let mut bws = Vec::new();
    let mut rss = Vec::new();
    let mut n = 2;
    while n <= max_nodes.max(2) {
        let spec = spec(n)?;
        let p = plan(&spec, 1, &loopback(&spec, 250, n as u8));
        let art = tempfile::tempdir()?;
        let scratch = tempfile::tempdir()?;
        eprintln!("  scale: {n} nodes ...");
        let mut c = ProcessBackend::default().up(&p, scratch.path(), art.path(), Duration::from_secs(120), &|_| {})?;
        std::thread::sleep(Duration::from_millis(300));
        let mems: Vec<f64> = c.pids().into_iter().flatten().filter_map(rss_mib).collect();
        let max_rss = mems.iter().copied().fold(0.0, f64::max);
        let r = run_selftest(&mut c, &p, &spec.workloads[0], Duration::from_secs(120), &|_| {});
        c.down();
        let r = r?;
        let mbps = r.selftest.as_ref().and_then(|s| s["mb_per_s"].as_f64()).unwrap_or(0.0);
        out.push(Metric::new(&format!("scale_{n}_nodes_rss_max_MiB"), max_rss, "MiB", Some(20.0)));
        out.push(Metric::new(&format!("scale_{n}_nodes_brw_write_MBps"), mbps, "MB/s", bws.first().copied()));
        sizes.push(n.to_string());
        bws.push(mbps);
        rss.push(max_rss);
        n *= 2;
    }
    if let Some(dir) = plot {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("scaling_bandwidth.svg"), super::plot::line_chart("brw write, all clients to one OSS node", "nodes", "MB/s", &sizes, &[("aggregate", bws)]))?;
        std::fs::write(dir.join("scaling_memory.svg"), super::plot::line_chart("resident memory per idle node (max)", "nodes", "MiB", &sizes, &[("RSS", rss), ("target 20 MiB", vec![20.0; sizes.len()])]))?;
    }
    Ok(out)
}
