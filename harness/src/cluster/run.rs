//! `lnetlab run`: bring a cluster up, run its workloads, verify, tear down — writing an
//! artifacts directory (spec, node logs, traces, report, REPRO) whatever happens.

use super::plan::{plan, Plan};
use super::process::{Cluster, NodeLine};

use super::spec::{ClusterSpec, Role, WorkloadSpec};
use serde::Serialize;
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
    pub only: Option<super::spec::WorkloadKind>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadReport {
    pub name: String,
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub rpcs: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    #[serde(default)]
    pub resends: u64,
    /// Times clients connected again after a server lost their export (it restarted).
    #[serde(default)]
    pub reconnects: u64,
    #[serde(default)]
    pub lost_acked_writes: u64,
    #[serde(default)]
    pub silent_corruptions: u64,
    /// For selftests: rates and latency percentiles (the slowest client's percentiles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selftest: Option<Value>,
    /// For io: the objects each client used, by client (for a later `read_back`).
    #[serde(skip)]
    pub objects: std::collections::BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cluster: String,
    pub backend: String,
    pub seed: u64,
    pub ok: bool,
    pub workloads: Vec<WorkloadReport>,
    pub artifacts: String,
    /// Faults injected (messages dropped or delayed by LNet rules, device faults, pauses and
    /// partitions)...
    pub faults_injected: u64,
    /// ...by kind.
    pub faults: std::collections::BTreeMap<String, u64>,
    /// Spec faults this backend cannot inject.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults_skipped: Vec<String>,
    /// RPCs the clients had to send again.
    pub resends: u64,
    /// Times clients connected again after a server restart.
    pub reconnects: u64,
    /// Acknowledged writes that did not read back.
    pub lost_acked_writes: u64,
    /// Wrong data that passed its checksum.
    pub silent_corruptions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_s: f64,
}

fn progress(json: bool) -> impl Fn(&str) {
    move |s: &str| {
        if !json {
            eprintln!("  {s}");
        }
    }
}

/// A fresh seed when none is given.
pub fn random_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    (t ^ (std::process::id() as u64).rotate_left(32)) % 1_000_000_000
}

fn artifacts_dir(spec: &ClusterSpec, seed: u64, base: Option<&Path>) -> PathBuf {
    let utc = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = base.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target/lnetlab/runs"));
    base.join(format!("{}-{utc}-{seed}", spec.name))
}

/// The one-line command that reproduces a run.
pub fn repro(opts: &RunOpts, seed: u64) -> String {
    format!("lnetlab run {} --seed {seed} --backend {} --keep", opts.file.display(), opts.backend)
}

pub fn run(opts: &RunOpts) -> anyhow::Result<Report> {
    let spec = ClusterSpec::load(&opts.file)?;
    let backend = super::backend::by_name(&opts.backend)?;
    let seed = opts.seed.or(spec.seed).unwrap_or_else(random_seed);
    let art = artifacts_dir(&spec, seed, opts.artifacts.as_deref());
    std::fs::create_dir_all(&art)?;
    std::fs::copy(&opts.file, art.join("spec.yaml"))?;
    std::fs::write(art.join("REPRO"), repro(opts, seed) + "\n")?;
    // Loopback block for TCP NIDs: distinct per run so concurrent runs never share addresses.
    let salt = random_seed() ^ seed.rotate_left(17) ^ std::process::id() as u64;
    let lb = (100 + (salt % 150) as u8, ((salt / 150) % 256) as u8);
    let plan = match backend.tcp_addressing(&spec) {
        Some(f) => plan(&spec, seed, f.as_ref()),
        None => plan(&spec, seed, &super::plan::loopback(lb.0, lb.1)),
    };
    let nids: Vec<(String, Vec<String>)> = plan.nodes.iter().map(|n| (n.name.clone(), n.nids.iter().map(|x| x.1.to_string()).collect())).collect();
    std::fs::write(art.join("nids.json"), serde_json::to_string_pretty(&nids)? + "\n")?;
    let t0 = Instant::now();
    let say = progress(opts.json);
    say(&format!("cluster `{}`: {} nodes, seed {seed}, artifacts {}", spec.name, plan.nodes.len(), art.display()));
    let mut report = Report { cluster: spec.name.clone(), backend: opts.backend.clone(), seed, ok: false, workloads: Vec::new(), artifacts: art.display().to_string(), faults_injected: 0, faults: Default::default(), faults_skipped: Vec::new(), resends: 0, reconnects: 0, lost_acked_writes: 0, silent_corruptions: 0, error: None, elapsed_s: 0.0 };
    let res = execute(backend.as_ref(), &plan, opts, &art, &say, &mut report);
    if let Some(state) = &opts.up_only {
        let _ = std::fs::remove_file(state);
    }
    report.elapsed_s = t0.elapsed().as_secs_f64();
    match res {
        // (A read_back workload writes nothing and verifies what another wrote.)
        Ok(()) => report.ok = report.workloads.iter().all(|w| w.errors == 0 && w.bytes_verified >= w.bytes_written),
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    std::fs::write(art.join("report.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    Ok(report)
}

fn execute(backend: &dyn super::backend::Backend, plan: &Plan, opts: &RunOpts, art: &Path, say: &dyn Fn(&str), report: &mut Report) -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new().prefix("lnetlab-run-").tempdir()?;
    let mut cluster = backend.up(plan, scratch.path(), art, opts.timeout, say)?;
    let mut faults = super::faults::Faults::new(plan, backend, art, say)?;
    report.faults_skipped = faults.skipped.clone();
    let res = (|| -> anyhow::Result<()> {
        for i in 0..plan.nodes.len() {
            start_roles(&mut cluster, plan, i, opts.timeout, say)?;
        }
        faults.install(&mut cluster, plan, opts.timeout, say)?;
        if let Some(state) = &opts.up_only {
            let nodes: Vec<Value> = plan.nodes.iter().map(|n| json!({"name": n.name, "nids": n.nids.iter().map(|x| x.1.to_string()).collect::<Vec<_>>(), "log": art.join("nodes").join(format!("{}.log", n.name))})).collect();
            let st = json!({"pid": std::process::id(), "cluster": plan.spec.name, "seed": plan.seed, "artifacts": art, "scratch": scratch.path(), "nodes": nodes, "ready": true});
            std::fs::write(state, serde_json::to_string_pretty(&st)? + "\n")?;
            say("cluster up; `lnetlab status`, `lnetlab logs NODE`, `lnetlab down`");
            while !crate::interrupted() {
                std::thread::sleep(Duration::from_millis(200));
            }
            return Ok(());
        }
        for w in plan.spec.workloads.iter().filter(|w| opts.only.is_none_or(|k| w.kind == k)) {
            let r = match w.kind {
                super::spec::WorkloadKind::Io => run_workload(&mut cluster, plan, (w, &report.workloads), opts.timeout, say, (&mut faults, backend))?,
                super::spec::WorkloadKind::Selftest => run_selftest(&mut cluster, plan, w, opts.timeout, say)?,
            };
            report.workloads.push(r);
        }
        report.resends = report.workloads.iter().map(|w| w.resends).sum();
        report.reconnects = report.workloads.iter().map(|w| w.reconnects).sum();
        faults.finish(backend, &mut cluster, plan, opts.timeout, say)?;
        if !plan.spec.faults.is_empty() {
            report.faults = faults.counts(&mut cluster, plan, art, opts.timeout)?;
            report.faults_injected = report.faults.values().sum();
            say(&format!("faults injected: {} ({})", report.faults_injected, report.faults.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")));
        }
        report.lost_acked_writes = report.workloads.iter().map(|w| w.lost_acked_writes).sum();
        report.silent_corruptions = report.workloads.iter().map(|w| w.silent_corruptions).sum();
        Ok(())
    })();
    if res.is_err() {
        // Never leave a node frozen or cut off behind a failed run.
        if let Err(e) = faults.finish(backend, &mut cluster, plan, opts.timeout, say) {
            say(&format!("closing fault windows after the failure: {e:#}"));
        }
    }
    if opts.keep {
        say(&format!("--keep: cluster left up (scratch {}); press Ctrl-C to tear it down", scratch.path().display()));
        while !crate::interrupted() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    cluster.down();
    drop(scratch);
    res
}

/// Starts node `i`'s server roles (the OSS with its targets).
pub fn start_roles(cluster: &mut Cluster, plan: &Plan, i: usize, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<()> {
    let n = &plan.nodes[i];
    if n.is(Role::Oss) {
        let targets: Vec<Value> = n.targets.iter().map(|t| json!({"index": t.ost, "dir": cluster.target_dirs[&(n.name.clone(), t.ost)], "size": t.size.0})).collect();
        cluster.cmd(i, json!({"op": "oss_start", "targets": targets}), timeout)?;
        say(&format!("oss {}: {} OSTs", n.name, n.targets.len()));
    }
    Ok(())
}

/// Runs an io workload while the fault timeline (started by the first workload) fires.
fn run_workload(cluster: &mut Cluster, plan: &Plan, (w, earlier): (&WorkloadSpec, &[WorkloadReport]), timeout: Duration, say: &dyn Fn(&str), (faults, backend): (&mut super::faults::Faults, &dyn super::backend::Backend)) -> anyhow::Result<WorkloadReport> {
    faults.start();
    let idx = |name: &str| plan.nodes.iter().position(|n| n.name == name).expect("validated");
    let total = w.size.0 * w.files * w.clients.len() as u64;
    for (k, c) in w.clients.iter().enumerate() {
        let mut job = json!({
            "name": format!("{}@{c}", w.name), "targets": plan.targets_for(c), "files": w.files, "file_size": w.size.0,
            "stripe_size": w.stripe_size.0, "stripe_count": w.stripe_count, "seed": plan.seed, "first_file": (k as u64) * w.files,
            "inflight": w.inflight, "verify": w.verify, "punch": w.punch, "destroy": w.destroy,
            "max_tries": w.max_tries.unwrap_or(8),
            "timeout_ms": w.rpc_timeout.as_deref().map(super::spec::parse_duration).transpose().map_err(anyhow::Error::msg)?.map(|d| d.as_millis() as u64).unwrap_or(5000),
        });
        if let Some(src) = &w.read_back {
            // The same client's files of the earlier workload: its numbering and its objects.
            let ws = plan.spec.workloads.iter().find(|x| &x.name == src).expect("validated");
            let objects = earlier.iter().find(|r| &r.name == src).and_then(|r| r.objects.get(c)).cloned().ok_or_else(|| anyhow::anyhow!("workload `{}`: `{src}` left no objects on {c}", w.name))?;
            job["first_file"] = json!(ws.clients.iter().position(|x| x == c).expect("validated") as u64 * w.files);
            job["objects"] = objects;
            job["write"] = json!(false);
        }
        cluster.cmd(idx(c), json!({"op": "io", "job": job}), timeout)?;
    }
    let mut done: Vec<Option<Value>> = vec![None; w.clients.len()];
    let mut written = vec![0u64; w.clients.len()];
    let deadline = Instant::now() + timeout;
    let mut last = Instant::now();
    while done.iter().any(|d| d.is_none()) {
        let wake = faults.next_due().map_or(deadline, |t| t.min(deadline));
        let (i, line) = if !cluster.backlog.is_empty() {
            let (i, v) = cluster.backlog.remove(0);
            (i, NodeLine::Line(v))
        } else {
            match cluster.next_until(wake).map_err(|e| anyhow::anyhow!("workload `{}`: {e}", w.name))? {
                Some(x) => x,
                None if wake < deadline => {
                    faults.fire_due(backend, cluster, plan, timeout, say)?;
                    continue;
                }
                None => anyhow::bail!("workload `{}`: timed out waiting for the nodes", w.name),
            }
        };
        let Some(k) = w.clients.iter().position(|c| idx(c) == i) else {
            if let (NodeLine::Exited, false) = (&line, cluster.down.contains(&i)) {
                anyhow::bail!("node {} exited during workload `{}`", plan.nodes[i].name, w.name);
            }
            continue;
        };
        match line {
            NodeLine::Exited => anyhow::bail!("client {} exited during workload `{}`", w.clients[k], w.name),
            NodeLine::Line(v) => {
                if let Some(r) = v.get("io_progress") {
                    written[k] = r["bytes_written"].as_u64().unwrap_or(0) + r["bytes_verified"].as_u64().unwrap_or(0);
                } else if let Some(r) = v.get("io_done") {
                    written[k] = r["bytes_written"].as_u64().unwrap_or(0) + r["bytes_verified"].as_u64().unwrap_or(0);
                    done[k] = Some(r.clone());
                }
            }
        }
        if last.elapsed() > Duration::from_millis(500) || done.iter().all(|d| d.is_some()) {
            last = Instant::now();
            let moved: u64 = written.iter().sum();
            let want = total * if w.verify { 2 } else { 1 };
            let pct = if want == 0 { 100.0 } else { 100.0 * moved as f64 / want as f64 };
            say(&format!("{}: [{:<30}] {:5.1}% ({} of {} clients done)", w.name, "#".repeat((pct / 100.0 * 30.0) as usize), pct, done.iter().filter(|d| d.is_some()).count(), done.len()));
        }
    }
    let mut r = WorkloadReport { name: w.name.clone(), ..Default::default() };
    for (c, d) in w.clients.iter().zip(done).filter_map(|(c, d)| Some((c, d?))) {
        r.objects.insert(c.clone(), d["objects"].clone());
        r.bytes_written += d["bytes_written"].as_u64().unwrap_or(0);
        r.bytes_verified += d["bytes_verified"].as_u64().unwrap_or(0);
        r.rpcs += d["rpcs"].as_u64().unwrap_or(0);
        r.errors += d["errors"].as_u64().unwrap_or(0);
        r.resends += d["resends"].as_u64().unwrap_or(0);
        r.reconnects += d["reconnects"].as_u64().unwrap_or(0);
        r.lost_acked_writes += d["lost_acked_writes"].as_u64().unwrap_or(0);
        r.silent_corruptions += d["silent_corruptions"].as_u64().unwrap_or(0);
        if let Some(m) = d["messages"].as_array() {
            r.messages.extend(m.iter().filter_map(|x| x.as_str().map(|s| format!("{}: {s}", d["name"].as_str().unwrap_or("?")))));
        }
    }
    if !w.verify {
        r.bytes_verified = r.bytes_written;
    }
    Ok(r)
}

pub fn run_selftest(cluster: &mut Cluster, plan: &Plan, w: &WorkloadSpec, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<WorkloadReport> {
    use super::spec::Distribute;
    let idx = |name: &str| plan.nodes.iter().position(|n| n.name == name).expect("validated");
    let duration_ms = w.duration.as_deref().map(super::spec::parse_duration).transpose().map_err(anyhow::Error::msg)?.map(|d| d.as_millis() as u64);
    let clients: Vec<usize> = w.from.iter().map(|c| idx(c)).collect();
    for (k, c) in w.from.iter().enumerate() {
        let tos: Vec<&String> = match w.distribute {
            Distribute::OneToOne => vec![&w.to[k % w.to.len()]],
            Distribute::OneToAll => w.to.iter().collect(),
        };
        let targets: Vec<String> = tos.iter().map(|t| plan.nid_for(c, t).map(|n| n.to_string()).ok_or_else(|| anyhow::anyhow!("`{c}` cannot reach `{t}`"))).collect::<anyhow::Result<_>>()?;
        let job = json!({"name": format!("{}@{c}", w.name), "test": w.test, "targets": targets, "size": w.size.0, "concurrency": w.concurrency, "count": w.count, "duration_ms": duration_ms});
        cluster.cmd(idx(c), json!({"op": "selftest", "job": job}), timeout)?;
    }
    let mut last: Vec<Option<Value>> = vec![None; clients.len()];
    let mut done: Vec<Option<Value>> = vec![None; clients.len()];
    let deadline = Instant::now() + timeout + Duration::from_millis(duration_ms.unwrap_or(0));
    let mut shown = Instant::now();
    let mut pending = std::mem::take(&mut cluster.backlog);
    while done.iter().any(|d| d.is_none()) {
        let (i, line) = match pending.pop() {
            Some((i, v)) => (i, NodeLine::Line(v)),
            None => cluster.next(deadline).map_err(|e| anyhow::anyhow!("selftest `{}`: {e}", w.name))?,
        };
        let NodeLine::Line(v) = line else { anyhow::bail!("node {} exited during selftest `{}`", plan.nodes[i].name, w.name) };
        let Some(k) = clients.iter().position(|&c| c == i) else { continue };
        if let Some(r) = v.get("st_progress") {
            last[k] = Some(r.clone());
        } else if let Some(r) = v.get("st_done") {
            done[k] = Some(r.clone());
        }
        if shown.elapsed() > Duration::from_secs(1) {
            shown = Instant::now();
            let cur: Vec<&Value> = done.iter().zip(&last).filter_map(|(d, l)| d.as_ref().or(l.as_ref())).collect();
            let sum = |f: &str| cur.iter().map(|r| r[f].as_f64().unwrap_or(0.0)).sum::<f64>();
            say(&format!("{} stat: {:9.1} MB/s {:9.0} RPC/s  errors {}", w.name, sum("mb_per_s"), sum("rpc_per_s"), sum("errors")));
        }
    }
    let all: Vec<Value> = done.into_iter().flatten().collect();
    let sum = |f: &str| all.iter().map(|r| r[f].as_f64().unwrap_or(0.0)).sum::<f64>();
    let max = |f: &str| all.iter().map(|r| r[f].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
    let bytes = sum("bytes") as u64;
    let st = json!({"test": w.test, "clients": all.len(), "ops": sum("ops") as u64, "mb_per_s": sum("mb_per_s"), "rpc_per_s": sum("rpc_per_s"), "p50_us": max("p50_us"), "p99_us": max("p99_us"), "p999_us": max("p999_us")});
    say(&format!("{}: {} ops, {:.1} MB/s, {:.0} RPC/s, latency p50 {:.0} µs p99 {:.0} µs p999 {:.0} µs", w.name, st["ops"], st["mb_per_s"].as_f64().unwrap_or(0.0), st["rpc_per_s"].as_f64().unwrap_or(0.0), st["p50_us"].as_f64().unwrap_or(0.0), st["p99_us"].as_f64().unwrap_or(0.0), st["p999_us"].as_f64().unwrap_or(0.0)));
    Ok(WorkloadReport { name: w.name.clone(), bytes_written: bytes, bytes_verified: bytes, rpcs: sum("ops") as u64, errors: sum("errors") as u64, resends: 0, reconnects: 0, lost_acked_writes: 0, silent_corruptions: 0, messages: Vec::new(), selftest: Some(st), objects: Default::default() })
}

/// The human summary printed at the end of a run.
pub fn table(r: &Report) -> String {
    let mut s = format!("{:<20} {:>14} {:>14} {:>8} {:>7}\n", "workload", "written", "verified", "rpcs", "errors");
    for w in &r.workloads {
        s += &format!("{:<20} {:>14} {:>14} {:>8} {:>7}\n", w.name, w.bytes_written, w.bytes_verified, w.rpcs, w.errors);
        for m in &w.messages {
            s += &format!("    ! {m}\n");
        }
    }
    s += &format!("cluster {} ({} backend, seed {}): {} in {:.1}s; artifacts {}\n", r.cluster, r.backend, r.seed, if r.ok { "OK" } else { "FAILED" }, r.elapsed_s, r.artifacts);
    if let Some(e) = &r.error {
        s += &format!("error: {e}\n");
    }
    s
}
