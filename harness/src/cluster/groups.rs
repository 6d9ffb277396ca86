//! Node groups: a spec node with `count: N` stands for N nodes `NAME0`…`NAME{N-1}`, and its
//! name, wherever a node name goes (workload clients, selftest groups, fault nodes and sides),
//! for all of them. A group of OSSs numbers its members' OSTs on: member k has each listed
//! index plus k × (the highest listed + 1), so `targets: [0, 1]` in a group of 4 are OSTs 0..7.
//! Expanded right after parsing, so everything later sees plain nodes.

use super::limits::locate_value;
use super::spec::{ClusterSpec, FaultSpec, SpecError};
use std::collections::BTreeMap;

/// The most nodes one group may stand for.
pub const MAX_GROUP: usize = 10_000;

impl ClusterSpec {
    /// Replaces every group by its members, in the node list and in every list or field that
    /// names nodes (a fault on a group becomes one fault per member).
    pub(crate) fn expand_groups(&mut self, text: &str, file: &str) -> Result<(), SpecError> {
        let at = |key: &str, value: &str, msg: String| {
            let (line, col) = locate_value(text, key, value, 0);
            SpecError { file: file.to_string(), line, col, msg }
        };
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for n in std::mem::take(&mut self.nodes) {
            let Some(count) = n.count else {
                nodes.push(n);
                continue;
            };
            if count == 0 || count > MAX_GROUP {
                return Err(at("count", &count.to_string(), format!("node group `{}`: count {count} must be 1..={MAX_GROUP}", n.name)));
            }
            let members: Vec<String> = (0..count).map(|i| format!("{}{i}", n.name)).collect();
            let stride = n.targets.iter().map(|t| t.ost as u64 + 1).max().unwrap_or(0);
            for (k, m) in members.iter().enumerate() {
                let mut targets = n.targets.clone();
                for t in &mut targets {
                    let ost = t.ost as u64 + k as u64 * stride;
                    t.ost = u32::try_from(ost).ok().filter(|&o| o <= super::limits::MAX_OST_INDEX).ok_or_else(|| at("count", &count.to_string(), format!("node group `{}`: its members' OST indexes would pass {}", n.name, super::limits::MAX_OST_INDEX)))?;
                }
                nodes.push(super::spec::NodeSpec { name: m.clone(), count: None, targets, ..n.clone() });
            }
            groups.insert(n.name, members);
        }
        self.nodes = nodes;
        if groups.is_empty() {
            return Ok(());
        }
        let expand = |list: &mut Vec<String>| {
            *list = list.iter().flat_map(|x| groups.get(x).cloned().unwrap_or_else(|| vec![x.clone()])).collect();
        };
        for w in &mut self.workloads {
            expand(&mut w.clients);
            expand(&mut w.from);
            expand(&mut w.to);
        }
        for n in &self.nodes {
            if let Some(r) = n.routes.iter().find(|r| groups.contains_key(&r.via)) {
                return Err(at("via", &r.via, format!("node `{}`: a route goes via one router, not the group `{}`", n.name, r.via)));
            }
        }
        let mut faults = Vec::with_capacity(self.faults.len());
        for mut f in std::mem::take(&mut self.faults) {
            f.between.iter_mut().for_each(expand);
            let one = |f: &FaultSpec, name: &Option<String>| -> Vec<Option<String>> {
                match name.as_ref().and_then(|n| groups.get(n)) {
                    Some(members) => members.iter().cloned().map(Some).collect(),
                    None => vec![name.clone()],
                }
                .into_iter()
                .filter(|m| m.as_deref() != Some(f.node.as_str()) || f.src.is_none())
                .collect()
            };
            for node in one(&f, &Some(f.node.clone())) {
                let g = FaultSpec { node: node.unwrap_or_default(), ..f.clone() };
                for src in one(&g, &f.src) {
                    faults.push(FaultSpec { src, ..g.clone() });
                }
            }
        }
        self.faults = faults;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cluster::spec::ClusterSpec;
    use std::path::Path;

    const SPEC: &str = "name: g
nets: {dma0: {kind: dma}, tcp0: {kind: tcp}}
nodes:
  - {name: oss, roles: [oss], nis: [dma0, tcp0], targets: [{ost: 0, size: 64MiB}]}
  - {name: c, count: 3, roles: [client], nis: [dma0]}
  - {name: t, count: 2, roles: [client], nis: [tcp0]}
workloads:
  - {name: io, kind: io, clients: [c, t1], files: 1, size: 1MiB}
faults:
  - {kind: lnet_drop, node: c, src: oss, rate: 5}
  - {kind: partition, between: [[t], [oss]], at: 1s, duration: 1s}
";

    #[test]
    fn a_group_is_its_members_wherever_a_node_name_goes() {
        let s = ClusterSpec::parse(SPEC, Path::new("g.yaml")).unwrap();
        let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["oss", "c0", "c1", "c2", "t0", "t1"]);
        assert_eq!(s.workloads[0].clients, ["c0", "c1", "c2", "t1"]);
        let drops: Vec<(&str, Option<&str>)> = s.faults.iter().filter(|f| f.src.is_some()).map(|f| (f.node.as_str(), f.src.as_deref())).collect();
        assert_eq!(drops, [("c0", Some("oss")), ("c1", Some("oss")), ("c2", Some("oss"))]);
        assert_eq!(s.faults.last().unwrap().between, [vec!["t0".to_string(), "t1".into()], vec!["oss".to_string()]]);
        // The expanded spec, written out and read again, is the same cluster.
        let again = ClusterSpec::parse(&serde_yaml_ng::to_string(&s).unwrap(), Path::new("again.yaml")).unwrap();
        assert_eq!(again.nodes.len(), 6);
    }

    #[test]
    fn a_group_of_osss_numbers_its_members_osts_on() {
        let spec = SPEC.replace("{name: oss, roles: [oss], nis: [dma0, tcp0], targets: [{ost: 0, size: 64MiB}]}", "{name: oss, count: 3, roles: [oss], nis: [dma0, tcp0], targets: [{ost: 0, size: 64MiB}, {ost: 2, size: 64MiB}]}").replace("src: oss", "src: oss0").replace("[oss]]", "[oss1]]");
        let s = ClusterSpec::parse(&spec, Path::new("g.yaml")).unwrap();
        let osts: Vec<Vec<u32>> = s.nodes.iter().filter(|n| n.name.starts_with("oss")).map(|n| n.targets.iter().map(|t| t.ost).collect()).collect();
        assert_eq!(osts, [vec![0, 2], vec![3, 5], vec![6, 8]], "member k: index + k × (highest + 1)");
        let e = ClusterSpec::parse(&spec.replace("{ost: 2, size", "{ost: 30000, size"), Path::new("g.yaml")).unwrap_err().to_string();
        assert!(e.starts_with("g.yaml:4:") && e.contains("OST indexes would pass 65535"), "{e}");
    }

    #[test]
    fn bad_counts_and_a_route_via_a_group_are_refused_where_they_are() {
        let e = ClusterSpec::parse(&SPEC.replace("count: 3", "count: 0"), Path::new("g.yaml")).unwrap_err().to_string();
        assert!(e.starts_with("g.yaml:5:") && e.contains("count 0 must be 1..=10000"), "{e}");
        let e = ClusterSpec::parse(&SPEC.replace("count: 3", "count: 20000"), Path::new("g.yaml")).unwrap_err().to_string();
        assert!(e.contains("count 20000 must be"), "{e}");
        let routed = SPEC.replace("{name: t, count: 2, roles: [client], nis: [tcp0]}", "{name: t, count: 2, roles: [client], nis: [tcp0], routes: [{net: dma0, via: c}]}");
        let e = ClusterSpec::parse(&routed, Path::new("g.yaml")).unwrap_err().to_string();
        assert!(e.contains("a route goes via one router, not the group `c`"), "{e}");
        // A member named like a plain node: the usual duplicate-name error.
        let dup = SPEC.replace("  - {name: t, count: 2,", "  - {name: c1, roles: [client], nis: [tcp0]}\n  - {name: t, count: 2,");
        let e = ClusterSpec::parse(&dup, Path::new("g.yaml")).unwrap_err().to_string();
        assert!(e.contains("node name `c1` is used twice"), "{e}");
    }
}
