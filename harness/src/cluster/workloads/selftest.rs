//! The selftest workload: lnet-selftest-style ping and brw between node groups, rates every
//! second and latency percentiles at the end.

use crate::cluster::control::{Cluster, NodeLine};
use crate::cluster::plan::Plan;
use crate::cluster::report::WorkloadReport;
use crate::cluster::spec::{optional_ms, Distribute, WorkloadSpec};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Runs a selftest workload (lnet-selftest style ping or brw between node groups).
pub fn run_selftest(cluster: &mut Cluster, plan: &Plan, w: &WorkloadSpec, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<WorkloadReport> {
    let idx = |name: &str| plan.nodes.iter().position(|n| n.name == name).expect("validated");
    let duration_ms = optional_ms(&w.duration).map_err(anyhow::Error::msg)?;
    let timeout_ms = optional_ms(&w.rpc_timeout).map_err(anyhow::Error::msg)?;
    let clients: Vec<usize> = w.from.iter().map(|c| idx(c)).collect();
    for (k, c) in w.from.iter().enumerate() {
        let tos: Vec<&String> = match w.distribute {
            Distribute::OneToOne => vec![&w.to[k % w.to.len()]],
            Distribute::OneToAll => w.to.iter().collect(),
        };
        let targets: Vec<String> = tos.iter().map(|t| plan.nid_for(c, t).map(|n| n.to_string()).ok_or_else(|| anyhow::anyhow!("`{c}` cannot reach `{t}`"))).collect::<anyhow::Result<_>>()?;
        let mut job = json!({"name": format!("{}@{c}", w.name), "test": w.test, "targets": targets, "size": w.size.0, "concurrency": w.concurrency, "count": w.count, "duration_ms": duration_ms});
        if let Some(t) = timeout_ms {
            job["timeout_ms"] = json!(t);
        }
        cluster.cmd(idx(c), json!({"op": "selftest", "job": job}), timeout)?;
    }
    let mut last: Vec<Option<Value>> = vec![None; clients.len()];
    let mut done: Vec<Option<Value>> = vec![None; clients.len()];
    let deadline = cluster.now() + timeout + Duration::from_millis(duration_ms.unwrap_or(0));
    let mut shown = Instant::now();
    let mut pending = std::mem::take(&mut cluster.backlog);
    while done.iter().any(|d| d.is_none()) {
        let (i, line) = match pending.pop() {
            Some((i, v)) => (i, NodeLine::Line(v)),
            None => cluster.next(deadline).map_err(|e| anyhow::anyhow!("selftest `{}`: {e}", w.name))?,
        };
        let NodeLine::Line(v) = line else { anyhow::bail!("node {} exited during selftest `{}`{}", plan.nodes[i].name, w.name, cluster.nodes[i].last_words()) };
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
    Ok(WorkloadReport { name: w.name.clone(), bytes_written: bytes, bytes_verified: bytes, rpcs: sum("ops") as u64, errors: sum("errors") as u64, selftest: Some(st), ..Default::default() })
}

