//! `lnetlab bench`'s command line: which suite, its sizes, and `--compare` with an earlier run.

use super::metric::Metric;
use clap::ValueEnum;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    Dma,
    Sock,
    Io,
    /// Docker bring-up (needs --features cluster; not part of `all`).
    Cluster,
    /// 2..N-node process clusters: brw bandwidth and memory per idle node (not part of `all`).
    Scale,
    /// The simulator on the faults scenario: seeds per minute, virtual seconds per wall second
    /// (not part of `all`).
    Sim,
    All,
}

/// `lnetlab bench` arguments.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which benchmark set.
    #[arg(value_enum, default_value_t = Suite::Dma)]
    suite: Suite,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
    /// 1 MiB PUTs to measure.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// PUTs in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Round trips to measure.
    #[arg(long, default_value_t = 5000)]
    rtts: usize,
    /// socklnd port for `sock` (988 needs root; any port works between our nodes).
    #[arg(long, default_value_t = 988)]
    port: u16,
    /// Write SVG charts (bandwidth vs size, latency, scaling) into this directory.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// `scale`: the largest cluster (nodes) of the sweep.
    #[arg(long, default_value_t = 64)]
    max_nodes: usize,
    /// `sim`: seeds of the faults scenario to run (1..=N).
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// Compare with an earlier run's `--json` output; exit 1 if a figure got worse by more
    /// than --tolerance (by its ratio to its baseline where both runs have one).
    #[arg(long, value_name = "FILE")]
    compare: Option<std::path::PathBuf>,
    /// The fraction a figure may lose before --compare calls it a regression.
    #[arg(long, default_value_t = 0.3)]
    tolerance: f64,
}

/// Runs the suite, prints each figure (a line, or JSON), then compares with the earlier run.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs { suite, json, count, window, rtts, port, plot, max_nodes, seeds, compare, tolerance } = a;
    if count == 0 || window == 0 || rtts == 0 || seeds == 0 {
        anyhow::bail!("--count, --window, --rtts and --seeds must be at least 1");
    }
    if !(0.0..1.0).contains(&tolerance) {
        anyhow::bail!("--tolerance {tolerance}: a fraction from 0 to below 1 (0.3: 30% worse)");
    }
    // Read first: a bad file is refused before minutes of measuring.
    let earlier = compare.as_deref().map(super::compare::read_earlier).transpose()?;
    let mut all = Vec::new();
    let mut emit = |m: Metric| {
        m.print(json);
        all.push(m);
    };
    if matches!(suite, Suite::Dma | Suite::All) {
        if !json {
            eprintln!("bench dma: {count} x 1 MiB PUTs (window {window}), {rtts} round trips ...");
        }
        let opts = super::dma::DmaBenchOpts { count, window, rtts, plot: plot.clone() };
        for m in super::dma::run(&opts)? {
            emit(m);
        }
        if !json {
            eprintln!("bench dma: {count} x 1 MiB PUTs between two hosts' devices over a loopback fabric link, iperf3 baseline ...");
        }
        for m in super::remote::run(count, window, port.wrapping_add(4214).max(1024))? {
            emit(m);
        }
    }
    if matches!(suite, Suite::Sock | Suite::All) {
        if !json {
            eprintln!("bench sock: {count} x 1 MiB PUTs over loopback TCP, {count} routed GETs, iperf3 baseline ...");
        }
        let opts = super::sock::SockBenchOpts { count, window, port };
        for m in super::sock::run(&opts)? {
            emit(m);
        }
    }
    if suite == Suite::Scale {
        for m in super::scale::run(max_nodes, plot.as_deref())? {
            emit(m);
        }
    }
    if suite == Suite::Sim {
        for m in super::sim::run_bench(seeds, json)? {
            emit(m);
        }
    }
    if suite == Suite::Cluster {
        #[cfg(feature = "cluster")]
        for m in super::cluster::run()? {
            emit(m);
        }
        #[cfg(not(feature = "cluster"))]
        anyhow::bail!("bench cluster needs lnetlab built with --features cluster");
    }
    if matches!(suite, Suite::Io | Suite::All) {
        let mib = (count as u64).min(1024);
        if !json {
            eprintln!("bench io: {mib} MiB written and read in 1 MiB RPCs ({window} in flight) vs raw DMA PUTs ...");
        }
        for m in super::io::run(&super::io::IoBenchOpts { mib, inflight: window })? {
            emit(m);
        }
    }
    if let (Some(before), Some(path)) = (earlier, compare) {
        let changes = super::compare::compare(&all, &before, tolerance);
        eprint!("compared with {}:\n{}", path.display(), super::compare::render(&changes, &all, &before));
        if changes.iter().any(|c| c.regressed) {
            std::process::exit(1);
        }
    }
    Ok(())
}
