//! Why a workload makes no progress: each stuck client is asked what it waits for (RPCs in
//! flight with target, xid, tries and age; parked ones; reconnects; LNet messages in flight).

use crate::cluster::control::Cluster;
use crate::cluster::plan::Plan;
use serde_json::Value;
use std::time::Duration;

/// At most this many RPCs are named per client (the rest are counted).
const NAMED: usize = 3;

/// One line per client in `clients` (node indices) saying what it waits for. A node that does
/// not answer within `answer` (frozen, gone) is said to be silent.
pub fn describe(cluster: &mut Cluster, plan: &Plan, clients: &[usize], answer: Duration) -> String {
    let mut out = Vec::new();
    for &i in clients {
        let name = &plan.nodes[i].name;
        match cluster.cmd(i, serde_json::json!({"op": "waiting"}), answer) {
            Ok(v) => out.push(format!("{name} {}", say(&v, plan))),
            Err(e) => out.push(format!("{name} did not say what it waits for ({e})")),
        }
    }
    out.join("\n  ")
}

/// The node that has `nid`, by name.
fn owner(plan: &Plan, nid: &str) -> Option<String> {
    plan.nodes.iter().find(|n| n.nids.iter().any(|(_, x)| x.to_string() == nid)).map(|n| n.name.clone())
}

/// "OST0001 at 1@dma0" with the node named: "OST0001 at 1@dma0 (oss1)".
fn target(plan: &Plan, t: &Value) -> String {
    let t = t.as_str().unwrap_or("?");
    match t.rsplit_once(" at ").and_then(|(_, nid)| owner(plan, nid)) {
        Some(n) => format!("{t} ({n})"),
        None => t.to_string(),
    }
}

/// A `waiting` answer in words.
fn say(v: &Value, plan: &Plan) -> String {
    let mut parts = Vec::new();
    for job in v["jobs"].as_array().into_iter().flatten() {
        let rpcs = job["in_flight"].as_array().cloned().unwrap_or_default();
        let mut s = format!("(job {}, phase {})", job["job"].as_str().unwrap_or("?"), job["phase"].as_str().unwrap_or("?"));
        if rpcs.is_empty() {
            s += ": no RPC in flight";
        } else {
            let named: Vec<String> = rpcs.iter().take(NAMED).map(|r| format!("{} to {}, xid {}, try {}, for {:.1} s", r["op"].as_str().unwrap_or("?"), target(plan, &r["target"]), r["xid"], r["tries"], r["age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0)).collect();
            s += &format!(" waits for {}", named.join("; "));
            if rpcs.len() > NAMED {
                s += &format!("; and {} more RPCs", rpcs.len() - NAMED);
            }
        }
        let parked = job["parked"].as_array().map_or(0, |p| p.len());
        if parked > 0 {
            s += &format!("; {parked} RPCs parked to go again");
        }
        let rc: Vec<String> = job["reconnecting"].as_array().into_iter().flatten().map(|t| target(plan, t)).collect();
        if !rc.is_empty() {
            s += &format!("; reconnecting to {}", rc.join(", "));
        }
        if job["queued"].as_u64().unwrap_or(0) > 0 {
            s += &format!("; {} RPCs not yet sent", job["queued"]);
        }
        parts.push(s);
    }
    if parts.is_empty() {
        parts.push("has no io job running".into());
    }
    let lnet = v["lnet_in_flight"].as_u64().unwrap_or(0);
    let held = v["lnet_held"].as_u64().unwrap_or(0);
    if lnet + held > 0 {
        parts.push(format!("LNet: {lnet} messages in flight, {held} held"));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_names_the_rpc_its_target_node_and_what_else_waits() {
        let spec = crate::cluster::spec::ClusterSpec::parse("name: t\nnets: {dma0: {kind: dma}}\nnodes:\n  - {name: oss1, roles: [oss], nis: [dma0], targets: [{ost: 1, size: 64MiB}]}\n  - {name: c1, roles: [client], nis: [dma0]}\n", std::path::Path::new("t.yaml")).unwrap();
        let plan = crate::cluster::plan::plan(&spec, 1, &crate::cluster::plan::loopback(&spec, 100, 0));
        let nid = plan.nodes[0].nids[0].1.to_string();
        let rpc = |xid: u64| serde_json::json!({"op": "OST_WRITE file 0 chunk 3", "target": format!("OST0001 at {nid}"), "xid": xid, "tries": 2, "age_ms": 5200});
        let v = serde_json::json!({"jobs": [{"job": "io1@c1", "phase": "write", "in_flight": [rpc(7), rpc(8), rpc(9), rpc(10)], "parked": [{"op": "OST_READ", "target": "x", "tries": 1}], "reconnecting": [format!("OST0001 at {nid}")], "queued": 0}], "lnet_in_flight": 2, "lnet_held": 0});
        let s = say(&v, &plan);
        assert!(s.starts_with(&format!("(job io1@c1, phase write) waits for OST_WRITE file 0 chunk 3 to OST0001 at {nid} (oss1), xid 7, try 2, for 5.2 s;")), "{s}");
        assert!(s.contains("and 1 more RPCs") && s.contains("1 RPCs parked") && s.contains("reconnecting to OST0001") && s.contains("LNet: 2 messages in flight"), "{s}");
        assert_eq!(say(&serde_json::json!({"jobs": []}), &plan), "has no io job running");
    }
}
