//! Loading a cluster spec: YAML parsed into the typed spec, then checked as a whole (names,
//! nets, routes, workloads, faults); every error carries file:line:col.

use super::spec::*;
use lnd::wire::{LndType, Net};
use std::collections::HashSet;
use std::path::Path;

impl ClusterSpec {
    pub fn load(path: &Path) -> Result<ClusterSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError { file: path.display().to_string(), line: 0, col: 0, msg: format!("cannot read: {e}") })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<ClusterSpec, SpecError> {
        let file = path.display().to_string();
        let located = |e: serde_yaml_ng::Error| {
            let (line, col) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            // The parser's message ends with its own "at line X column Y"; keep the part that says what was expected.
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            SpecError { file: file.clone(), line, col, msg }
        };
        // Untyped first: it refuses duplicate keys, which typed maps would let the last one win.
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).map_err(located).map_err(|e| second_of_duplicate(text, e))?;
        let mut spec: ClusterSpec = serde_yaml_ng::from_str(text).map_err(located)?;
        spec.source = path.to_path_buf();
        spec.expand_groups(text, &file)?;
        spec.check_bounds(text, &file)?;
        spec.validate(text, &file)?;
        spec.check_fit(text, &file)?;
        Ok(spec)
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), SpecError> {
        let err_nth = |needle: &str, nth: usize, msg: String| {
            let (line, col) = locate(text, needle, nth);
            SpecError { file: file.to_string(), line, col, msg }
        };
        let err = |needle: &str, msg: String| err_nth(needle, 0, msg);
        if self.nodes.is_empty() {
            return Err(err("nodes", "a cluster needs at least one node".into()));
        }
        for (name, n) in &self.nets {
            let net: Net = name.parse().map_err(|e| err(name, format!("net `{name}`: {e}; names are LNet nets like dma0, tcp0")))?;
            let want = match n.kind {
                NetKind::Dma => LndType::DMALND,
                NetKind::Tcp => LndType::SOCKLND,
            };
            if net.lnd() != want {
                return Err(err(name, format!("net `{name}` is declared kind {:?} but its name is a {} net", n.kind, net.lnd().name().unwrap_or("?"))));
            }
        }
        if let Some(l) = &self.lnet {
            if l.discovery && !l.multi_rail {
                return Err(err("discovery", "lnet: discovery finds Multi-Rail peers: it needs `multi_rail: true`".into()));
            }
            if let Some(s) = l.health_sensitivity.filter(|s| *s > lnd::lnet::health::MAX_HEALTH) {
                return Err(err("health_sensitivity", format!("lnet: health_sensitivity {s} is above the maximum health value ({})", lnd::lnet::health::MAX_HEALTH)));
            }
            if let Some(t) = &l.transaction_timeout {
                let d = parse_duration(t).map_err(|e| err("transaction_timeout", format!("lnet: transaction_timeout: {e}")))?;
                if d < std::time::Duration::from_secs(1) {
                    return Err(err("transaction_timeout", format!("lnet: transaction_timeout `{t}` is under a second")));
                }
            }
            if let Some(t) = &l.recovery_interval {
                let d = parse_duration(t).map_err(|e| err("recovery_interval", format!("lnet: recovery_interval: {e}")))?;
                if d < std::time::Duration::from_millis(1) {
                    return Err(err("recovery_interval", format!("lnet: recovery_interval `{t}` is under a millisecond")));
                }
            }
            for net in l.priority.keys() {
                if !self.nets.contains_key(net) {
                    return Err(err(&format!("{net}:"), format!("lnet: priority for `{net}`, which is not a net of this cluster")));
                }
            }
        }
        let mut names = HashSet::new();
        let mut osts = HashSet::new();
        for n in &self.nodes {
            if !names.insert(n.name.as_str()) {
                return Err(err_nth(&format!("name: {}", n.name), 1, format!("node name `{}` is used twice", n.name)));
            }
            if n.nis.is_empty() {
                return Err(err(&n.name, format!("node `{}` has no NIs", n.name)));
            }
            for ni in &n.nis {
                if !self.nets.contains_key(ni) {
                    return Err(err(ni, format!("node `{}`: NI on unknown net `{ni}` (nets: {})", n.name, self.nets.keys().cloned().collect::<Vec<_>>().join(", "))));
                }
            }
            if n.roles.contains(&Role::Oss) == n.targets.is_empty() {
                return Err(err(&n.name, format!("node `{}`: an oss needs targets, and only an oss has them", n.name)));
            }
            if n.commit_interval.is_some() && !n.roles.contains(&Role::Oss) {
                return Err(err(&n.name, format!("node `{}`: commit_interval is for an oss (its OSTs commit)", n.name)));
            }
            if n.roles.contains(&Role::Router) && n.nis.len() < 2 {
                return Err(err(&n.name, format!("node `{}`: a router needs NIs on two nets", n.name)));
            }
            for t in &n.targets {
                if !osts.insert(t.ost) {
                    return Err(err_nth(&format!("ost: {}", t.ost), 1, format!("OST index {} is used twice", t.ost)));
                }
                if t.size.0 < 1 << 20 {
                    return Err(err(&format!("ost: {}", t.ost), format!("OST {} size {} is below 1MiB", t.ost, t.size.0)));
                }
            }
        }
        for n in &self.nodes {
            for r in &n.routes {
                if !self.nets.contains_key(&r.net) {
                    return Err(err(&r.net, format!("node `{}`: route to unknown net `{}`", n.name, r.net)));
                }
                let Some(gw) = self.nodes.iter().find(|g| g.name == r.via) else {
                    return Err(err(&r.via, format!("node `{}`: route via unknown node `{}`", n.name, r.via)));
                };
                if !gw.roles.contains(&Role::Router) || !gw.nis.contains(&r.net) || !gw.nis.iter().any(|x| n.nis.contains(x)) {
                    return Err(err(&r.via, format!("node `{}`: `{}` is not a router between its nets and `{}`", n.name, r.via, r.net)));
                }
            }
        }
        let mut wnames = HashSet::new();
        for w in &self.workloads {
            if !wnames.insert(&w.name) {
                return Err(err_nth(&format!("name: {}", w.name), 1, format!("workload name `{}` is used twice", w.name)));
            }
            if w.kind == WorkloadKind::Selftest {
                if w.test.is_none() || w.from.is_empty() || w.to.is_empty() {
                    return Err(err(&w.name, format!("selftest `{}` needs test (ping|brw_read|brw_write), from and to", w.name)));
                }
                if w.duration.is_none() == w.count.is_none() {
                    return Err(err(&w.name, format!("selftest `{}` needs exactly one of duration and count", w.name)));
                }
                if let Some(d) = &w.duration {
                    parse_duration(d).map_err(|e| err(d, format!("selftest `{}`: {e}", w.name)))?;
                }
                if w.size.0 == 0 || w.size.0 > 1 << 20 || w.concurrency == 0 {
                    return Err(err(&w.name, format!("selftest `{}`: size must be 1..=1MiB and concurrency at least 1", w.name)));
                }
                for (c, group) in w.from.iter().map(|c| (c, "from")).chain(w.to.iter().map(|c| (c, "to"))) {
                    let Some(n) = self.nodes.iter().find(|n| &n.name == c) else {
                        return Err(err(c, format!("selftest `{}`: unknown node `{c}` in {group}", w.name)));
                    };
                    let _ = n;
                }
                for a in &w.from {
                    let an = self.nodes.iter().find(|n| &n.name == a).expect("checked");
                    for b in &w.to {
                        let bn = self.nodes.iter().find(|n| &n.name == b).expect("checked");
                        let direct = bn.nis.iter().any(|x| an.nis.contains(x));
                        let routed = an.routes.iter().any(|r| bn.nis.contains(&r.net));
                        if !direct && !routed {
                            return Err(err(a, format!("selftest `{}`: `{a}` cannot reach `{b}`: no shared net and no route", w.name)));
                        }
                    }
                }
                continue;
            }
            if w.clients.is_empty() {
                return Err(err(&w.name, format!("workload `{}`: an io workload needs clients", w.name)));
            }
            // One job per client and workload: a client listed twice would run two jobs as one.
            if let Some(c) = w.clients.iter().enumerate().find(|(i, c)| w.clients[..*i].contains(c)).map(|x| x.1) {
                return Err(err(&w.name, format!("workload `{}`: client `{c}` is listed twice", w.name)));
            }
            if let (Some(t), Some(k)) = (&w.rpc_timeout, w.at_min.as_ref().or(w.at_max.as_ref())) {
                return Err(err(k, format!("workload `{}`: at_min/at_max tune adaptive timeouts, which a fixed rpc_timeout ({t}) turns off: give one or the other", w.name)));
            }
            if let (Some(lo), Some(hi)) = (w.at_min.as_deref().map(parse_duration), w.at_max.as_deref().map(parse_duration)) {
                if let (Ok(lo), Ok(hi)) = (lo, hi) {
                    if lo > hi {
                        return Err(err(w.at_min.as_deref().unwrap_or_default(), format!("workload `{}`: at_min is above at_max", w.name)));
                    }
                }
            }
            if let Some(src) = &w.read_back {
                let earlier = self.workloads.iter().take_while(|x| x.name != w.name).find(|x| &x.name == src && x.kind == WorkloadKind::Io);
                let Some(e) = earlier else {
                    return Err(err(src, format!("workload `{}`: read_back names no earlier io workload `{src}`", w.name)));
                };
                let same = e.files == w.files && e.size.0 == w.size.0 && e.stripe_size.0 == w.stripe_size.0 && e.stripe_count == w.stripe_count;
                if !same || !w.clients.iter().all(|c| e.clients.contains(c)) {
                    return Err(err(src, format!("workload `{}`: read_back of `{src}` needs its files, size, striping and clients", w.name)));
                }
            }
            for c in &w.clients {
                match self.nodes.iter().find(|n| &n.name == c) {
                    None => return Err(err(c, format!("workload `{}`: unknown client `{c}`", w.name))),
                    Some(n) if !n.roles.contains(&Role::Client) => return Err(err(&format!("name: {c}"), format!("workload `{}`: node `{c}` does not have the client role", w.name))),
                    Some(n) => {
                        for oss in self.nodes.iter().filter(|o| o.roles.contains(&Role::Oss)) {
                            let direct = oss.nis.iter().any(|x| n.nis.contains(x));
                            let routed = n.routes.iter().any(|r| oss.nis.contains(&r.net));
                            if !direct && !routed {
                                return Err(err(&format!("name: {c}"), format!("client `{c}` cannot reach oss `{}`: no shared net and no route", oss.name)));
                            }
                        }
                    }
                }
            }
            if w.stripe_count == 0 || w.stripe_count as usize > osts.len() {
                return Err(err("stripe_count", format!("workload `{}`: stripe_count {} must be 1..={} (the OSTs)", w.name, w.stripe_count, osts.len())));
            }
            if w.stripe_size.0 == 0 || w.stripe_size.0 > 1 << 20 {
                return Err(err("stripe_size", format!("workload `{}`: stripe_size must be 1..=1MiB", w.name)));
            }
            if w.size.0 == 0 || w.files == 0 {
                return Err(err(&w.name, format!("workload `{}`: files and size must be at least 1", w.name)));
            }
        }
        for f in &self.faults {
            self.check_fault(f, &err)?;
        }
        Ok(())
    }
}

impl ClusterSpec {
    fn check_fault(&self, f: &FaultSpec, err: &dyn Fn(&str, String) -> SpecError) -> Result<(), SpecError> {
        let k = f.kind.name();
        let node_known = |n: &String| -> Result<(), SpecError> {
            if self.nodes.iter().any(|x| &x.name == n) {
                Ok(())
            } else {
                Err(err(n, format!("{k}: unknown node `{n}`")))
            }
        };
        let windows = f.windows().map_err(|e| err(k, format!("{k}: {e}")))?;
        if let Some(l) = &f.latency {
            let d = parse_duration(l).map_err(|e| err(l, format!("{k}: {e}")))?;
            if d.is_zero() {
                return Err(err(l, format!("{k}: latency must be above 0")));
            }
        }
        let one_in = |f: &FaultSpec| f.rate.is_some() != f.interval.is_some() && f.rate != Some(0) && f.interval != Some(0);
        if f.kind == FaultKind::DeviceRestart {
            let ok = f.net.as_ref().is_some_and(|n| self.nets.get(n).is_some_and(|x| x.kind == NetKind::Dma));
            if !ok || windows.is_empty() {
                return Err(err(k, "device_restart needs `net:` (a DMA net), `at` and `duration`".into()));
            }
            return Ok(());
        }
        if f.kind == FaultKind::FabricLink {
            return self.check_fabric_link(f, windows.is_empty(), err);
        }
        if !f.hosts.is_empty() {
            return Err(err(k, format!("{k}: `hosts` is for fabric_link")));
        }
        if f.kind.is_device() {
            let ok = f.net.as_ref().is_some_and(|n| self.nets.get(n).is_some_and(|x| x.kind == NetKind::Dma));
            if !ok || f.rate.unwrap_or(0) == 0 || f.interval.is_some() {
                return Err(err(k, format!("{k} needs `net:` (a DMA net) and `rate:` (≥ 1)")));
            }
            if (f.kind == FaultKind::DmaLate) != f.latency.is_some() {
                return Err(err(k, format!("{k}: `latency` is for dma_late (and dma_late needs it)")));
            }
            if !windows.is_empty() {
                return Err(err(k, format!("{k}: device faults hold for the whole run (no at/duration)")));
            }
            return Ok(());
        }
        match f.kind {
            FaultKind::LnetDrop | FaultKind::LnetDelay => {
                node_known(&f.node)?;
                if let Some(s) = &f.src {
                    node_known(s)?;
                }
                if !one_in(f) {
                    return Err(err(k, format!("{k} on `{}`: give exactly one of rate and interval, at least 1", f.node)));
                }
                if (f.kind == FaultKind::LnetDelay) != f.latency.is_some() {
                    return Err(err(k, format!("{k} on `{}`: `latency` is for lnet_delay (and lnet_delay needs it)", f.node)));
                }
                if let Some(t) = &f.msg_type {
                    if !lnd::lnet::fault::MSG_TYPES.contains(&t.as_str()) {
                        return Err(err(t, format!("{k} on `{}`: type `{t}` is not PUT, GET, ACK or REPLY", f.node)));
                    }
                }
                if let Some(h) = &f.health_error {
                    use lnd::lnet::health::HealthStatus;
                    if f.kind != FaultKind::LnetDrop {
                        return Err(err(h, format!("{k} on `{}`: `health_error` is for lnet_drop", f.node)));
                    }
                    if h != "random" && HealthStatus::from_name(h).is_none() {
                        let names: Vec<&str> = HealthStatus::FAILURES.iter().map(|s| s.name()).collect();
                        return Err(err(h, format!("lnet_drop on `{}`: health_error `{h}` is not one of {}, random", f.node, names.join(", "))));
                    }
                    if f.src.is_some() {
                        return Err(err(k, format!("lnet_drop on `{}` with health_error fails the node's own sends: no `src` (use `net` for one of its NIs)", f.node)));
                    }
                }
                if let Some(net) = &f.net {
                    if f.health_error.is_none() {
                        return Err(err(&format!("net: {net}"), format!("{k} on `{}`: `net` goes with health_error (the NI whose sends fail)", f.node)));
                    }
                    if !self.nodes.iter().any(|n| n.name == f.node && n.nis.contains(net)) {
                        return Err(err(&format!("net: {net}"), format!("lnet_drop on `{}`: the node has no NI on `{net}`", f.node)));
                    }
                }
            }
            FaultKind::Pause | FaultKind::Restart | FaultKind::Crash => {
                node_known(&f.node)?;
                if f.kind == FaultKind::Crash && !self.nodes.iter().any(|n| n.name == f.node && n.roles.contains(&Role::Oss)) {
                    return Err(err(&format!("node: {}", f.node), format!("crash of `{}`: only an oss has storage to lose (crash an oss; restart others)", f.node)));
                }
                if windows.is_empty() {
                    return Err(err(k, format!("{k} of `{}` needs `at` and `duration`", f.node)));
                }
                let client = self.workloads.iter().any(|w| w.kind == WorkloadKind::Io && w.clients.contains(&f.node) || w.from.contains(&f.node));
                if f.kind == FaultKind::Restart && client {
                    return Err(err(&f.node, format!("restart of `{}`: it runs a workload client, whose job would die with it (restart servers and routers)", f.node)));
                }
            }
            FaultKind::Link | FaultKind::Partition => {
                if f.kind == FaultKind::Link && f.rate.unwrap_or(0) == 0 && f.latency.is_none() {
                    return Err(err(k, "link needs `rate:` (lose one in N, ≥ 1) and/or `latency:`".into()));
                }
                if f.kind == FaultKind::Partition && !windows.is_empty() && f.latency.is_some() {
                    return Err(err(k, "partition cuts everything: no `latency`".into()));
                }
                if f.between.len() != 2 || f.between.iter().any(|s| s.is_empty()) {
                    return Err(err(k, "partition needs `between: [[nodes...], [nodes...]]` (two non-empty sides)".into()));
                }
                for n in f.between.iter().flatten() {
                    node_known(n)?;
                }
                if f.between[0].iter().any(|n| f.between[1].contains(n)) {
                    return Err(err(k, "partition: a node cannot be on both sides".into()));
                }
                if let Some(net) = &f.net {
                    if f.kind == FaultKind::Link {
                        return Err(err(k, format!("link: no `net` ({net}); a lossy link is between nodes, on every net")));
                    }
                    if self.nets.get(net).is_none_or(|n| n.kind != NetKind::Dma) {
                        return Err(err(&format!("net: {net}"), format!("partition of `{net}`: `net` names a DMA net of this cluster (its fabric alone is cut; without `net`, every net is)")));
                    }
                }
                if windows.is_empty() && f.kind == FaultKind::Partition {
                    return Err(err(k, "partition needs `at` and `duration`".into()));
                }
            }
            _ => unreachable!("device faults and fabric_link handled above"),
        }
        Ok(())
    }

    /// `fabric_link`: a DMA net, two different hosts of the spec with nodes on it, a window.
    fn check_fabric_link(&self, f: &FaultSpec, untimed: bool, err: &dyn Fn(&str, String) -> SpecError) -> Result<(), SpecError> {
        let usage = "fabric_link needs `net:` (a DMA net), `hosts: [A, B]` (two hosts of the spec) and `at`/`duration`";
        let Some(net) = f.net.as_ref().filter(|n| self.nets.get(*n).is_some_and(|x| x.kind == NetKind::Dma)) else {
            return Err(err("fabric_link", usage.into()));
        };
        if f.hosts.len() != 2 || f.hosts[0] == f.hosts[1] || untimed {
            return Err(err("fabric_link", usage.into()));
        }
        let hosts = self.hosts();
        for h in &f.hosts {
            if !hosts.contains(h) {
                return Err(err(h, format!("fabric_link: no node runs on host `{h}` (hosts: {})", if hosts.is_empty() { "none named".into() } else { hosts.join(", ") })));
            }
            if !self.nodes.iter().any(|n| self.host_of(n) == Some(h.as_str()) && n.nis.contains(net)) {
                return Err(err(h, format!("fabric_link: host `{h}` has no node on `{net}`, so no device of it to link")));
            }
        }
        Ok(())
    }

    /// The hosts nodes name, in the order they first appear (empty: one machine).
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = Vec::new();
        for h in self.nodes.iter().filter_map(|n| n.host.as_ref()) {
            if !hosts.contains(h) {
                hosts.push(h.clone());
            }
        }
        hosts
    }

    /// The host node `n` runs on: its own, else the first one named (`None`: one machine).
    pub fn host_of<'a>(&'a self, n: &'a super::spec::NodeSpec) -> Option<&'a str> {
        n.host.as_deref().or_else(|| self.nodes.iter().find_map(|x| x.host.as_deref()))
    }
}

/// 1-based line and column of occurrence `nth` (0 = first) of `needle` outside comments
/// (or the first occurrence, or 1:1).
fn locate(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let mut found = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let code = l.split(" #").next().unwrap_or(l);
        if l.trim_start().starts_with('#') {
            continue;
        }
        let mut from = 0;
        while let Some(c) = code[from..].find(needle) {
            found.push((i + 1, from + c + 1));
            from += c + needle.len();
        }
    }
    found.get(nth).or(found.first()).copied().unwrap_or((1, 1))
}

/// The parser places a duplicate key at its first occurrence: point at the second, the one to
/// remove (the next line that starts with the same key at the same column).
fn second_of_duplicate(text: &str, mut e: SpecError) -> SpecError {
    let Some(key) = e.msg.split("duplicate entry with key \"").nth(1).and_then(|k| k.split('"').next()) else { return e };
    let at = format!("{key}:");
    let col = e.col;
    if let Some((i, _)) = text.lines().enumerate().skip(e.line).find(|(_, l)| l.get(col - 1..).is_some_and(|r| r.starts_with(&at)) && l[..col - 1].trim_matches(|c| c == ' ' || c == '-').is_empty()) {
        e.line = i + 1;
    }
    e
}
