//! The end-of-run object check: what the OSSes hold against what the io workloads' clients know.
//! An object on an OST that no client knows (made for a resent CREATE whose first attempt had
//! already made one, say) is an orphan: leaked space, as Lustre's lfsck would find it.

use crate::cluster::control::Cluster;
use crate::cluster::plan::Plan;
use crate::cluster::spec::Role;
use crate::cluster::report::WorkloadReport;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// (OST index, object id) of every object the workloads' clients used.
fn known(plan: &Plan, workloads: &[WorkloadReport]) -> BTreeSet<(u32, u64)> {
    let mut out = BTreeSet::new();
    for w in workloads {
        for (client, objs) in &w.objects {
            let targets = plan.targets_for(client);
            for o in objs.as_array().into_iter().flatten() {
                // (file, stripe, target, oid), the target an index into the client's targets.
                let (Some(t), Some(oid)) = (o[2].as_u64(), o[3].as_u64()) else { continue };
                if let Some((ost, _)) = targets.get(t as usize) {
                    out.insert((*ost, oid));
                }
            }
        }
    }
    out
}

/// Asks every OSS what it holds (kept as `nodes/NODE.oss.json` in the artifacts) and returns
/// the objects no client knows, as (OST index, object id).
pub fn orphans(cluster: &mut Cluster, plan: &Plan, workloads: &[WorkloadReport], art: &Path, timeout: Duration) -> anyhow::Result<Vec<(u32, u64)>> {
    let known = known(plan, workloads);
    let mut out = Vec::new();
    let _ = std::fs::create_dir_all(art.join("nodes"));
    for (i, n) in plan.nodes.iter().enumerate().filter(|(_, n)| n.is(Role::Oss)) {
        let st = cluster.cmd(i, json!({"op": "stats"}), timeout)?;
        let oss = &st["oss"];
        let _ = std::fs::write(art.join("nodes").join(format!("{}.oss.json", n.name)), serde_json::to_string_pretty(oss).unwrap_or_default() + "\n");
        out.extend(held(oss).into_iter().filter(|o| !known.contains(o)));
    }
    Ok(out)
}

/// The (OST index, object id) pairs an OSS's state lists.
fn held(oss: &Value) -> Vec<(u32, u64)> {
    let Some(objs) = oss["objects"].as_object() else { return Vec::new() };
    objs.iter().filter_map(|(ost, ids)| Some((ost.parse::<u32>().ok()?, ids.as_array()?))).flat_map(|(ost, ids)| ids.iter().filter_map(move |id| Some((ost, id.as_u64()?)))).collect()
}

/// One line naming the orphans (the first few).
pub fn describe(orphans: &[(u32, u64)]) -> String {
    let first: Vec<String> = orphans.iter().take(5).map(|(ost, oid)| format!("OST{ost:04x} object {oid}")).collect();
    let more = if orphans.len() > first.len() { format!(" and {} more", orphans.len() - first.len()) } else { String::new() };
    format!("{} orphan object(s) on the OSTs that no client knows: {}{more}", orphans.len(), first.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_objects_and_their_description() {
        let oss = json!({"objects": {"0": [3, 4], "1": [7]}, "mutant_lost_writes": 0});
        assert_eq!(held(&oss), vec![(0, 3), (0, 4), (1, 7)]);
        assert!(held(&json!(null)).is_empty());
        assert_eq!(describe(&[(1, 7)]), "1 orphan object(s) on the OSTs that no client knows: OST0001 object 7");
        let many: Vec<(u32, u64)> = (0..7).map(|k| (0, k)).collect();
        assert!(describe(&many).ends_with("and 2 more"), "{}", describe(&many));
    }
}
