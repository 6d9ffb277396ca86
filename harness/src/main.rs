//! `lnetlab`: the command line. Also multi-call: `lnetlab dmadev …` and `lnetlab lnetd …` run
//! the daemons, so the harness can always start them from its own binary.

use clap::{Parser, Subcommand, ValueEnum};
use harness::{bench, cluster};

#[derive(Parser)]
#[command(name = "lnetlab", version, about = "User-space LNet over an emulated DMA fabric: benchmarks, clusters and tests")]
struct Cli {
    /// Where the static lnetd and dmadev of the Docker node image are (default: beside lnetlab).
    #[arg(long, global = true, value_name = "DIR")]
    node_binaries: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Write the node image as a tar (load it on every swarm node: `docker load -i FILE`);
    /// with --registry, also push it there (then run with LNETLAB_SWARM_IMAGE=the name printed).
    Save {
        file: std::path::PathBuf,
        /// A registry to push to (`HOST[:PORT]`).
        #[arg(long)]
        registry: Option<String>,
    },
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
        /// process (default), docker (needs --features cluster) or sim (virtual time).
        #[arg(long, default_value = "process")]
        backend: String,
        /// Give up on bring-up or a workload after this many seconds (1 to 86400).
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
        timeout: u64,
        /// Run the seed twice (sim backend) and fail unless both runs leave the same traces.
        #[arg(long)]
        check_determinism: bool,
        /// Also write the result as JUnit XML here (one test case per workload).
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
        /// Write every node's socklnd traffic to pcap/NODE.pcap in the artifacts (for tshark).
        #[arg(long)]
        capture: bool,
    },
    /// Run many seeds of a spec, or of generated specs (`--generate`), N at a time; keep every
    /// failing spec with its REPRO line; exit 1 if any failed.
    Hunt {
        /// The spec to run for every seed (omit with --generate).
        file: Option<std::path::PathBuf>,
        /// A fresh random valid spec per seed instead of FILE.
        #[arg(long)]
        generate: bool,
        /// Seeds to run, A..B inclusive.
        #[arg(long, default_value = "1..20")]
        seeds: String,
        /// Runs at once.
        #[arg(short = 'j', long, default_value_t = 1)]
        jobs: usize,
        /// sim, process, docker, or `all` (sim and process, which must then agree).
        #[arg(long, default_value = "sim")]
        backend: String,
        /// Generated specs get fault rules.
        #[arg(long)]
        faults: bool,
        /// Generated specs have one io workload.
        #[arg(long)]
        single: bool,
        /// Generated specs may put nodes on two DMA nets.
        #[arg(long)]
        multi_dma: bool,
        /// Generated specs are Multi-Rail (OSSs and some clients on a DMA net and tcp0); with
        /// --faults, fabric partitions and health_error rules.
        #[arg(long)]
        multi_rail: bool,
        /// At most this many clients in a generated spec.
        #[arg(long)]
        max_clients: Option<usize>,
        /// Where failing specs and the summary go (default target/lnetlab/hunt).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Seconds per run before it counts as hung.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
        /// Shrink every failing seed (see `lnetlab shrink`).
        #[arg(long)]
        shrink: bool,
        /// Run every seed twice on sim and fail when the two runs' traces differ.
        #[arg(long)]
        check_determinism: bool,
        /// Start no new seed once one has failed (with -j 1: the first failing seed).
        #[arg(long)]
        first_failure: bool,
        /// Also write the results as JUnit XML here (one test case per seed).
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
    },
    /// Make a failing run small: remove faults, workloads, clients and nodes, shorten fault
    /// windows and halve sizes while the run (same seed and backend) still fails; writes
    /// `shrunk.yaml` and its REPRO line.
    Shrink {
        /// A failed run's artifacts directory (its spec.yaml and REPRO are used).
        run_dir: Option<std::path::PathBuf>,
        /// Or: the spec, with --seed and --backend.
        #[arg(long)]
        spec: Option<std::path::PathBuf>,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "sim")]
        backend: String,
        /// Where shrunk.yaml goes (default: the run directory, or the spec's directory).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// At most this many trial runs.
        #[arg(long, default_value_t = 200)]
        max_runs: usize,
        /// Seconds per trial run.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        #[arg(long)]
        json: bool,
    },
    /// Run only the cluster's selftest workloads (lnet-selftest style: ping, brw read/write),
    /// with live `lst stat`-like rates and latency percentiles at the end.
    Selftest {
        file: std::path::PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "process")]
        backend: String,
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Bring a cluster up and leave it running (in the background) until `lnetlab down`.
    Up {
        file: std::path::PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long)]
        artifacts: Option<std::path::PathBuf>,
        #[arg(long, default_value = "process")]
        backend: String,
        /// Stay in the foreground (what the background copy runs).
        #[arg(long)]
        foreground: bool,
    },
    /// Show the clusters brought up by `lnetlab up` or kept by `lnetlab run --keep`.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Live control of a node of a running cluster (`up` or `run --keep`): ping, net/peer/stats
    /// show, fault rules, log level.
    Ctl(harness::ctl::CtlArgs),
    /// Run a workload on the running cluster: NAME from its spec, or FILE (`workloads:` only).
    Workload(harness::ctl::WorkloadArgs),
    /// Apply a fault timeline (a YAML file holding only `faults:`) to the running cluster.
    Fault(harness::ctl::FaultFileArgs),
    /// List past runs (newest first): ok or failed, seed, REPRO.
    Runs(harness::runs::RunsArgs),
    /// Write a run's timeline as one HTML page: nodes as lanes, messages as arrows, RPCs by
    /// xid, fault windows shaded, errors in red (RUN_DIR default: the latest run).
    Timeline {
        run_dir: Option<std::path::PathBuf>,
        /// Where to write the page (default RUN_DIR/timeline.html).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Print a node's log from a running (or the last) cluster.
    Logs { node: String },
    /// The node image, for Engines other than this one (`--backend swarm` on several machines).
    Image {
        #[command(subcommand)]
        action: ImageCmd,
    },
    /// Tear down the cluster brought up by `lnetlab up`.
    Down {
        /// Also remove what killed lnetlab runs left: their scratch directories, and the Docker
        /// containers, networks and volumes of runs whose lnetlab is provably gone (live runs,
        /// other hosts' and namespaces' runs and compose stacks are left alone).
        #[arg(long)]
        all: bool,
        /// With --all: also remove every lnetlab-node image no container uses.
        #[arg(long, requires = "all")]
        prune: bool,
    },
    /// Write the cluster out for other tools (`--compose`: a docker-compose file; `--k8s -o DIR`:
    /// Kubernetes manifests whose Job runs the workloads and prints the report).
    Export {
        file: std::path::PathBuf,
        /// Emit a docker-compose file.
        #[arg(long, conflicts_with = "k8s")]
        compose: bool,
        /// Emit Kubernetes manifests into the directory given with -o.
        #[arg(long)]
        k8s: bool,
        /// The image holding a static `/lnetlab`, for the Kubernetes Job (see images/README.md).
        #[arg(long, default_value = "lnetlab-harness:latest", requires = "k8s")]
        harness_image: String,
        /// Where to write it (default: stdout; a directory, required, with --k8s).
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
        /// Node image to use (default: build ours; needs --features cluster).
        #[arg(long)]
        image: Option<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Golden traces: compare every scenario's story with its snapshot, or accept new ones.
    Golden {
        #[arg(value_enum)]
        action: GoldenAction,
        /// Where the scenarios are.
        #[arg(long, default_value = "clusters/golden")]
        scenarios: std::path::PathBuf,
        /// Where the snapshots are.
        #[arg(long, default_value = "golden")]
        golden: std::path::PathBuf,
        /// Also write the results as JUnit XML here (one test case per scenario).
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
    },
    /// Measure our figures next to their physical baselines (one JSON object a line with --json).
    Bench(bench::cli::BenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GoldenAction {
    Check,
    Accept,
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
    // A misspelt mutant would be a silent no-op: every hunt would pass.
    if let Err(e) = lnd::mutant::check_env() {
        eprintln!("lnetlab: {e}");
        std::process::exit(2);
    }
    if let Some(d) = &cli.node_binaries {
        // Read by the docker backend here and in the runs we start (hunt, up).
        std::env::set_var("LNETLAB_NODE_BINARIES", std::path::absolute(d).unwrap_or_else(|_| d.clone()));
    }
    if let Err(e) = run(cli) {
        eprintln!("lnetlab: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Run { file, json, seed, keep, artifacts, backend, timeout, check_determinism, junit, capture } => {
            let opts = cluster::run::RunOpts { file, seed, keep, json, artifacts, backend, timeout: std::time::Duration::from_secs(timeout), up_only: None, only: None, capture };
            if check_determinism {
                return check_determinism_of(opts, junit.as_deref());
            }
            run_and_report(&opts, junit.as_deref())?;
        }
        Cmd::Hunt { file, generate, seeds, jobs, backend, faults, single, multi_dma, multi_rail, max_clients, out, timeout, json, shrink, check_determinism, first_failure, junit } => {
            use harness::hunt::{generate::GenOpts, seeds as h};
            if file.is_some() == generate {
                anyhow::bail!("hunt: give a spec FILE or --generate (one of them)");
            }
            if let Some(f) = &file {
                cluster::spec::ClusterSpec::load(f)?;
            }
            let backends: Vec<String> = match backend.as_str() {
                "all" => vec!["sim".into(), "process".into()],
                b => b.split(',').map(String::from).collect(),
            };
            for b in &backends {
                cluster::backends::by_name_checked(b)?;
            }
            if jobs == 0 || timeout == 0 {
                anyhow::bail!("hunt: -j and --timeout must be at least 1");
            }
            harness::interrupt::install_interrupt_handler();
            let o = h::HuntOpts { file, gen: GenOpts { faults, single, multi_dma, max_clients, multi_rail }, seeds: h::parse_seeds(&seeds).map_err(anyhow::Error::msg)?, jobs, backends, out: out.unwrap_or_else(|| "target/lnetlab/hunt".into()), timeout: std::time::Duration::from_secs(timeout), json, check_determinism, first_failure };
            let mut s = h::hunt(&o)?;
            if shrink {
                for f in &mut s.failed {
                    let spec = f.spec.clone().map(std::path::PathBuf::from).or_else(|| o.file.clone()).expect("a spec");
                    let so = harness::hunt::shrink::ShrinkOpts { spec, seed: f.seed, backend: o.backends[0].clone(), out: o.out.join("shrunk").join(f.seed.to_string()), timeout: o.timeout, max_runs: 200 };
                    let say = |m: &str| if !json { eprintln!("  shrink seed {}: {m}", f.seed) };
                    match harness::hunt::shrink::shrink(&so, &say) {
                        Ok(r) => f.repro.push(r.repro),
                        Err(e) => say(&format!("{e:#}")),
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                print!("{}", h::table(&s));
            }
            if let Some(j) = &junit {
                harness::junit::write(j, "hunt", &harness::junit::hunt_cases(&s))?;
            }
            if !s.failed.is_empty() {
                std::process::exit(1);
            }
        }
        Cmd::Shrink { run_dir, spec, seed, backend, out, max_runs, timeout, json } => {
            use harness::hunt::shrink;
            let (spec, seed, backend, out) = match (run_dir, spec, seed) {
                (Some(d), None, None) => {
                    let (spec, seed, backend) = shrink::from_run_dir(&d)?;
                    (spec, seed, backend, out.unwrap_or(d))
                }
                (None, Some(f), Some(seed)) => {
                    let dir = out.unwrap_or_else(|| f.parent().map(|p| p.to_path_buf()).unwrap_or_default());
                    (f, seed, backend, dir)
                }
                _ => anyhow::bail!("shrink: give a RUN_DIR, or --spec FILE with --seed S"),
            };
            cluster::backends::by_name_checked(&backend)?;
            harness::interrupt::install_interrupt_handler();
            let say = |m: &str| if !json { eprintln!("  {m}") };
            let r = shrink::shrink(&shrink::ShrinkOpts { spec, seed, backend, out, timeout: std::time::Duration::from_secs(timeout.max(1)), max_runs }, &say)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!("shrunk in {} runs ({} steps) to {} nodes, {} workloads, {} faults: {}
fails with: {}
reproduce with: {}", r.runs, r.steps.len(), r.nodes, r.workloads, r.faults, r.spec, r.failure, r.repro);
            }
        }
        Cmd::Selftest { file, json, backend, seed } => {
            let opts = cluster::run::RunOpts { file, seed, keep: false, json, artifacts: None, backend, timeout: std::time::Duration::from_secs(300), up_only: None, only: Some(cluster::spec::WorkloadKind::Selftest), capture: false };
            run_and_report(&opts, None)?;
        }
        Cmd::Up { file, seed, artifacts, backend, foreground } => harness::up::up(file, seed, artifacts, backend, foreground)?,
        Cmd::Export { file, compose, k8s, harness_image, out, image, seed } => {
            if !compose && !k8s {
                anyhow::bail!("say what to export: --compose or --k8s");
            }
            if k8s && out.is_none() {
                anyhow::bail!("--k8s writes several manifests: give their directory with -o DIR");
            }
            let spec = cluster::spec::ClusterSpec::load(&file)?;
            let image = match image {
                Some(i) => i,
                None => {
                    #[cfg(feature = "cluster")]
                    {
                        let e = cluster::backends::docker::Engine::connect()?;
                        cluster::backends::docker::ensure_image(&e)?
                    }
                    #[cfg(not(feature = "cluster"))]
                    anyhow::bail!("no --image given and lnetlab was built without --features cluster (needed to build the image)")
                }
            };
            // Compose cannot share our per-run subnets: use the spec's (or 10.89.k.0/24).
            let addr = |k: usize, net: &str, pos: usize| -> std::net::Ipv4Addr {
                let base = spec.nets[net].subnet.as_deref().and_then(|s| cluster::limits::parse_subnet(s).ok()).map_or(std::net::Ipv4Addr::new(10, 89, k as u8, 0), |s| s.0);
                std::net::Ipv4Addr::from(u32::from(base) + pos as u32 + 2)
            };
            let plan = cluster::plan::plan(&spec, seed, &addr);
            if k8s {
                let dir = out.expect("checked above");
                let text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                let o = cluster::k8s::K8sOpts { image: &image, harness_image: &harness_image, spec_text: &text };
                for f in cluster::k8s::write(&plan, &o, &dir)? {
                    println!("{}", f.display());
                }
                return Ok(());
            }
            let text = cluster::compose::to_yaml(&plan, &image)?;
            match out {
                Some(p) => std::fs::write(&p, text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                None => print!("{text}"),
            }
        }
        Cmd::Golden { action, scenarios, golden, junit } => {
            let (mut out, mut cases) = (std::io::stdout(), Vec::new());
            let bad = harness::golden::check(&scenarios, &golden, action == GoldenAction::Accept, &mut out, &mut cases)?;
            if let Some(j) = &junit {
                harness::junit::write(j, "golden check", &cases)?;
            }
            if bad > 0 {
                eprintln!("{bad} golden scenario(s) differ; review the diff, then `lnetlab golden accept` if the change is intended");
                std::process::exit(1);
            }
        }
        Cmd::Status { json } => {
            let live = harness::state::live();
            if live.is_empty() {
                let last = harness::state::read(&harness::state::last_file()).map(|st| format!("; the last one was `{}`, artifacts {}", st["cluster"].as_str().unwrap_or("?"), st["artifacts"].as_str().unwrap_or("?"))).unwrap_or_default();
                anyhow::bail!("no cluster is up{last}");
            }
            for (_, mut st) in live {
                if json {
                    st["alive"] = true.into();
                    println!("{st}");
                } else {
                    println!("cluster {} (seed {}, `lnetlab {}`, pid {}), up; artifacts {}", st["cluster"].as_str().unwrap_or("?"), st["seed"], st["how"].as_str().unwrap_or("up"), st["pid"], st["artifacts"].as_str().unwrap_or(""));
                    for n in st["nodes"].as_array().into_iter().flatten() {
                        println!("  {:<10} {}", n["name"].as_str().unwrap_or(""), n["nids"]);
                    }
                }
            }
        }
        Cmd::Ctl(a) => harness::ctl::run(&a.node, a.cmd)?,
        Cmd::Workload(a) if !harness::ctl::workload(&a)? => std::process::exit(1),
        Cmd::Workload(_) => {}
        Cmd::Timeline { run_dir, out } => {
            let dir = run_dir.unwrap_or_else(|| std::path::PathBuf::from("target/lnetlab/runs/latest"));
            let (path, t) = harness::timeline::write(&dir, out.as_deref())?;
            println!("{}: {} lanes, {} messages, {} marks, {} fault windows", path.display(), t.lanes.len(), t.arrows.len(), t.marks.len(), t.windows.len());
        }
        Cmd::Fault(a) => harness::ctl::fault_file(&a)?,
        Cmd::Runs(a) => print!("{}", harness::runs::show(&a).map_err(anyhow::Error::msg)?),
        Cmd::Logs { node } => {
            // Running clusters first, then the last one that ended.
            let mut all: Vec<serde_json::Value> = harness::state::live().into_iter().map(|x| x.1).collect();
            all.extend(harness::state::read(&harness::state::last_file()));
            if all.is_empty() {
                anyhow::bail!("no cluster is up, and none has run yet (state in {})", harness::state::dir().display());
            }
            let nodes = || all.iter().flat_map(|st| st["nodes"].as_array().into_iter().flatten());
            let n = nodes().find(|n| n["name"] == node.as_str()).ok_or_else(|| anyhow::anyhow!("no node `{node}` (nodes: {})", nodes().filter_map(|n| n["name"].as_str()).collect::<Vec<_>>().join(", ")))?;
            let log = n["log"].as_str().unwrap_or("");
            print!("{}", std::fs::read_to_string(log).map_err(|e| anyhow::anyhow!("{log}: {e}"))?);
        }
        Cmd::Image { action: ImageCmd::Save { file, registry } } => {
            #[cfg(feature = "cluster")]
            {
                let e = cluster::backends::docker::Engine::connect()?;
                let tag = cluster::backends::docker::ensure_image(&e)?;
                let bytes = cluster::backends::docker::image::save_image(&e, &tag, &file)?;
                println!("{tag}: {} ({} MB); on each swarm node: docker load -i {}", file.display(), bytes >> 20, file.display());
                if let Some(r) = registry {
                    let pushed = cluster::backends::docker::image::push_image_to(&e, &tag, &r)?;
                    println!("pushed {pushed}; run with LNETLAB_SWARM_IMAGE={pushed}");
                }
            }
            #[cfg(not(feature = "cluster"))]
            {
                let _ = (file, registry);
                anyhow::bail!("lnetlab image needs lnetlab built with --features cluster");
            }
        }
        Cmd::Down { all, prune } => {
            if all {
                for p in harness::procs::reap_scratch(&std::env::temp_dir()) {
                    println!("removed {} (its run is gone)", p.display());
                }
                #[cfg(feature = "cluster")]
                for line in cluster::backends::docker::clean_up(prune)? {
                    println!("{line}");
                }
                #[cfg(not(feature = "cluster"))]
                eprintln!("lnetlab was built without docker support (--features cluster): nothing to reap{} there", if prune { " or prune" } else { "" });
            }
            let state = harness::state::up_file();
            let Some(st) = harness::state::read(&state).filter(harness::state::owner_alive) else {
                let _ = std::fs::remove_file(&state);
                println!("no cluster is up");
                return Ok(());
            };
            let owner: harness::procs::ProcId = serde_json::from_value(st["owner"].clone())?;
            // SAFETY: signalling the process the record names, checked by pid and start time.
            unsafe { libc::kill(owner.pid, libc::SIGTERM) };
            let t0 = std::time::Instant::now();
            while owner.alive() {
                if t0.elapsed() > std::time::Duration::from_secs(20) {
                    anyhow::bail!("lnetlab pid {} did not stop in 20 s", owner.pid);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            println!("cluster down");
        }
        Cmd::Bench(a) => bench::cli::run(a)?,
    }
    Ok(())
}

/// Runs a cluster and prints the report (table or JSON); exits 1 with the repro line on failure.
/// Runs the same seed twice and compares the trace hashes (a replay must do the same things in
/// the same order); the report is the first run's, failed when the hashes differ.
fn check_determinism_of(mut opts: cluster::run::RunOpts, junit: Option<&std::path::Path>) -> anyhow::Result<()> {
    if opts.backend != "sim" || opts.keep {
        anyhow::bail!("--check-determinism needs --backend sim (only virtual time replays exactly) and no --keep");
    }
    harness::interrupt::install_interrupt_handler();
    let seed = opts.seed.unwrap_or_else(cluster::plan::random_seed);
    opts.seed = Some(seed);
    let mut first = cluster::run::run(&opts)?;
    let again = cluster::run::RunOpts { artifacts: Some(std::path::Path::new(&first.artifacts).join("replay")), json: true, ..opts.clone() };
    let second = cluster::run::run(&again)?;
    match (&first.trace_hash, &second.trace_hash) {
        (Some(a), Some(b)) if a == b => {
            if !opts.json {
                eprintln!("determinism: both runs of seed {seed} left trace hash {a}");
            }
        }
        (a, b) => {
            first.ok = false;
            first.error.get_or_insert(format!("not deterministic: seed {seed} left trace hash {} then {} (second run in {})", a.as_deref().unwrap_or("-"), b.as_deref().unwrap_or("-"), second.artifacts));
        }
    }
    if opts.json {
        println!("{}", serde_json::to_string(&first)?);
    } else {
        print!("{}", cluster::report::table(&first));
    }
    let repro = format!("{} --check-determinism", cluster::run::repro(&opts, seed));
    if let Some(j) = junit {
        harness::junit::write_run(j, &first, &opts, &repro)?;
    }
    if !first.ok {
        cluster::run::say_repro(&opts, seed, " --check-determinism");
        std::process::exit(1);
    }
    Ok(())
}

fn run_and_report(opts: &cluster::run::RunOpts, junit: Option<&std::path::Path>) -> anyhow::Result<()> {
    harness::interrupt::install_interrupt_handler();
    let r = cluster::run::run(opts)?;
    if let Some(j) = junit {
        harness::junit::write_run(j, &r, opts, &cluster::run::repro(opts, r.seed))?;
    }
    if opts.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", cluster::report::table(&r));
    }
    if r.error.as_deref() == Some("interrupted") {
        eprintln!("interrupted; artifacts in {}", r.artifacts);
        std::process::exit(130);
    }
    if !r.ok {
        cluster::run::say_repro(opts, r.seed, "");
        std::process::exit(1);
    }
    Ok(())
}
