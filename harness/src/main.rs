//! `lnetlab`: the command line. Also multi-call: `lnetlab dmadev …` and `lnetlab lnetd …` run
//! the daemons, so the harness can always start them from its own binary.

use clap::{Parser, Subcommand, ValueEnum};
use harness::bench;

#[derive(Parser)]
#[command(name = "lnetlab", version, about = "User-space LNet over an emulated DMA fabric: benchmarks, clusters and tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
