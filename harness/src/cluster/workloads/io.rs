//! The io workload: striped files written, read back and verified by each client over ptlrpc,
//! while the fault timeline fires; progress as it goes, totals at the end.

use crate::cluster::backend::Backend;
use crate::cluster::control::{Cluster, NodeLine};
use crate::cluster::faults::Faults;
use crate::cluster::plan::Plan;
use crate::cluster::report::WorkloadReport;
use crate::cluster::spec::{optional_ms, WorkloadSpec};
use crate::cluster::workloads::waiting;
use crate::progress::{Progress, Unit};
use serde_json::{json, Value};
use std::time::Duration;

/// How long a stuck client has to say what it waits for.
const ANSWER: Duration = Duration::from_secs(2);

/// A run that cannot go on says what its unfinished clients wait for: their names, the nodes a
/// fault holds paused, and what each client that can answer says it waits for.
fn stalled(cluster: &mut Cluster, plan: &Plan, w: &WorkloadSpec, done: &[Option<Value>]) -> (String, String, String) {
    let idx = |name: &str| plan.nodes.iter().position(|n| n.name == name).expect("validated");
    let stuck: Vec<usize> = w.clients.iter().zip(done).filter(|(_, d)| d.is_none()).map(|(c, _)| idx(c)).collect();
    let paused: Vec<&str> = cluster.paused.iter().map(|&i| plan.nodes[i].name.as_str()).collect();
    let paused = if paused.is_empty() { String::new() } else { format!("; paused by a fault: {}", paused.join(", ")) };
    let names = stuck.iter().map(|&i| plan.nodes[i].name.as_str()).collect::<Vec<_>>().join(", ");
    let answerable: Vec<usize> = stuck.iter().copied().filter(|i| !cluster.paused.contains(i)).collect();
    let why = waiting::describe(cluster, plan, &answerable, ANSWER);
    (names, paused, why)
}

/// Runs an io workload while the fault timeline (started by the first workload) fires.
pub fn run_workload(cluster: &mut Cluster, plan: &Plan, (w, earlier): (&WorkloadSpec, &[WorkloadReport]), timeout: Duration, say: &dyn Fn(&str), (faults, backend): (&mut Faults, &dyn Backend)) -> anyhow::Result<WorkloadReport> {
    faults.start(cluster.now());
    let idx = |name: &str| plan.nodes.iter().position(|n| n.name == name).expect("validated");
    let total = w.size.0 * w.files * w.clients.len() as u64;
    // A fixed timeout, or adaptive ones within at_min..at_max: the same for every client.
    let fixed_ms = optional_ms(&w.rpc_timeout).map_err(anyhow::Error::msg)?;
    let at = match fixed_ms {
        Some(_) => None,
        None => {
            let mut at = lnd::ptlrpc::at::AtConfig::default();
            at.min_ms = optional_ms(&w.at_min).map_err(anyhow::Error::msg)?.unwrap_or(at.min_ms);
            at.max_ms = optional_ms(&w.at_max).map_err(anyhow::Error::msg)?.unwrap_or(at.max_ms);
            Some(at)
        }
    };
    for (k, c) in w.clients.iter().enumerate() {
        let mut job = json!({
            "name": format!("{}@{c}", w.name), "targets": plan.targets_for(c), "files": w.files, "file_size": w.size.0,
            "stripe_size": w.stripe_size.0, "stripe_count": w.stripe_count, "seed": plan.seed, "first_file": (k as u64) * w.files,
            "inflight": w.inflight, "verify": w.verify, "punch": w.punch, "fallocate": w.fallocate, "destroy": w.destroy,
            "max_tries": w.max_tries.unwrap_or(8),
            "timeout_ms": fixed_ms.unwrap_or(5000),
        });
        if let Some(at) = at {
            job["at"] = serde_json::to_value(at)?;
        }
        if let Some(src) = &w.read_back {
            // The same client's files of the earlier workload: its numbering and its objects.
            let ws = plan.spec.workloads.iter().find(|x| &x.name == src).expect("validated");
            let objects = earlier.iter().find(|r| &r.name == src).and_then(|r| r.objects.get(c)).cloned().ok_or_else(|| anyhow::anyhow!("workload `{}`: `{src}` left no objects on {c}", w.name))?;
            job["first_file"] = json!(ws.clients.iter().position(|x| x == c).expect("validated") as u64 * w.files);
            job["objects"] = objects;
            // What the earlier workload was told it wrote: a chunk of it that does not read back is lost.
            job["acked"] = earlier.iter().find(|r| &r.name == src).and_then(|r| r.acked.get(c)).cloned().unwrap_or_else(|| json!([]));
            job["write"] = json!(false);
        }
        cluster.cmd(idx(c), json!({"op": "io", "job": job}), timeout)?;
    }
    let mut done: Vec<Option<Value>> = vec![None; w.clients.len()];
    let mut written = vec![0u64; w.clients.len()];
    let deadline = cluster.now() + timeout;
    let mut bar = Progress::new(&w.name, total * if w.verify { 2 } else { 1 }, Unit::Bytes, Duration::from_millis(500), say);
    while done.iter().any(|d| d.is_none()) {
        let wake = faults.next_due().map_or(deadline, |t| t.min(deadline));
        let (i, line) = if !cluster.backlog.is_empty() {
            let (i, v) = cluster.backlog.remove(0);
            (i, NodeLine::Line(v))
        } else {
            match cluster.next_until(wake) {
                Ok(Some(x)) => x,
                Ok(None) if wake < deadline => {
                    faults.fire_due(backend, cluster, plan, timeout, say)?;
                    continue;
                }
                Ok(None) => {
                    let (names, paused, why) = stalled(cluster, plan, w, &done);
                    anyhow::bail!("workload `{}`: stalled: client(s) {names} did not finish within {timeout:?}{paused}; what they wait for:\n  {why}", w.name)
                }
                Err(e) if backend.virtual_time() && !crate::interrupt::interrupted() => {
                    let (names, paused, why) = stalled(cluster, plan, w, &done);
                    anyhow::bail!("workload `{}`: {e}; client(s) {names} did not finish{paused}; what they wait for:\n  {why}", w.name)
                }
                Err(e) => anyhow::bail!("workload `{}`: {e}", w.name),
            }
        };
        let Some(k) = w.clients.iter().position(|c| idx(c) == i) else {
            if let (NodeLine::Exited, false) = (&line, cluster.down.contains(&i)) {
                anyhow::bail!("node {} exited during workload `{}`{}", plan.nodes[i].name, w.name, cluster.nodes[i].last_words());
            }
            continue;
        };
        match line {
            NodeLine::Exited => anyhow::bail!("client {} exited during workload `{}`{}", w.clients[k], w.name, cluster.nodes[i].last_words()),
            NodeLine::Line(v) => {
                if let Some(r) = v.get("io_progress") {
                    written[k] = r["bytes_written"].as_u64().unwrap_or(0) + r["bytes_verified"].as_u64().unwrap_or(0);
                } else if let Some(r) = v.get("io_done") {
                    written[k] = r["bytes_written"].as_u64().unwrap_or(0) + r["bytes_verified"].as_u64().unwrap_or(0);
                    done[k] = Some(r.clone());
                }
            }
        }
        bar.set(written.iter().sum(), &format!("({} of {} clients done)", done.iter().filter(|d| d.is_some()).count(), done.len()));
    }
    let mut r = WorkloadReport { name: w.name.clone(), ..Default::default() };
    for (c, d) in w.clients.iter().zip(done).filter_map(|(c, d)| Some((c, d?))) {
        r.objects.insert(c.clone(), d["objects"].clone());
        r.acked.insert(c.clone(), d["acked"].clone());
        r.bytes_written += d["bytes_written"].as_u64().unwrap_or(0);
        r.bytes_verified += d["bytes_verified"].as_u64().unwrap_or(0);
        r.rpcs += d["rpcs"].as_u64().unwrap_or(0);
        r.errors += d["errors"].as_u64().unwrap_or(0);
        r.resends += d["resends"].as_u64().unwrap_or(0);
        r.reconnects += d["reconnects"].as_u64().unwrap_or(0);
        r.replays += d["replays"].as_u64().unwrap_or(0);
        r.early_replies += d["early_replies"].as_u64().unwrap_or(0);
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

