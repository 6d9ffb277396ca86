//! `lnetlab`: the command line. Also multi-call: `lnetlab dmadev …` and `lnetlab lnetd …` run
//! the daemons, so the harness can always start them from its own binary.

use clap::{Parser, Subcommand, ValueEnum};
use harness::{bench, cluster};

#[derive(Parser)]
#[command(name = "lnetlab", version, about = "User-space LNet over an emulated DMA fabric: benchmarks, clusters and tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring a cluster up, run its workloads, verify every byte, tear it down.
    Run {
        /// The cluster spec (YAML), e.g. clusters/quickstart.yaml.
        file: std::path::PathBuf,
        /// Print the final report as one JSON object.
        #[arg(long)]
        json: bool,
        /// Seed for addresses, data patterns and xids (printed for reproduction).
        #[arg(long)]
        seed: Option<u64>,
        /// Leave the cluster up after the workloads until Ctrl-C.
        #[arg(long)]
        keep: bool,
        /// Where runs keep their artifacts (default target/lnetlab/runs).
        #[arg(long)]
        artifacts: Option<std::path::PathBuf>,
        /// process (default); docker arrives with its issue.
        #[arg(long, default_value = "process")]
        backend: String,
        /// Give up on bring-up or a workload after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Measure our figures next to their physical baselines (one JSON object a line with --json).
    Bench {
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
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Suite {
    Dma,
    Sock,
    All,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let daemon = match args.get(1).map(|s| s.as_str()) {
        Some("dmadev") => Some(lnd::daemon::dmadev::main(&args[2..])),
        Some("lnetd") => Some(lnd::daemon::lnetd::main(&args[2..])),
        _ => None,
    };
    if let Some(r) = daemon {
        if let Err(e) = r {
            eprintln!("lnetlab {}: {e:#}", args[1]);
            std::process::exit(2);
        }
        return;
    }
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("lnetlab: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Run { file, json, seed, keep, artifacts, backend, timeout } => {
            harness::install_interrupt_handler();
            let opts = cluster::run::RunOpts { file, seed, keep, json, artifacts, backend, timeout: std::time::Duration::from_secs(timeout) };
            let r = cluster::run::run(&opts)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", cluster::run::table(&r));
            }
            if !r.ok {
                eprintln!("reproduce with: {}", cluster::run::repro(&opts, r.seed));
                std::process::exit(1);
            }
        }
        Cmd::Bench { suite, json, count, window, rtts, port } => {
            if count == 0 || window == 0 || rtts == 0 {
                anyhow::bail!("--count, --window and --rtts must be at least 1");
            }
            if matches!(suite, Suite::Dma | Suite::All) {
                if !json {
                    eprintln!("bench dma: {count} x 1 MiB PUTs (window {window}), {rtts} round trips ...");
                }
                let opts = bench::dma::DmaBenchOpts { count, window, rtts };
                for m in bench::dma::run(&opts)? {
                    m.print(json);
                }
            }
            if matches!(suite, Suite::Sock | Suite::All) {
                if !json {
                    eprintln!("bench sock: {count} x 1 MiB PUTs over loopback TCP, {count} routed GETs, iperf3 baseline ...");
                }
                let opts = bench::sock::SockBenchOpts { count, window, port };
                for m in bench::sock::run(&opts)? {
                    m.print(json);
                }
            }
        }
    }
    Ok(())
}
