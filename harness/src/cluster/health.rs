//! The report's view of LNet health and Multi-Rail (`lnet:` specs): for each node with several
//! NIs, each NI's health now and at its lowest, what it sent, resent and received, and the
//! bytes it sent after the last fault window closed — where the traffic went back to.

use super::control::Cluster;
use super::plan::Plan;
use super::report::{NiHealth, PeerNiHealth};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The NIs (`stats` → `nis`) of every node with more than one NI.
pub fn snapshot(cluster: &mut Cluster, plan: &Plan, timeout: Duration) -> anyhow::Result<BTreeMap<usize, Value>> {
    let mut out = BTreeMap::new();
    for (i, _) in plan.nodes.iter().enumerate().filter(|(_, n)| n.nids.len() > 1) {
        if cluster.down.contains(&i) {
            continue;
        }
        let st = cluster.cmd(i, json!({"op": "stats"}), timeout)?;
        out.insert(i, json!({"nis": st["nis"], "peer_nis": st["peer_nis"]}));
    }
    Ok(out)
}

/// The report's `lnet_health`: per node, per NI; `at_heal` is the snapshot taken when the
/// last fault window closed.
pub fn report(now: &BTreeMap<usize, Value>, at_heal: Option<&BTreeMap<usize, Value>>, plan: &Plan) -> BTreeMap<String, Vec<NiHealth>> {
    let mut out = BTreeMap::new();
    for (i, st) in now {
        let before = at_heal.and_then(|h| h.get(i)).map(|b| &b["nis"]);
        let list = st["nis"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|ni| {
                let nid = ni["nid"].as_str().unwrap_or("?").to_string();
                let u = |v: &Value| v.as_u64().unwrap_or(0);
                let then = before.and_then(|b| b.as_array()?.iter().find(|x| x["nid"] == ni["nid"]).map(|x| u(&x["send_bytes"])));
                NiHealth {
                    nid,
                    health: u(&ni["health_value"]),
                    health_lowest: u(&ni["health_lowest"]),
                    recoveries: u(&ni["health_stats"]["recoveries"]),
                    sent: u(&ni["send_count"]),
                    resent: u(&ni["resend_count"]),
                    received: u(&ni["recv_count"]),
                    sent_bytes: u(&ni["send_bytes"]),
                    sent_bytes_after_faults: then.map(|t| u(&ni["send_bytes"]).saturating_sub(t)),
                    peer_nis: st["peer_nis"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["local_nid"] == ni["nid"] && u(&p["health_lowest"]) < lnd::lnet::health::MAX_HEALTH as u64)
                        .map(|p| PeerNiHealth { nid: p["nid"].as_str().unwrap_or("?").to_string(), health: u(&p["health_value"]), health_lowest: u(&p["health_lowest"]) })
                        .collect(),
                }
            })
            .collect();
        out.insert(plan.nodes[*i].name.clone(), list);
    }
    out
}
