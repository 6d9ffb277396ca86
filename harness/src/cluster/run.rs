//! `lnetlab run`: bring a cluster up, run its workloads, verify, tear down — writing an
//! artifacts directory (spec, node logs, traces, report, REPRO) whatever happens.

use super::backend::Backend;
use super::backends;
use super::faults::Faults;
use super::plan::{loopback, plan, random_seed, Plan};
use super::report::{artifacts_dir, trace_hash, Report};
use super::spec::{ClusterSpec, WorkloadKind};
use super::control::Cluster;
use super::serve::{CtlServer, Job};
use super::workloads::{io::run_workload, orphans, selftest::run_selftest};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RunOpts {
    pub file: PathBuf,
    pub seed: Option<u64>,
    pub keep: bool,
    pub json: bool,
    pub artifacts: Option<PathBuf>,
    pub backend: String,
    pub timeout: Duration,
    /// `lnetlab up`: no workloads; stay up until interrupted, announcing readiness in `state`.
    pub up_only: Option<PathBuf>,
    /// Run only the workloads of this kind (`lnetlab selftest` runs only selftests).
    pub only: Option<WorkloadKind>,
    /// Capture every node's socklnd traffic (as `capture: true` in the spec).
    pub capture: bool,
}

/// How long cleanup after a failure waits for a node's answer.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What `lnetlab status` and `logs` read about a running cluster.
fn cluster_state(plan: &Plan, (art, scratch): (&Path, &Path), (how, backend): (&str, &str), ctl: Option<&CtlServer>) -> Value {
    let nodes: Vec<Value> = plan.nodes.iter().map(|n| json!({"name": n.name, "nids": n.nids.iter().map(|x| x.1.to_string()).collect::<Vec<_>>(), "log": art.join("nodes").join(format!("{}.log", n.name))})).collect();
    json!({"cluster": plan.spec.name, "seed": plan.seed, "how": how, "backend": backend, "artifacts": art, "scratch": scratch, "nodes": nodes, "ready": true, "ctl": ctl.map(|c| c.path.clone())})
}

/// Serves `lnetlab ctl` and `lnetlab workload` on the running cluster until we are interrupted
/// (without a control socket, just waits).
#[allow(clippy::too_many_arguments)]
fn serve_until_interrupted(ctl: Option<&mut CtlServer>, cluster: &mut Cluster, plan: &Plan, backend: &dyn Backend, faults: &mut Faults, opts: &RunOpts, art: &Path, say: &dyn Fn(&str)) {
    let Some(ctl) = ctl else {
        while !crate::interrupt::interrupted() {
            std::thread::sleep(Duration::from_millis(200));
        }
        return;
    };
    let mut applied = 0;
    let mut run = |c: &mut Cluster, p: &Plan, job: Job| -> anyhow::Result<Value> {
        let names = match job {
            Job::Workloads(names) => names,
            Job::Faults => {
                applied += 1;
                say(&format!("faults: {} (asked by `lnetlab fault`)", p.spec.faults.len()));
                let mut f = Faults::tagged(p, backend, art, say, &format!("live{applied}-"))?;
                let res = f.apply_now(backend, c, p, opts.timeout, say);
                if let Err(e) = res {
                    let _ = f.finish(backend, c, p, opts.timeout, say);
                    return Err(e);
                }
                return Ok(json!({"records": f.records, "skipped": f.skipped, "counts": f.counts(c, p, art, opts.timeout)?}));
            }
        };
        let t0 = Instant::now();
        let mut r = Report::new(&p.spec.name, &opts.backend, p.seed, art);
        let res = (|| -> anyhow::Result<()> {
            for w in p.spec.workloads.iter().filter(|w| names.contains(&w.name)) {
                say(&format!("workload `{}` (asked by `lnetlab workload`)", w.name));
                let wr = match w.kind {
                    WorkloadKind::Io => run_workload(c, p, (w, &r.workloads), opts.timeout, say, (&mut *faults, backend))?,
                    WorkloadKind::Selftest => run_selftest(c, p, w, opts.timeout, say)?,
                };
                r.workloads.push(wr);
            }
            Ok(())
        })();
        r.finish(res.err().map(|e| format!("{e:#}")), t0);
        Ok(serde_json::to_value(&r)?)
    };
    while !crate::interrupt::interrupted() {
        ctl.serve(cluster, plan, Duration::from_millis(200), &mut run);
    }
}

/// The control socket of the cluster this process keeps (none if it cannot be made: the
/// cluster still runs, `lnetlab ctl` says it cannot reach it).
fn ctl_server(say: &dyn Fn(&str)) -> Option<CtlServer> {
    let path = crate::state::dir().join(format!("ctl-{}.sock", std::process::id()));
    CtlServer::bind(&path).map_err(|e| say(&format!("no `lnetlab ctl` for this cluster: {e}"))).ok()
}

fn progress(json: bool) -> impl Fn(&str) {
    move |s: &str| {
        if !json {
            eprintln!("  {s}");
        }
    }
}

/// The one-line command that reproduces a run.
pub fn repro(opts: &RunOpts, seed: u64) -> String {
    let capture = if opts.capture { " --capture" } else { "" };
    format!("lnetlab run {} --seed {seed} --backend {} --keep{capture}", opts.file.display(), opts.backend)
}

/// For a run of `file` on a backend with real timing: the command that runs its spec and seed
/// on the simulator instead, when the simulator can inject every fault of the spec — the same
/// data and fault plan on virtual time, replayable byte for byte from then on.
pub fn sim_repro(file: &Path, seed: u64, backend: &str) -> Option<String> {
    if backend == "sim" {
        return None;
    }
    let spec = ClusterSpec::load(file).ok()?;
    let sim = backends::sim::SimBackend;
    for f in &spec.faults {
        if !sim.can_inject(f.kind, !f.windows().ok()?.is_empty()) {
            return None;
        }
    }
    Some(format!("lnetlab run {} --seed {seed} --backend sim --check-determinism", file.display()))
}

/// Prints how to reproduce a failed run (`suffix` after its REPRO line), and how to replay it
/// on the simulator where that can be done.
pub fn say_repro(opts: &RunOpts, seed: u64, suffix: &str) {
    eprintln!("reproduce with: {}{suffix}", repro(opts, seed));
    if let Some(sim) = sim_repro(&opts.file, seed, &opts.backend) {
        eprintln!("replay on the simulator: {sim}");
    }
}

pub fn run(opts: &RunOpts) -> anyhow::Result<Report> {
    let mut spec = ClusterSpec::load(&opts.file)?;
    spec.capture |= opts.capture;
    let backend = backends::by_name(&opts.backend)?;
    let seed = opts.seed.or(spec.seed).unwrap_or_else(random_seed);
    // Runs killed before they could clean up left their scratch: reap it.
    crate::procs::reap_scratch(&std::env::temp_dir());
    let art = artifacts_dir(&spec, seed, opts.artifacts.as_deref())?;
    std::fs::copy(&opts.file, art.join("spec.yaml"))?;
    std::fs::write(art.join("REPRO"), repro(opts, seed) + "\n")?;
    if spec.capture {
        std::fs::create_dir_all(art.join("pcap"))?;
    }
    // Loopback block for TCP NIDs: distinct per run so concurrent runs never share addresses.
    let salt = random_seed() ^ seed.rotate_left(17) ^ std::process::id() as u64;
    let lb = (100 + (salt % 150) as u8, ((salt / 150) % 256) as u8);
    let mut report = Report::new(&spec.name, &opts.backend, seed, &art);
    // Addresses may be claimed (docker networks); a failure is the run's, reported like any.
    let plan = match backend.tcp_addressing(&spec) {
        Ok(Some(f)) => plan(&spec, seed, f.as_ref()),
        Ok(None) => plan(&spec, seed, &loopback(&spec, lb.0, lb.1)),
        Err(e) => {
            report.error = Some(format!("{e:#}"));
            std::fs::write(art.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
            return Ok(report);
        }
    };
    let nids: Vec<(String, Vec<String>)> = plan.nodes.iter().map(|n| (n.name.clone(), n.nids.iter().map(|x| x.1.to_string()).collect())).collect();
    std::fs::write(art.join("nids.json"), serde_json::to_string_pretty(&nids)? + "\n")?;
    let t0 = Instant::now();
    let say = progress(opts.json);
    crate::progress::set_quiet(opts.json);
    say(&format!("cluster `{}`: {} nodes, seed {seed}, artifacts {}", spec.name, plan.nodes.len(), art.display()));
    let res = execute(backend.as_ref(), &plan, opts, &art, &say, &mut report);
    report.elapsed_s = t0.elapsed().as_secs_f64();
    if backend.virtual_time() {
        report.trace_hash = trace_hash(&art).ok();
    }
    match res {
        // An interrupted run blames nobody: whatever failed, failed because we stopped it.
        Err(_) if crate::interrupt::interrupted() && !opts.keep && opts.up_only.is_none() => report.error = Some("interrupted".into()),
        // (A read_back workload writes nothing and verifies what another wrote.)
        Ok(()) => report.ok = report.error.is_none() && report.workloads.iter().all(|w| w.errors == 0 && w.bytes_verified >= w.bytes_written),
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    if !report.ok && report.error.as_deref() != Some("interrupted") {
        if let Some(sim) = sim_repro(&opts.file, seed, &opts.backend) {
            std::fs::write(art.join("REPRO"), format!("{}\n{sim}\n", repro(opts, seed)))?;
        }
    }
    std::fs::write(art.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(report)
}

fn execute(backend: &dyn Backend, plan: &Plan, opts: &RunOpts, art: &Path, say: &dyn Fn(&str), report: &mut Report) -> anyhow::Result<()> {
    let scratch = crate::procs::scratch_dir()?;
    let mut cluster = backend.up(plan, scratch.path(), art, opts.timeout, say)?;
    if cluster.trace_us().is_none() {
        // Wall-clock nodes count trace times from the plan's start on the Unix clock.
        let now_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let since = Duration::from_micros(now_us.saturating_sub(plan.t0_unix_us));
        cluster.set_trace_t0(cluster.now().checked_sub(since).unwrap_or_else(|| cluster.now()));
    }
    let up_at = cluster.now();
    let mut faults = Faults::new(plan, backend, art, say)?;
    report.faults_skipped = faults.skipped.clone();
    let res = (|| -> anyhow::Result<()> {
        for i in 0..plan.nodes.len() {
            cluster.start_roles(plan, i, opts.timeout, say)?;
        }
        faults.install(&mut cluster, plan, opts.timeout, say)?;
        if let Some(state) = &opts.up_only {
            cluster.sync_artifacts();
            let mut ctl = ctl_server(say);
            crate::state::write(state, cluster_state(plan, (art, scratch.path()), ("up", &opts.backend), ctl.as_ref()))?;
            say("cluster up; `lnetlab status`, `lnetlab ctl NODE …`, `lnetlab workload NAME|FILE`, `lnetlab logs NODE`, `lnetlab down`");
            serve_until_interrupted(ctl.as_mut(), &mut cluster, plan, backend, &mut faults, opts, art, say);
            crate::state::retire(state);
            return Ok(());
        }
        for w in plan.spec.workloads.iter().filter(|w| opts.only.is_none_or(|k| w.kind == k)) {
            let r = match w.kind {
                WorkloadKind::Io => run_workload(&mut cluster, plan, (w, &report.workloads), opts.timeout, say, (&mut faults, backend))?,
                WorkloadKind::Selftest => run_selftest(&mut cluster, plan, w, opts.timeout, say)?,
            };
            report.workloads.push(r);
        }
        report.resends = report.workloads.iter().map(|w| w.resends).sum();
        report.reconnects = report.workloads.iter().map(|w| w.reconnects).sum();
        report.replays = report.workloads.iter().map(|w| w.replays).sum();
        report.early_replies = report.workloads.iter().map(|w| w.early_replies).sum();
        faults.finish(backend, &mut cluster, plan, opts.timeout, say)?;
        if !plan.spec.faults.is_empty() {
            report.faults = faults.counts(&mut cluster, plan, art, opts.timeout)?;
            report.faults_injected = report.faults.values().sum();
            say(&format!("faults injected: {} ({})", report.faults_injected, report.faults.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")));
        }
        if plan.spec.lnet.is_some() {
            let now = super::health::snapshot(&mut cluster, plan, opts.timeout)?;
            report.lnet_health = super::health::report(&now, faults.nis_at_heal.as_ref(), plan);
        }
        report.lost_acked_writes = report.workloads.iter().map(|w| w.lost_acked_writes).sum();
        report.silent_corruptions = report.workloads.iter().map(|w| w.silent_corruptions).sum();
        // Objects no client knows are leaked, unless an OSS restarted: it forgets its exports'
        // CREATE replies (Lustre keeps them in last_rcvd), so a CREATE resent across the restart
        // may make a second object.
        let lost = orphans::orphans(&mut cluster, plan, &report.workloads, art, opts.timeout)?;
        report.orphan_objects = lost.len() as u64;
        if !lost.is_empty() {
            if ["restart", "crash"].iter().any(|k| report.faults.get(*k).is_some_and(|n| *n > 0)) {
                say(&format!("{} (an OSS restarted: not a failure)", orphans::describe(&lost)));
            } else {
                report.error = Some(orphans::describe(&lost));
            }
        }
        Ok(())
    })();
    if res.is_err() {
        // Never leave a node frozen or cut off behind a failed run; quickly, for a node that
        // does not answer now will not answer in another full timeout either.
        if let Err(e) = faults.finish(backend, &mut cluster, plan, opts.timeout.min(CLEANUP_TIMEOUT), say) {
            say(&format!("closing fault windows after the failure: {e:#}"));
        }
    }
    if opts.keep {
        // `lnetlab logs` reads the kept cluster's logs from the artifacts.
        cluster.sync_artifacts();
        let state = crate::state::keep_file(std::process::id());
        let mut ctl = ctl_server(say);
        if let Err(e) = crate::state::write(&state, cluster_state(plan, (art, scratch.path()), ("run --keep", &opts.backend), ctl.as_ref())) {
            say(&format!("cannot record the kept cluster for `lnetlab status`: {e}"));
        }
        say(&format!("--keep: cluster left up (scratch {}); `lnetlab ctl NODE …` inspects it; press Ctrl-C to tear it down", scratch.path().display()));
        serve_until_interrupted(ctl.as_mut(), &mut cluster, plan, backend, &mut faults, opts, art, say);
        drop(ctl);
        crate::state::retire(&state);
    }
    if backend.virtual_time() {
        report.virtual_s = Some(cluster.now().saturating_duration_since(up_at).as_secs_f64());
    }
    if !plan.hosts.is_empty() {
        // The devices write their statistics every 50 ms: let the last changes land.
        std::thread::sleep(Duration::from_millis(150));
        cluster.sync_artifacts();
        report.fabric_links = super::devfaults::link_counts(art);
        if !report.fabric_links.is_empty() {
            say(&format!("fabric links: {}", report.fabric_links.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")));
        }
    }
    cluster.down();
    drop(scratch);
    res
}

