//! Random valid cluster specs, one per seed: the next spec a user would write, not the showcase
//! one. DMA and TCP nets, OSSs with OSTs, clients, routers wherever a client and an OSS share no
//! net, io workloads over overlapping clients, sometimes a selftest, optionally fault rules.

use crate::cluster::spec::ClusterSpec;
use lnd::rng::Rng;
use serde_json::{json, Value};
use std::path::Path;

/// What to generate.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenOpts {
    /// Add LNet and device fault rules (and short RPC timeouts with more tries).
    pub faults: bool,
    /// One io workload only (no selftest).
    pub single: bool,
    /// Nodes may have NIs on several DMA nets (DMA⇄DMA routers).
    pub multi_dma: bool,
    /// At most this many clients (default 10).
    pub max_clients: Option<usize>,
    /// Multi-Rail: OSSs and some clients on a DMA net and tcp0 as Multi-Rail peers; with
    /// `faults`, the fabric alone partitioned and sends failed with health statuses.
    pub multi_rail: bool,
}

/// A seeded chooser over [`Rng`].
struct Pick(Rng);

impl Pick {
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.0.below(hi - lo + 1)
    }
    fn one<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.0.below(xs.len())]
    }
    fn chance(&mut self, pct: usize) -> bool {
        self.0.below(100) < pct
    }
    /// `k` distinct items of `xs`, in their original order.
    fn sample<T: Clone>(&mut self, xs: &[T], k: usize) -> Vec<T> {
        let mut idx: Vec<usize> = (0..xs.len()).collect();
        for i in (1..idx.len()).rev() {
            let j = self.0.below(i + 1);
            idx.swap(i, j);
        }
        let mut chosen: Vec<usize> = idx.into_iter().take(k).collect();
        chosen.sort();
        chosen.into_iter().map(|i| xs[i].clone()).collect()
    }
}

fn is_dma(net: &str) -> bool {
    net.starts_with("dma")
}

struct Node {
    name: String,
    roles: &'static str,
    nis: Vec<String>,
    targets: Vec<(u32, u64)>,
    routes: Vec<(String, String)>,
}

impl Node {
    fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "roles": [self.roles], "nis": self.nis});
        if !self.targets.is_empty() {
            v["targets"] = self.targets.iter().map(|(ost, mib)| json!({"ost": ost, "size": format!("{mib}MiB")})).collect();
        }
        if !self.routes.is_empty() {
            v["routes"] = self.routes.iter().map(|(net, via)| json!({"net": net, "via": via})).collect();
        }
        v
    }
}

/// Does a client on `net` need a DMA⇄DMA hop to reach `oss` (refused without `multi_dma`)?
fn needs_dma_pair(net: &str, oss: &Node) -> bool {
    !oss.nis.iter().any(|n| n == net) && is_dma(net) && oss.nis.iter().all(|n| is_dma(n))
}

/// The spec for `seed` as YAML (flow mappings, one node per line). Layouts where some client
/// cannot reach some OSS (two DMA-only nets without `multi_dma`) are drawn again from derived
/// seeds, so what comes out always loads.
pub fn generate(seed: u64, o: GenOpts) -> String {
    let mut last = String::new();
    for k in 0..64u64 {
        last = generate_once(seed, seed.wrapping_mul(1000).wrapping_add(k), o);
        if ClusterSpec::parse(&last, Path::new("generated.yaml")).is_ok() {
            return last;
        }
    }
    last
}

/// Spreads nearby seeds (a seed's redraws differ in their low digits) over the whole state.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn generate_once(seed: u64, draw: u64, o: GenOpts) -> String {
    let mut r = Pick(Rng::new(splitmix(draw)));
    let dma: Vec<String> = (0..r.range(1, 2)).map(|i| format!("dma{i}")).collect();
    let mut tcp: Vec<String> = (0..*r.one(&[0, 1, 1, 2])).map(|i| format!("tcp{i}")).collect();
    if o.multi_rail && tcp.is_empty() {
        tcp.push("tcp0".into());
    }
    let all: Vec<String> = dma.iter().chain(&tcp).cloned().collect();
    let mut osss = Vec::new();
    let mut ost = 0u32;
    for i in 0..r.range(1, 3) {
        let k = r.range(1, 2.min(all.len()));
        let mut nis = r.sample(&all, k);
        if nis.iter().filter(|n| is_dma(n)).count() > 1 && !o.multi_dma {
            nis.truncate(1);
        }
        if o.multi_rail {
            // Every OSS on one DMA net and tcp0: the rails its Multi-Rail clients share.
            nis = vec![r.one(&dma).clone(), "tcp0".into()];
        }
        let targets = (0..r.range(1, 3)).map(|_| {
            ost += 1;
            (ost - 1, *r.one(&[64u64, 128, 256]))
        });
        let targets = targets.collect();
        osss.push(Node { name: format!("oss{}", i + 1), roles: "oss", nis, targets, routes: Vec::new() });
    }
    let nclients = r.range(1, o.max_clients.unwrap_or(10).max(1));
    let mut clients: Vec<Node> = (0..nclients).map(|i| Node { name: format!("c{}", i + 1), roles: "client", nis: vec![r.one(&all).clone()], targets: Vec::new(), routes: Vec::new() }).collect();
    if !o.multi_dma {
        // Without two DMA NIs a DMA client cannot reach an OSS only on other DMA nets: move it
        // onto that OSS's net, or onto a TCP net every such OSS has.
        for c in &mut clients {
            for oss in &osss {
                if needs_dma_pair(&c.nis[0], oss) {
                    c.nis = vec![oss.nis[0].clone()];
                }
            }
            if osss.iter().any(|oss| needs_dma_pair(&c.nis[0], oss)) {
                let shared_tcp = tcp.iter().find(|t| osss.iter().all(|oss| oss.nis.contains(t) || !oss.nis.iter().all(|n| is_dma(n))));
                c.nis = vec![shared_tcp.cloned().unwrap_or_else(|| osss[0].nis[0].clone())];
            }
        }
    }
    if o.multi_rail {
        // Some clients on both rails of an OSS (its Multi-Rail peers).
        for c in &mut clients {
            if r.chance(50) {
                c.nis = r.one(&osss).nis.clone();
            }
        }
    }
    // Routers on (client net, OSS net) wherever they share none; routes on both ends.
    let mut routers: Vec<Node> = Vec::new();
    for c in &mut clients {
        let cn = c.nis[0].clone();
        for oss in &mut osss {
            if oss.nis.contains(&cn) {
                continue;
            }
            let Some(on) = oss.nis.iter().find(|n| o.multi_dma || !(is_dma(&cn) && is_dma(n))).cloned() else { continue };
            let mut key = vec![cn.clone(), on.clone()];
            key.sort();
            let via = match routers.iter().find(|x| x.nis == key) {
                Some(x) => x.name.clone(),
                None => {
                    let name = format!("rtr{}", routers.len() + 1);
                    routers.push(Node { name: name.clone(), roles: "router", nis: key, targets: Vec::new(), routes: Vec::new() });
                    name
                }
            };
            if !c.routes.iter().any(|x| x.0 == on) {
                c.routes.push((on.clone(), via.clone()));
            }
            if !oss.routes.iter().any(|x| x.0 == cn) {
                oss.routes.push((cn.clone(), via));
            }
        }
    }
    let names: Vec<String> = clients.iter().map(|c| c.name.clone()).collect();
    let mut workloads = Vec::new();
    for w in 0..if o.single { 1 } else { r.range(1, 3) } {
        let k = r.range(1, names.len());
        let mut wl = json!({"name": format!("io{}", w + 1), "kind": "io", "clients": r.sample(&names, k), "files": r.range(1, 3),
            "size": format!("{}MiB", r.range(1, 4)), "stripe_count": r.range(1, (ost as usize).min(3)), "inflight": *r.one(&[1, 2, 8])});
        if r.chance(30) {
            wl["punch"] = json!(true);
        }
        if r.chance(30) {
            wl["destroy"] = json!(true);
        }
        if o.faults {
            wl["rpc_timeout"] = json!("300ms");
            wl["max_tries"] = json!(16);
        }
        workloads.push(wl);
    }
    // lnet-selftest does not retry: under message loss its errors are the expected result, so
    // faulted specs get none.
    if !o.single && !o.faults && r.chance(30) {
        let from = r.one(&names).clone();
        workloads.push(json!({"name": "st", "kind": "selftest", "test": *r.one(&["ping", "brw_write", "brw_read"]), "from": [from], "to": [osss[0].name], "size": "64KiB", "concurrency": 2, "count": 20}));
    }
    let mut faults = Vec::new();
    let busy = |n: &String| workloads.iter().any(|w| w["clients"].as_array().is_some_and(|c| c.iter().any(|x| x == n.as_str())));
    let mr_clients: Vec<String> = clients.iter().filter(|c| c.nis.len() > 1 && busy(&c.name)).map(|c| c.name.clone()).collect();
    if o.faults && o.multi_rail && !mr_clients.is_empty() {
        let c = r.one(&mr_clients).clone();
        let oss = osss.iter().find(|s| clients.iter().any(|x| x.name == c && x.nis == s.nis)).map_or(osss[0].name.clone(), |s| s.name.clone());
        let net = clients.iter().find(|x| x.name == c).map(|x| x.nis[0].clone()).expect("a client");
        faults.push(json!({"kind": "partition", "net": net, "between": [[c], [oss]], "at": format!("{}ms", r.range(0, 2)), "duration": format!("{}ms", r.range(2, 20))}));
        faults.push(json!({"kind": "lnet_drop", "node": c, "net": net, "health_error": *r.one(&["random", "local_dropped", "remote_dropped", "network_timeout", "local_error"]), "rate": r.range(5, 30)}));
    }
    if o.faults {
        for _ in 0..r.range(1, 3) {
            faults.push(match *r.one(&["lnet_drop", "lnet_delay", "dma_corrupt", "dma_mailbox", "link"]) {
                "lnet_drop" => json!({"kind": "lnet_drop", "node": r.one(&osss).name, "rate": r.range(6, 20)}),
                "lnet_delay" => json!({"kind": "lnet_delay", "node": r.one(&names), "rate": r.range(4, 10), "latency": "20ms"}),
                "link" => json!({"kind": "link", "between": [[r.one(&names)], [r.one(&osss).name]], "rate": r.range(20, 60)}),
                k => json!({"kind": k, "net": r.one(&dma), "rate": r.range(10, 60)}),
            });
        }
    }
    let mut nodes: Vec<Node> = osss.into_iter().chain(routers).chain(clients).collect();
    for n in &mut nodes {
        // No route to a net the node is on.
        let nis = n.nis.clone();
        n.routes.retain(|(net, _)| !nis.contains(net));
    }
    let nets: serde_json::Map<String, Value> = all.iter().map(|n| (n.clone(), json!({"kind": if is_dma(n) { "dma" } else { "tcp" }}))).collect();
    let mut y = format!("# generated: lnetlab hunt --generate (seed {seed}{})\nname: gen{seed}\nnets: {}\n", flags(o), Value::Object(nets));
    if o.multi_rail {
        // The DMA rails preferred (lower is), as a site would set them.
        let prio: Vec<String> = dma.iter().map(|d| format!("{d}: 0")).collect();
        // Peers configured or discovered at start, one or the other.
        let discovery = if r.chance(50) { ", discovery: true" } else { "" };
        y += &format!("lnet: {{multi_rail: true{discovery}, priority: {{{}}}, recovery_interval: 2ms}}\n", prio.join(", "));
    }
    y += "nodes:\n";
    for n in &nodes {
        y += &format!("  - {}\n", n.to_json());
    }
    y += "workloads:\n";
    for w in &workloads {
        y += &format!("  - {w}\n");
    }
    y += if faults.is_empty() { "faults: []\n" } else { "faults:\n" };
    for f in &faults {
        y += &format!("  - {f}\n");
    }
    y
}

fn flags(o: GenOpts) -> String {
    [(o.faults, ", faults"), (o.single, ", single"), (o.multi_dma, ", multi-dma"), (o.multi_rail, ", multi-rail")].iter().filter(|f| f.0).map(|f| f.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_spec_is_valid_and_the_same_for_its_seed() {
        for seed in 0..500 {
            for o in [GenOpts::default(), GenOpts { faults: true, ..Default::default() }, GenOpts { single: true, ..Default::default() }, GenOpts { multi_rail: true, faults: true, ..Default::default() }] {
                let y = generate(seed, o);
                assert_eq!(y, generate(seed, o), "seed {seed} is not deterministic");
                if let Err(e) = ClusterSpec::parse(&y, std::path::Path::new("gen.yaml")) {
                    panic!("seed {seed} {o:?}: {e}\n{y}");
                }
            }
        }
    }

    #[test]
    fn generated_specs_vary() {
        let distinct: std::collections::HashSet<String> = (0..50).map(|s| generate(s, GenOpts::default())).collect();
        assert!(distinct.len() > 45);
        assert!((0..50).any(|s| generate(s, GenOpts::default()).contains("\"router\"")), "no routed spec in 50 seeds");
        assert!((0..50).any(|s| generate(s, GenOpts { faults: true, ..Default::default() }).contains("dma_")), "no device fault in 50 seeds");
    }

    /// With `multi_dma`, seeds 1..60 (the range the note measures) hold both two-fabric nodes and
    /// DMA⇄DMA routers, and every spec stays valid.
    #[test]
    fn multi_dma_specs_have_two_fabric_nodes_and_dma_routers() {
        let o = GenOpts { multi_dma: true, ..Default::default() };
        let (mut two_fabric, mut dma_router) = (0, 0);
        for seed in 1..=60 {
            let spec = ClusterSpec::parse(&generate(seed, o), std::path::Path::new("gen.yaml")).unwrap();
            let dma = |n: &str| spec.nets[n].kind == crate::cluster::spec::NetKind::Dma;
            for n in &spec.nodes {
                if n.nis.iter().filter(|x| dma(x)).count() >= 2 {
                    two_fabric += 1;
                    dma_router += n.roles.contains(&crate::cluster::spec::Role::Router) as usize;
                }
            }
        }
        eprintln!("seeds 1..60: {two_fabric} two-fabric nodes, {dma_router} of them DMA⇄DMA routers");
        assert!(two_fabric >= 5 && dma_router >= 2, "two-fabric nodes {two_fabric}, DMA⇄DMA routers {dma_router}");
    }

    /// `--multi-rail`: an `lnet:` section, OSSs on a DMA net and tcp0, Multi-Rail clients, and
    /// with faults a partition of the fabric alone and a health_error rule.
    #[test]
    fn multi_rail_specs_have_multi_rail_peers_and_fabric_faults() {
        let o = GenOpts { multi_rail: true, faults: true, ..Default::default() };
        let specs: Vec<String> = (0..30).map(|s| generate(s, o)).collect();
        if let Ok(dir) = std::env::var("LNETLAB_GEN_DIR") {
            for (k, y) in specs.iter().enumerate() {
                std::fs::write(format!("{dir}/gen{k}.yaml"), y).unwrap();
            }
        }
        assert!(specs.iter().all(|y| y.contains("lnet: {multi_rail: true")));
        assert!(specs.iter().filter(|y| y.contains("\"net\":\"dma") && y.contains("\"kind\":\"partition\"")).count() > 15, "few fabric partitions");
        assert!(specs.iter().any(|y| y.contains("health_error")));
    }
}
