//! `bench scale`: clusters of 2, 4, ... up to N nodes (one OSS node, the rest DMA clients), on
//! the process backend and on the simulator: how long bring-up takes (every node ready, the OSS
//! serving), the memory each idle node
//! costs (proportional set size of every process of the cluster, the device included, over the
//! nodes), then brw-write bandwidth of all clients into the OSS node (fan-in) and of client
//! pairs (pairwise), one second each.

use super::metric::Metric;
use crate::cluster::backend::Backend;
use crate::cluster::backends::process::ProcessBackend;
use crate::cluster::backends::sim::SimBackend;
use crate::cluster::plan::{loopback, plan};
use crate::cluster::spec::ClusterSpec;
use crate::cluster::workloads::selftest::run_selftest;
use std::path::Path;
use std::time::{Duration, Instant};

/// Targets the figures are shown against (issue 18): bring-up of 1000 process nodes, memory
/// per idle node.
const BRINGUP_TARGET_S: f64 = 60.0;
const IDLE_NODE_TARGET_MIB: f64 = 6.0;

fn spec(n: usize) -> anyhow::Result<ClusterSpec> {
    let mut y = format!("name: scale{n}\nnets: {{dma0: {{kind: dma}}}}\nnodes:\n  - {{name: oss1, roles: [oss], nis: [dma0], targets: [{{ost: 0, size: 64MiB}}]}}\n");
    y += &format!("  - {{name: c, count: {}, roles: [client], nis: [dma0]}}\n", n - 1);
    let clients: Vec<String> = (0..n - 1).map(|i| format!("c{i}")).collect();
    let (from, to) = clients.split_at(clients.len() / 2);
    y += "workloads:\n  - {name: fan-in, kind: selftest, test: brw_write, from: [c], to: [oss1], size: 1MiB, concurrency: 2, duration: 1s}\n";
    if !from.is_empty() {
        y += &format!("  - {{name: pairs, kind: selftest, test: brw_write, from: [{}], to: [{}], distribute: \"1:1\", size: 1MiB, concurrency: 2, duration: 1s}}\n", from.join(", "), to[..from.len()].join(", "));
    }
    Ok(ClusterSpec::parse(&y, Path::new("<scale>"))?)
}

/// A /proc status or smaps figure (kB) of `pid`, in MiB.
fn proc_mib(file: &str, pid: u32, key: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Our child processes (the nodes and the devices of a process cluster).
fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 4 (ppid) follows the command in parentheses, which may hold spaces.
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok()) == Some(me)
        })
        .collect()
}

/// What one cluster size measured on one backend.
struct Point {
    bringup_s: f64,
    mem_per_node: f64,
    fanin: f64,
    pairs: Option<f64>,
}

fn measure(backend: &dyn Backend, n: usize, process: bool) -> anyhow::Result<Point> {
    let spec = spec(n)?;
    let p = plan(&spec, 1, &loopback(&spec, 250, 0));
    let (art, scratch) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let before = proc_mib("status", std::process::id(), "VmRSS:").unwrap_or(0.0);
    let t0 = Instant::now();
    let mut c = backend.up(&p, scratch.path(), art.path(), Duration::from_secs(300), &|_| {})?;
    for i in 0..p.nodes.len() {
        if let Err(e) = c.start_roles(&p, i, Duration::from_secs(60), &|_| {}) {
            c.down();
            return Err(e);
        }
    }
    let bringup_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let mem = if process {
        children().into_iter().filter_map(|pid| proc_mib("smaps_rollup", pid, "Pss:")).sum::<f64>()
    } else {
        // Growth of our own resident memory (the allocator may reuse what earlier runs freed).
        (proc_mib("status", std::process::id(), "VmRSS:").unwrap_or(0.0) - before).max(0.0)
    };
    let mut bw = Vec::new();
    for w in &spec.workloads {
        match run_selftest(&mut c, &p, w, Duration::from_secs(300), &|_| {}) {
            Ok(r) => bw.push(r.selftest.as_ref().and_then(|s| s["mb_per_s"].as_f64()).unwrap_or(0.0)),
            Err(e) => {
                c.down();
                return Err(e);
            }
        }
    }
    c.down();
    Ok(Point { bringup_s, mem_per_node: mem / n as f64, fanin: bw[0], pairs: bw.get(1).copied() })
}

/// The sizes of the sweep: powers of two from 2 below `max`, then `max`.
fn sizes(max: usize) -> Vec<usize> {
    let max = max.max(2);
    let mut v: Vec<usize> = std::iter::successors(Some(2usize), |n| Some(n * 2)).take_while(|&n| n < max).collect();
    v.push(max);
    v
}

pub fn run(max_nodes: usize, plot: Option<&Path>) -> anyhow::Result<Vec<Metric>> {
    let mut out = Vec::new();
    let labels: Vec<String> = sizes(max_nodes).iter().map(|n| n.to_string()).collect();
    let mut series: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    // The simulator first: its memory is our own, best measured before process runs have
    // grown and freed our heap.
    for (name, backend, process) in [("sim", &SimBackend as &dyn Backend, false), ("process", &ProcessBackend::default() as &dyn Backend, true)] {
        let (mut fan0, mut pair0) = (None, None);
        let (mut bws, mut mems) = (Vec::new(), Vec::new());
        for n in sizes(max_nodes) {
            eprintln!("  scale: {n} nodes on {name} ...");
            let pt = measure(backend, n, process)?;
            let fan_base = *fan0.get_or_insert(pt.fanin);
            out.push(Metric::new(&format!("scale_{n}_{name}_bringup_s"), pt.bringup_s, "s", Some(BRINGUP_TARGET_S)));
            let mem_name = if process { "mem_per_idle_node_MiB" } else { "rss_growth_per_node_MiB" };
            out.push(Metric::new(&format!("scale_{n}_{name}_{mem_name}"), pt.mem_per_node, "MiB", Some(IDLE_NODE_TARGET_MIB)));
            out.push(Metric::new(&format!("scale_{n}_{name}_fanin_brw_write_MBps"), pt.fanin, "MB/s", Some(fan_base)));
            if let Some(p) = pt.pairs {
                let base = *pair0.get_or_insert(p);
                out.push(Metric::new(&format!("scale_{n}_{name}_pairwise_brw_write_MBps"), p, "MB/s", Some(base)));
            }
            bws.push(pt.fanin);
            mems.push(pt.mem_per_node);
        }
        series.push((name, bws, mems));
    }
    if let Some(dir) = plot {
        std::fs::create_dir_all(dir)?;
        let bw: Vec<(&str, Vec<f64>)> = series.iter().map(|(n, b, _)| (*n, b.clone())).collect();
        std::fs::write(dir.join("scaling_bandwidth.svg"), super::plot::line_chart("brw write, all clients to one OSS node", "nodes", "MB/s", &labels, &bw))?;
        let mut mem: Vec<(&str, Vec<f64>)> = series.iter().map(|(n, _, m)| (*n, m.clone())).collect();
        mem.push(("target 6 MiB", vec![IDLE_NODE_TARGET_MIB; labels.len()]));
        std::fs::write(dir.join("scaling_memory.svg"), super::plot::line_chart("memory per idle node", "nodes", "MiB", &labels, &mem))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sweep_doubles_up_to_the_largest() {
        assert_eq!(super::sizes(1000), [2, 4, 8, 16, 32, 64, 128, 256, 512, 1000]);
        assert_eq!(super::sizes(64), [2, 4, 8, 16, 32, 64]);
        assert_eq!(super::sizes(1), [2]);
    }
}
