//! From a spec to concrete nodes: NIDs on every net, gateways of routes, where each client
//! reaches each OST, and how much memory each node gets.

use std::path::{Path, PathBuf};
use super::spec::{ClusterSpec, NetKind, Role, TargetSpec};
use lnd::wire::{Net, Nid};
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct NodePlan {
    pub name: String,
    pub roles: Vec<Role>,
    /// (net name, NID) in the spec's NI order.
    pub nids: Vec<(String, Nid)>,
    pub routes: Vec<(Net, Nid)>,
    pub targets: Vec<TargetSpec>,
    pub mem: u64,
    /// Multi-Rail peers (`lnet: {multi_rail: true}`): (primary NID, its NIDs on our nets).
    pub peers: Vec<(Nid, Vec<Nid>)>,
    /// The host it runs on (an index into [`Plan::hosts`]; 0 when the spec names none).
    pub host: usize,
}

impl NodePlan {
    pub fn nid_on(&self, net: &str) -> Option<Nid> {
        self.nids.iter().find(|(n, _)| n == net).map(|(_, nid)| *nid)
    }
    pub fn is(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub spec: ClusterSpec,
    pub seed: u64,
    pub nodes: Vec<NodePlan>,
    /// DMA nets (one `dmadev` each, or one per host of the net's nodes).
    pub dma_nets: Vec<String>,
    /// The hosts the spec names, in order of appearance (empty: one machine).
    pub hosts: Vec<String>,
    /// When the run was planned (microseconds since the Unix epoch): node trace times count
    /// from it on wall-clock backends (the simulator counts virtual time from its start).
    pub t0_unix_us: u64,
}

/// Loopback addressing for the process backend: the TCP nets of `spec` get consecutive blocks of
/// /24s from `127.a.b.0` (`a.b` chosen per run so concurrent runs do not collide): a net of up to
/// 254 nodes one block, `127.a.(b+k).host` for the k-th net as before; a larger net as many
/// blocks as it needs, the next net after them — addresses never wrap or overlap.
pub fn loopback(spec: &ClusterSpec, a: u8, b: u8) -> impl Fn(usize, &str, usize) -> Ipv4Addr {
    let mut starts = Vec::new();
    let mut next = 0u32;
    for (name, n) in &spec.nets {
        if n.kind == NetKind::Tcp {
            starts.push(next);
            let members = spec.nodes.iter().filter(|x| x.nis.contains(name)).count() as u32;
            next += (members + 1).div_ceil(256).max(1);
        }
    }
    let base = u32::from(Ipv4Addr::new(127, a, b, 0));
    // From 127.a.b.0 there are (256 - a) × 65536 addresses left in 127/8: far more than a spec
    // may have nodes (run.rs picks a below 250).
    move |k, _, pos| Ipv4Addr::from(base + (starts.get(k).copied().unwrap_or(k as u32) << 8) + pos as u32 + 1)
}

/// Lays out the cluster. `tcp_ip(k, net, pos)` gives the address of the `pos`-th node on the
/// `k`-th TCP net; DMA addresses are 1, 2, ... in node order.
pub fn plan(spec: &ClusterSpec, seed: u64, tcp_ip: &dyn Fn(usize, &str, usize) -> Ipv4Addr) -> Plan {
    let hosts = spec.hosts();
    let mut nodes: Vec<NodePlan> = spec
        .nodes
        .iter()
        .map(|n| {
            let host = spec.host_of(n).and_then(|h| hosts.iter().position(|x| x == h)).unwrap_or(0);
            NodePlan { name: n.name.clone(), roles: n.roles.clone(), nids: Vec::new(), routes: Vec::new(), targets: n.targets.clone(), mem: 0, peers: Vec::new(), host }
        })
        .collect();
    let mut tcp_k = 0;
    for (net_name, net) in &spec.nets {
        let lnet: Net = net_name.parse().expect("validated");
        let k = tcp_k;
        if net.kind == NetKind::Tcp {
            tcp_k += 1;
        }
        let members: Vec<usize> = spec.nodes.iter().enumerate().filter(|(_, n)| n.nis.contains(net_name)).map(|(i, _)| i).collect();
        for (pos, &i) in members.iter().enumerate() {
            let addr = match net.kind {
                NetKind::Dma => pos as u32 + 1,
                NetKind::Tcp => u32::from(tcp_ip(k, net_name, pos)),
            };
            nodes[i].nids.push((net_name.clone(), lnet.nid(addr)));
        }
    }
    // Keep NIDs in the spec's NI order.
    for (i, n) in spec.nodes.iter().enumerate() {
        let nids = std::mem::take(&mut nodes[i].nids);
        nodes[i].nids = n.nis.iter().filter_map(|ni| nids.iter().find(|(x, _)| x == ni).cloned()).collect();
    }
    for (i, n) in spec.nodes.iter().enumerate() {
        for r in &n.routes {
            let gw = nodes.iter().find(|g| g.name == r.via).expect("validated");
            let shared = n.nis.iter().find_map(|ni| gw.nid_on(ni)).expect("validated: router shares a net");
            let net: Net = r.net.parse().expect("validated");
            nodes[i].routes.push((net, shared));
        }
    }
    if spec.lnet.as_ref().is_some_and(|l| l.multi_rail) {
        // Nodes sharing two nets or more are each other's Multi-Rail peers; the primary NID is
        // the first of the peer's shared NIDs in its own `nis` order.
        for i in 0..nodes.len() {
            for j in (0..nodes.len()).filter(|&j| j != i) {
                let shared: Vec<Nid> = nodes[j].nids.iter().filter(|(net, _)| nodes[i].nid_on(net).is_some()).map(|(_, nid)| *nid).collect();
                if shared.len() >= 2 {
                    nodes[i].peers.push((shared[0], shared));
                }
            }
        }
    }
    let clients: usize = spec.workloads.iter().map(|w| w.clients.len()).sum::<usize>().max(1);
    let inflight = spec.workloads.iter().map(|w| w.inflight).max().unwrap_or(8) as u64;
    for n in nodes.iter_mut() {
        let mut mem: u64 = 64 << 20;
        if n.is(Role::Router) {
            mem += 64 << 20;
        }
        if n.is(Role::Oss) {
            mem += clients as u64 * inflight * (1 << 20) + (32 << 20);
        }
        n.mem = mem;
    }
    let dma_nets = spec.nets.iter().filter(|(_, n)| n.kind == NetKind::Dma).map(|(k, _)| k.clone()).collect();
    let t0_unix_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    Plan { spec: spec.clone(), seed, nodes, dma_nets, hosts, t0_unix_us }
}

impl Plan {
    pub fn node(&self, name: &str) -> &NodePlan {
        self.nodes.iter().find(|n| n.name == name).expect("validated node name")
    }

    /// The devices DMA net `net` needs: `None` for its one device on one machine, else one per
    /// host with a node on it (host indexes, ascending).
    pub fn devices_of(&self, net: &str) -> Vec<Option<usize>> {
        if self.hosts.is_empty() {
            return vec![None];
        }
        let mut hs: Vec<usize> = self.nodes.iter().filter(|n| n.nid_on(net).is_some()).map(|n| n.host).collect();
        hs.sort_unstable();
        hs.dedup();
        hs.into_iter().map(Some).collect()
    }

    /// The name of net `net`'s device on `host` (its fabric directory, log and container).
    pub fn device_name(&self, net: &str, host: Option<usize>) -> String {
        match host {
            None => net.to_string(),
            Some(h) => format!("{net}-{}", self.hosts[h]),
        }
    }

    /// Where `n`'s socklnd traffic is captured under the artifacts directory `art`, when the
    /// spec asks and `n` is on a TCP net.
    pub fn node_capture(&self, n: &NodePlan, art: &Path) -> Option<PathBuf> {
        let tcp = n.nids.iter().any(|(net, _)| !self.dma_nets.contains(net));
        (self.spec.capture && tcp).then(|| art.join("pcap").join(format!("{}.pcap", n.name)))
    }

    /// The mailbox slots node `n` needs on its DMA fabrics: room for every peer on the
    /// largest of them to use all its credits at once (`dev::ring::mailbox_slots`).
    pub fn mailbox_slots(&self, n: &NodePlan) -> u32 {
        let peers = n.nids.iter().filter(|(net, _)| self.dma_nets.contains(net)).map(|(net, _)| self.nodes.iter().filter(|m| m.nids.iter().any(|(x, _)| x == net)).count() - 1).max().unwrap_or(0);
        lnd::dev::ring::mailbox_slots(peers, lnd::dmalnd::DmaLndConfig::default().peer_credits)
    }

    /// The lnetd arguments every backend gives node `n`: its NIDs (a DMA one with its fabric
    /// directory, `fabric(net)`), routes, routing, memory, mailbox and Multi-Rail settings.
    pub fn lnetd_args(&self, n: &NodePlan, fabric: &dyn Fn(&str) -> String) -> Vec<String> {
        let mut a = Vec::new();
        for (net, nid) in &n.nids {
            a.extend(["--nid".to_string(), nid.to_string()]);
            if self.dma_nets.contains(net) {
                a.extend(["--fabric".into(), fabric(net)]);
            }
        }
        for (net, gw) in &n.routes {
            a.extend(["--route".into(), format!("{net} {gw}")]);
        }
        if n.is(Role::Router) {
            a.push("--routing".into());
        }
        a.extend(["--mem".into(), n.mem.to_string()]);
        a.extend(self.mailbox_args(n));
        a.extend(self.multi_rail_args(n));
        a
    }

    /// `--mailbox N` for lnetd when node `n` needs more than the smallest mailbox.
    pub fn mailbox_args(&self, n: &NodePlan) -> Vec<String> {
        let slots = self.mailbox_slots(n);
        if slots > lnd::dev::ring::MB_MIN { vec!["--mailbox".into(), slots.to_string()] } else { vec![] }
    }

    /// Node `n`'s Multi-Rail peers, NI priorities and health parameters (`lnet:`).
    pub fn multi_rail(&self, n: &NodePlan) -> lnd::node::MultiRail {
        let mut mr = lnd::node::MultiRail { peers: n.peers.clone(), ..Default::default() };
        if let Some(l) = &self.spec.lnet {
            mr.announce = l.multi_rail;
            if l.discovery {
                mr.peers.clear(); // learned at start (`Cluster::start_roles`)
            }
            let t = &mut mr.tunables;
            t.sensitivity = l.health_sensitivity.unwrap_or(t.sensitivity);
            t.retry_count = l.retry_count.unwrap_or(t.retry_count);
            if let Some(d) = l.transaction_timeout.as_deref().and_then(|d| super::spec::parse_duration(d).ok()) {
                t.transaction_timeout_ms = d.as_millis() as u64;
            }
            if let Some(d) = l.recovery_interval.as_deref().and_then(|d| super::spec::parse_duration(d).ok()) {
                t.recovery_interval_ms = (d.as_millis() as u64).max(1);
            }
            mr.priorities = n.nids.iter().filter_map(|(net, nid)| l.priority.get(net).map(|p| (*nid, *p))).collect();
        }
        mr
    }

    /// [`Plan::multi_rail`] as lnetd options (none when all is default).
    pub fn multi_rail_args(&self, n: &NodePlan) -> Vec<String> {
        let mr = self.multi_rail(n);
        let mut a = Vec::new();
        if mr.announce {
            a.push("--multi-rail".to_string());
        }
        for (_, nids) in &mr.peers {
            a.extend(["--peer".to_string(), nids.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")]);
        }
        for (nid, p) in &mr.priorities {
            a.extend(["--ni-priority".to_string(), format!("{nid}={p}")]);
        }
        let (t, d) = (mr.tunables, lnd::lnet::health::Tunables::default());
        for (opt, v, dv) in [("--health-sensitivity", t.sensitivity as u64, d.sensitivity as u64), ("--retry-count", t.retry_count as u64, d.retry_count as u64), ("--transaction-timeout", t.transaction_timeout_ms, d.transaction_timeout_ms), ("--recovery-interval", t.recovery_interval_ms, d.recovery_interval_ms)] {
            if v != dv {
                a.extend([opt.to_string(), v.to_string()]);
            }
        }
        a
    }

    /// Where the device of DMA net `net` captures the fabric under `art`, when the spec asks.
    pub fn fabric_capture(&self, device: &str, art: &Path) -> Option<PathBuf> {
        self.spec.capture.then(|| art.join("pcap").join(format!("dma-{device}.pcap")))
    }

    /// The NID node `from` reaches node `to` by: one on a net `from` is on, else on a net one of
    /// its routes leads to — preferring a NID whose net `to` can answer from (a shared net, or a
    /// route of `to` whose gateway is on that net), since replies leave by the NI the request
    /// came in on and a peer's replies must come from the NID it was asked on.
    pub fn nid_for(&self, from: &str, to: &str) -> Option<Nid> {
        let a = self.node(from);
        let b = self.node(to);
        // A Multi-Rail peer is addressed by its primary NID; LNet picks the path.
        if let Some((primary, _)) = a.peers.iter().find(|(p, _)| b.nids.iter().any(|(_, n)| n == p)) {
            return Some(*primary);
        }
        let aspec = self.spec.nodes.iter().find(|n| n.name == from)?;
        let bspec = self.spec.nodes.iter().find(|n| n.name == to)?;
        let nets = a.nids.iter().map(|(net, _)| net).chain(aspec.routes.iter().map(|r| &r.net));
        let candidates: Vec<(&String, Nid)> = nets.filter_map(|net| b.nid_on(net).map(|nid| (net, nid))).collect();
        let answers_from = |net: &String| a.nid_on(net).is_some() || bspec.routes.iter().any(|r| a.nid_on(&r.net).is_some() && self.node(&r.via).nid_on(net).is_some());
        candidates.iter().find(|(net, _)| answers_from(net)).or(candidates.first()).map(|(_, nid)| *nid)
    }

    /// (OST index, NID) pairs a client uses (each OSS by [`Plan::nid_for`]).
    pub fn targets_for(&self, client: &str) -> Vec<(u32, Nid)> {
        let mut out = Vec::new();
        for oss in self.nodes.iter().filter(|n| n.is(Role::Oss)) {
            if let Some(nid) = self.nid_for(client, &oss.name) {
                out.extend(oss.targets.iter().map(|t| (t.ost, nid)));
            }
        }
        out.sort_by_key(|t| t.0);
        out
    }
}

/// A fresh seed when none is given.
pub fn random_seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    (t ^ (std::process::id() as u64).rotate_left(32)) % 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str) -> ClusterSpec {
        let text = format!(
            "name: wide
nets: {{dma0: {{kind: dma}}, tcp0: {{kind: tcp{subnet}}}, tcp1: {{kind: tcp}}}}
nodes:
  - {{name: oss, roles: [oss], nis: [dma0, tcp0, tcp1], targets: [{{ost: 0, size: 64MiB}}]}}
  - {{name: t, count: 300, roles: [client], nis: [tcp0]}}
  - {{name: u, count: 5, roles: [client], nis: [tcp1]}}
workloads:
  - {{name: io, kind: io, clients: [t0, u0], files: 1, size: 1MiB}}
"
        );
        ClusterSpec::parse(&text, Path::new("wide.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// 301 nodes on tcp0 (issue 18: the 255th used to get an address of the next net's block).
    #[test]
    fn a_tcp_net_of_300_nodes_gets_distinct_addresses_on_loopback() {
        let s = spec(", subnet: 10.88.0.0/22");
        let p = plan(&s, 1, &loopback(&s, 120, 7));
        let addrs: Vec<Ipv4Addr> = p.nodes.iter().flat_map(|n| n.nids.iter()).filter(|(net, _)| net.starts_with("tcp")).map(|(_, nid)| Ipv4Addr::from(nid.addr())).collect();
        assert_eq!(addrs.len(), 301 + 6);
        let distinct: std::collections::HashSet<_> = addrs.iter().collect();
        assert_eq!(distinct.len(), addrs.len(), "addresses repeat");
        assert!(addrs.iter().all(|a| a.octets()[0] == 127 && a.octets()[1] == 120));
        // tcp1 starts after the two blocks tcp0 needs.
        let u0 = p.nodes.iter().find(|n| n.name == "u0").unwrap().nids[0].1;
        assert_eq!(Ipv4Addr::from(u0.addr()), Ipv4Addr::new(127, 120, 9, 2));
        // Small nets keep today's layout: 127.a.(b+k).host.
        let small = ClusterSpec::parse(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../clusters/quickstart.yaml")).unwrap(), Path::new("q.yaml")).unwrap();
        let p = plan(&small, 1, &loopback(&small, 120, 7));
        assert_eq!(Ipv4Addr::from(p.nodes[0].nids[1].1.addr()), Ipv4Addr::new(127, 120, 7, 1));
    }

    #[test]
    fn a_subnet_too_small_for_its_nodes_is_refused_where_it_is_written() {
        let text = "name: wide\nnets: {tcp0: {kind: tcp, subnet: 10.88.0.0/24}}\nnodes:\n  - {name: oss, roles: [oss], nis: [tcp0], targets: [{ost: 0, size: 64MiB}]}\n  - {name: t, count: 300, roles: [client], nis: [tcp0]}\nworkloads:\n  - {name: io, kind: io, clients: [t0], files: 1, size: 1MiB}\n";
        let e = ClusterSpec::parse(text, Path::new("wide.yaml")).unwrap_err().to_string();
        assert!(e.starts_with("wide.yaml:2:") && e.contains("10.88.0.0/24"), "{e}");
        // Without a subnet, more than a /24 holds is refused too, naming the net.
        let e = ClusterSpec::parse(&text.replace(", subnet: 10.88.0.0/24", ""), Path::new("w.yaml")).unwrap_err().to_string();
        assert!(e.starts_with("w.yaml:2:") && e.contains("301 nodes do not fit"), "{e}");
    }
}
