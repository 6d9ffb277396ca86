//! The spec's faults at run time: LNet rules installed on nodes, and a timeline of windows
//! (pause, partition, restart, crash, timed rules) fired while workloads run.
//! Every fault is written to `traces/faults.jsonl` and counted by kind for the report.

use super::backend::Backend;
use super::plan::Plan;
use super::control::Cluster;
use super::spec::{parse_duration, FaultKind, FaultSpec};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Adds a node's LNet rule hits (`stats` output) to `by_kind`; partitions count their windows,
/// not the messages they cut.
fn add_hits(by_kind: &mut BTreeMap<String, u64>, st: &Value) {
    for (tag, n) in st["fault_hits"].as_object().into_iter().flatten() {
        let kind = tag.split('#').next().unwrap_or(tag);
        if kind != "partition" {
            *by_kind.entry(if kind.is_empty() { "lnet_drop".into() } else { kind.to_string() }).or_default() += n.as_u64().unwrap_or(0);
        }
    }
}

/// Both directions between the two sides of `between`: (receiving node, sending NID).
fn link_ends(plan: &Plan, f: &FaultSpec) -> Vec<(usize, String)> {
    let idx = |name: &str| plan.nodes.iter().position(|n| n.name == name).expect("validated");
    let mut out = Vec::new();
    for (mine, theirs) in [(&f.between[0], &f.between[1]), (&f.between[1], &f.between[0])] {
        for a in mine {
            for b in theirs {
                for (_, nid) in &plan.nodes[idx(b)].nids {
                    out.push((idx(a), nid.to_string()));
                }
            }
        }
    }
    out
}

/// The LNet rules of a lossy/slow link (fault `k`): on each end, for what the other sends.
fn link_rules(plan: &Plan, k: usize, f: &FaultSpec, tag: &str) -> Vec<(usize, Value)> {
    let ms = f.latency.as_deref().and_then(|l| parse_duration(l).ok()).map(|d| d.as_millis() as u64);
    let mut rules = Vec::new();
    for (j, (a, nid)) in link_ends(plan, f).into_iter().enumerate() {
        if let Some(rate) = f.rate.filter(|r| *r > 0) {
            let seed = plan.seed ^ ((k as u64 + 1) << 8) ^ j as u64;
            rules.push((a, json!({"src": nid, "rate": rate, "seed": seed, "tag": format!("{tag}/drop")})));
        }
        if let Some(ms) = ms {
            rules.push((a, json!({"src": nid, "interval": 1, "delay_ms": ms, "tag": format!("{tag}/delay")})));
        }
    }
    rules
}

#[derive(Clone)]
enum Step {
    KillDevice { net: String },
    StartDevice { net: String },
    /// Kill `node`; a restart (not a `crash`) has its OSS commit first.
    Kill { node: usize, crash: bool },
    Start { node: usize, crash: bool },
    Pause { node: usize },
    Resume { node: usize },
    /// Install rules on nodes (node index, rule).
    Rules { kind: FaultKind, rules: Vec<(usize, Value)> },
    /// Remove the rules tagged `tag` from these nodes.
    Unrules { tag: String, nodes: Vec<usize> },
    /// Cut (`on`) or heal the backend's wires between these node pairs.
    Cut { pairs: Vec<(usize, usize)>, on: bool },
    /// Cut (`on`) or heal one DMA fabric between these address pairs.
    CutFabric { net: String, pairs: Vec<(u32, u32)>, on: bool },
    /// Cut (`on`) or restore the fabric link of `net` between the devices of hosts `a` and `b`.
    CutLink { net: String, a: usize, b: usize, on: bool },
}

struct Timed {
    at: Duration,
    /// Steps that end a window run even when the workloads finish first.
    undo: bool,
    what: String,
    step: Step,
}

/// The run's faults.
pub struct Faults {
    timeline: Vec<Timed>,
    start: Option<Instant>,
    /// Untimed LNet rules, installed once the cluster is up (and again on a restarted node).
    standing: Vec<(usize, Value)>,
    /// Rules of windows now open (node, rule): a node restarted inside the window gets them again.
    open: Vec<(usize, Value)>,
    installed: bool,
    /// Windows opened, by kind (pause, partition, timed rules count their messages instead).
    windows: BTreeMap<String, u64>,
    pub skipped: Vec<String>,
    /// LNet rule hits of nodes that were killed, by kind (their counters died with them).
    saved_hits: BTreeMap<String, u64>,
    /// DMA nets whose device is killed and not yet started again.
    dead_devices: std::collections::BTreeSet<String>,
    trace: Option<std::fs::File>,
    /// The time of the step being run, as node traces count it (`t_us` of its records).
    at_us: Option<u64>,
    /// Every record written, in order (what `lnetlab fault` reports back).
    pub records: Vec<Value>,
    /// The multi-NI nodes' NIs when the last window closed (`lnet:` specs), by node.
    pub nis_at_heal: Option<BTreeMap<usize, Value>>,
}

fn rule_json(plan: &Plan, k: usize, f: &FaultSpec, src: Option<String>, tag: String) -> Value {
    let delay_ms = f.latency.as_deref().and_then(|l| parse_duration(l).ok()).map(|d| d.as_millis() as u64);
    let mut rule = json!({"src": src, "portal": f.portal, "type": f.msg_type, "rate": f.rate, "interval": f.interval,
           "seed": plan.seed ^ (k as u64 + 1), "delay_ms": delay_ms, "tag": tag});
    if let Some(h) = &f.health_error {
        rule["health_error"] = json!(h);
    }
    rule
}

impl Faults {
    /// Adds a window for each of `windows`: `open` at its start, `close` (each step of it) at
    /// its end — the closing steps also run if the workloads finish first.
    fn add_windows(&mut self, windows: &[(Duration, Duration)], what: &str, open: Step, close: &[(String, Step)]) {
        for &(a, b) in windows {
            self.timeline.push(Timed { at: a, undo: false, what: what.to_string(), step: open.clone() });
            for (w, step) in close {
                self.timeline.push(Timed { at: b, undo: true, what: w.clone(), step: step.clone() });
            }
        }
    }

    /// Lays out the spec's faults for `backend` (what it cannot inject is skipped, and said).
    pub fn new(plan: &Plan, backend: &dyn Backend, art: &Path, say: &dyn Fn(&str)) -> anyhow::Result<Faults> {
        Faults::tagged(plan, backend, art, say, "")
    }

    /// As [`Faults::new`], with rule tags starting `prefix` (faults applied to a running
    /// cluster by `lnetlab fault`, beside the spec's own rules). Records go on at the end of
    /// `traces/faults.jsonl`.
    pub fn tagged(plan: &Plan, backend: &dyn Backend, art: &Path, say: &dyn Fn(&str), prefix: &str) -> anyhow::Result<Faults> {
        let idx = |name: &str| plan.nodes.iter().position(|n| n.name == name).expect("validated");
        let file = art.join("traces").join("faults.jsonl");
        let trace = if plan.spec.faults.is_empty() { None } else { Some(std::fs::OpenOptions::new().create(true).append(true).open(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?) };
        let mut me = Faults { timeline: Vec::new(), start: None, standing: Vec::new(), open: Vec::new(), installed: false, windows: BTreeMap::new(), skipped: Vec::new(), saved_hits: BTreeMap::new(), dead_devices: Default::default(), trace, at_us: None, records: Vec::new(), nis_at_heal: None };
        for (k, f) in plan.spec.faults.iter().enumerate() {
            let windows = f.windows().map_err(anyhow::Error::msg)?;
            let fabric_cut = f.kind == FaultKind::Partition && f.net.is_some();
            let link_cut = f.kind == FaultKind::FabricLink;
            if !backend.can_inject(f.kind, !windows.is_empty()) || (fabric_cut && !backend.can_cut_fabric()) || (link_cut && !backend.can_cut_link()) {
                let why = format!("{} (fault {}) skipped: not available on the {} backend", f.kind.name(), k + 1, backend.name());
                say(&why);
                me.skipped.push(why);
                continue;
            }
            let tag = format!("{prefix}{}#{}", f.kind.name(), k + 1);
            match f.kind {
                FaultKind::LnetDrop | FaultKind::LnetDelay => {
                    let i = idx(&f.node);
                    // A health_error rule fails the node's own sends: from its NI on `net`, if given.
                    let src = match (&f.health_error, &f.net) {
                        (Some(_), Some(net)) => plan.node(&f.node).nid_on(net).map(|n| n.to_string()),
                        _ => f.src.as_ref().and_then(|s| plan.nid_for(&f.node, s)).map(|n| n.to_string()),
                    };
                    let rule = rule_json(plan, k, f, src, tag.clone());
                    if windows.is_empty() {
                        me.standing.push((i, rule.clone()));
                    }
                    let what = format!("{} on {}", f.kind.name(), f.node);
                    me.add_windows(&windows, &what, Step::Rules { kind: f.kind, rules: vec![(i, rule)] }, &[(what.clone(), Step::Unrules { tag: tag.clone(), nodes: vec![i] })]);
                }
                FaultKind::DeviceRestart => {
                    let net = f.net.clone().expect("validated");
                    me.add_windows(&windows, &format!("kill the {net} device"), Step::KillDevice { net: net.clone() }, &[(format!("start the {net} device again"), Step::StartDevice { net })]);
                }
                FaultKind::Restart | FaultKind::Crash => {
                    let (i, crash) = (idx(&f.node), f.kind == FaultKind::Crash);
                    let what = if crash { format!("crash {} (uncommitted changes lost)", f.node) } else { format!("kill {}", f.node) };
                    me.add_windows(&windows, &what, Step::Kill { node: i, crash }, &[(format!("start {} again", f.node), Step::Start { node: i, crash })]);
                }
                FaultKind::Pause => {
                    let i = idx(&f.node);
                    me.add_windows(&windows, &format!("pause {}", f.node), Step::Pause { node: i }, &[(format!("resume {}", f.node), Step::Resume { node: i })]);
                }
                FaultKind::Link => {
                    let rules = link_rules(plan, k, f, &tag);
                    if windows.is_empty() {
                        me.standing.extend(rules.clone());
                    }
                    let nodes: Vec<usize> = f.between.iter().flatten().map(|n| idx(n)).collect();
                    let what = format!("link {:?} <-> {:?}", f.between[0], f.between[1]);
                    let close: Vec<_> = ["drop", "delay"].iter().map(|sub| (format!("{what} restored"), Step::Unrules { tag: format!("{tag}/{sub}"), nodes: nodes.clone() })).collect();
                    me.add_windows(&windows, &what, Step::Rules { kind: f.kind, rules }, &close);
                }
                FaultKind::Partition if fabric_cut => {
                    // The DMA fabric alone: its device fails what crosses (the other nets work).
                    let net = f.net.clone().expect("checked");
                    let addr = |n: &String| plan.node(n).nid_on(&net).map(|nid| nid.addr());
                    let pairs: Vec<(u32, u32)> = f.between[0].iter().filter_map(addr).flat_map(|a| f.between[1].iter().filter_map(addr).map(move |b| (a, b))).collect();
                    let what = format!("partition {net} {:?} | {:?}", f.between[0], f.between[1]);
                    me.add_windows(&windows, &what, Step::CutFabric { net: net.clone(), pairs: pairs.clone(), on: true }, &[(format!("heal {what}"), Step::CutFabric { net, pairs, on: false })]);
                }
                FaultKind::Partition => {
                    // Each side drops everything from every NID of the other side.
                    let rules: Vec<(usize, Value)> = link_ends(plan, f).into_iter().map(|(a, nid)| (a, json!({"src": nid, "interval": 1, "tag": tag}))).collect();
                    let nodes: Vec<usize> = f.between.iter().flatten().map(|n| idx(n)).collect();
                    let what = format!("partition {:?} | {:?}", f.between[0], f.between[1]);
                    // The wires too, where the backend has its own (the simulator's).
                    let pairs: Vec<(usize, usize)> = f.between[0].iter().flat_map(|a| f.between[1].iter().map(move |b| (idx(a), idx(b)))).collect();
                    let heal = format!("heal {what}");
                    let close = [(heal.clone(), Step::Unrules { tag: tag.clone(), nodes }), (heal, Step::Cut { pairs: pairs.clone(), on: false })];
                    me.add_windows(&windows, &what, Step::Rules { kind: f.kind, rules }, &close);
                    for &(a, _) in &windows {
                        me.timeline.push(Timed { at: a, undo: false, what: format!("cut {what}"), step: Step::Cut { pairs: pairs.clone(), on: true } });
                    }
                }
                FaultKind::FabricLink => {
                    let net = f.net.clone().expect("validated");
                    let host = |h: &String| plan.hosts.iter().position(|x| x == h).expect("validated");
                    let (a, b) = (host(&f.hosts[0]), host(&f.hosts[1]));
                    let what = format!("cut the {net} fabric link {} <-> {}", f.hosts[0], f.hosts[1]);
                    me.add_windows(&windows, &what, Step::CutLink { net: net.clone(), a, b, on: true }, &[(format!("restore the {net} fabric link {} <-> {}", f.hosts[0], f.hosts[1]), Step::CutLink { net, a, b, on: false })]);
                }
                _ => {} // device faults are set when the device starts
            }
        }
        me.timeline.sort_by_key(|t| (t.at, !t.undo));
        Ok(me)
    }

    fn record(&mut self, mut v: Value) {
        if let Some(t) = self.at_us {
            v["t_us"] = json!(t);
        }
        if let Some(t) = &mut self.trace {
            let _ = writeln!(t, "{v}");
        }
        self.records.push(v);
    }

    /// Applies the whole timeline to a running cluster, its windows counted from now, and
    /// returns once the last window closed (`lnetlab fault`). Lines the nodes send meanwhile
    /// are dropped, as between requests; untimed rules stay installed.
    pub fn apply_now(&mut self, backend: &dyn Backend, cluster: &mut Cluster, plan: &Plan, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        self.install(cluster, plan, timeout, say)?;
        self.start(cluster.now());
        while let Some(due) = self.next_due() {
            if crate::interrupt::interrupted() {
                return self.finish(backend, cluster, plan, timeout, say);
            }
            while cluster.next_until(due)?.is_some() {}
            self.fire_due(backend, cluster, plan, timeout, say)?;
        }
        Ok(())
    }

    /// Installs the untimed LNet rules.
    pub fn install(&mut self, cluster: &mut Cluster, plan: &Plan, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        self.installed = true;
        self.install_on(cluster, plan, None, timeout, say)
    }

    /// Installs the untimed LNet rules of every node, or of node `only` (with the rules of the
    /// windows open now: a node restarted inside a partition is still cut off).
    fn install_on(&mut self, cluster: &mut Cluster, plan: &Plan, only: Option<usize>, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        self.at_us = cluster.trace_us();
        let open = if only.is_some() { self.open.clone() } else { Vec::new() };
        for (i, rule) in self.standing.clone().into_iter().chain(open) {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            cluster.cmd(i, json!({"op": "fault", "rule": rule}), timeout)?;
            say(&format!("fault: {} on {}", rule["tag"].as_str().unwrap_or("?"), plan.nodes[i].name));
            self.record(json!({"fault": rule["tag"], "node": plan.nodes[i].name, "action": "rule added"}));
        }
        Ok(())
    }

    /// When the next timed step is due (None: nothing left, or workloads not started).
    pub fn next_due(&self) -> Option<Instant> {
        Some(self.start? + self.timeline.first()?.at)
    }

    /// Starts the timeline (first workload) at `now`, on the cluster's clock.
    pub fn start(&mut self, now: Instant) {
        self.start.get_or_insert(now);
    }

    /// Runs every step that is due on the cluster's clock.
    pub fn fire_due(&mut self, backend: &dyn Backend, cluster: &mut Cluster, plan: &Plan, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        let mut fired = false;
        while self.next_due().is_some_and(|t| t <= cluster.now()) {
            let t = self.timeline.remove(0);
            self.run_step(t, backend, cluster, plan, timeout, say)?;
            fired = true;
        }
        if fired && self.timeline.is_empty() && plan.spec.lnet.is_some() {
            self.nis_at_heal = Some(super::health::snapshot(cluster, plan, timeout)?);
        }
        Ok(())
    }

    /// Closes every open window (resume, heal, remove rules); windows not yet opened are
    /// dropped. Called after the workloads, and on failure before teardown.
    pub fn finish(&mut self, backend: &dyn Backend, cluster: &mut Cluster, plan: &Plan, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        let mut left = std::mem::take(&mut self.timeline);
        // Thaw frozen nodes first: the other undo steps talk to nodes, which must answer.
        left.sort_by_key(|t| !matches!(t.step, Step::Resume { .. }));
        let mut first_err = None;
        // An undo step whose window never opened finds nothing to undo, harmlessly.
        for t in left.into_iter().filter(|t| t.undo) {
            if let Err(e) = self.run_step(t, backend, cluster, plan, timeout, say) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn run_step(&mut self, t: Timed, backend: &dyn Backend, cluster: &mut Cluster, plan: &Plan, timeout: Duration, say: &dyn Fn(&str)) -> anyhow::Result<()> {
        let name = |i: usize| plan.nodes[i].name.clone();
        self.at_us = cluster.trace_us();
        match t.step {
            Step::KillDevice { net } => {
                backend.kill_device(cluster, &net)?;
                self.dead_devices.insert(net.clone());
                *self.windows.entry("device_restart".into()).or_default() += 1;
                self.record(json!({"fault": "device_restart", "net": net, "action": "killed"}));
            }
            Step::StartDevice { net } => {
                if !self.dead_devices.remove(&net) {
                    return Ok(());
                }
                backend.start_device(cluster, &net, timeout)?;
                self.record(json!({"fault": "device_restart", "net": net, "action": "started again"}));
            }
            Step::Kill { node, crash } => {
                // A frozen node answers nothing: thaw it first (the kill would anyway).
                if backend.pause(cluster, node, false)? {
                    self.record(json!({"fault": "pause", "node": name(node), "action": "resumed"}));
                }
                // Its counters die with it: keep what it injected so far.
                self.save_hits(cluster, node, timeout)?;
                let kind = if crash { "crash" } else { "restart" };
                if !crash && plan.nodes[node].is(super::spec::Role::Oss) {
                    // A restart is a daemon dying, not the machine: what the OSS acknowledged
                    // is in the kernel's page cache and survives, so it is committed first.
                    cluster.cmd(node, json!({"op": "commit"}), timeout)?;
                }
                // A crash is the power going: SIGKILL takes the uncommitted cache with the
                // process's memory. In-process nodes (sim) drop it by the node op `crash`.
                if crash && backend.virtual_time() {
                    cluster.cmd(node, json!({"op": "crash"}), timeout)?;
                }
                backend.kill_node(cluster, node, timeout)?;
                *self.windows.entry(kind.into()).or_default() += 1;
                self.record(json!({"fault": kind, "node": name(node), "action": "killed"}));
            }
            Step::Start { node, crash } => {
                if !cluster.down.contains(&node) {
                    return Ok(());
                }
                backend.start_node(cluster, node, timeout)?;
                cluster.start_roles(plan, node, timeout, say)?;
                if self.installed {
                    self.install_on(cluster, plan, Some(node), timeout, say)?;
                }
                self.record(json!({"fault": if crash { "crash" } else { "restart" }, "node": name(node), "action": "started again"}));
            }
            Step::Pause { node } => {
                backend.pause(cluster, node, true)?;
                *self.windows.entry("pause".into()).or_default() += 1;
                self.record(json!({"fault": "pause", "node": name(node), "action": "paused"}));
            }
            Step::Resume { node } => {
                if backend.pause(cluster, node, false)? {
                    self.record(json!({"fault": "pause", "node": name(node), "action": "resumed"}));
                }
            }
            Step::Rules { kind, rules } => {
                for (i, rule) in &rules {
                    cluster.cmd(*i, json!({"op": "fault", "rule": rule}), timeout)?;
                }
                self.open.extend(rules.iter().cloned());
                if kind == FaultKind::Partition {
                    *self.windows.entry("partition".into()).or_default() += 1;
                }
                self.record(json!({"fault": kind.name(), "action": "rules added", "what": t.what, "rules": rules.len()}));
            }
            Step::Cut { pairs, on } => {
                for (a, b) in pairs {
                    backend.cut(cluster, a, b, on)?;
                }
            }
            Step::CutFabric { net, pairs, on } => {
                for &(a, b) in &pairs {
                    backend.cut_fabric(cluster, &net, a, b, on)?;
                }
                if on {
                    *self.windows.entry("partition".into()).or_default() += 1;
                }
                // Named by what it cut (not by `net`, which a device restart of that net shares).
                self.record(json!({"fault": "partition", "fabric": net, "action": if on { "fabric cut" } else { "fabric healed" }, "what": t.what, "pairs": pairs.len()}));
            }
            Step::CutLink { net, a, b, on } => {
                backend.cut_link(cluster, &net, a, b, on)?;
                if on {
                    *self.windows.entry("fabric_link".into()).or_default() += 1;
                }
                self.record(json!({"fault": "fabric_link", "fabric": net, "hosts": [plan.hosts[a], plan.hosts[b]], "action": if on { "link cut" } else { "link restored" }, "what": t.what}));
            }
            Step::Unrules { tag, nodes } => {
                let mut removed = 0;
                self.open.retain(|(i, r)| !(r["tag"] == tag.as_str() && nodes.contains(i)));
                for i in nodes {
                    removed += cluster.cmd(i, json!({"op": "fault_del", "tag": tag}), timeout)?["removed"].as_u64().unwrap_or(0);
                }
                if removed > 0 {
                    self.record(json!({"fault": tag, "action": "rules removed", "what": t.what, "rules": removed}));
                }
            }
        }
        say(&format!("fault: {}", t.what));
        Ok(())
    }

    /// Adds node `i`'s LNet fault counters to the saved ones (before it is killed).
    fn save_hits(&mut self, cluster: &mut Cluster, i: usize, timeout: Duration) -> anyhow::Result<()> {
        let st = cluster.cmd(i, json!({"op": "stats"}), timeout)?;
        add_hits(&mut self.saved_hits, &st);
        Ok(())
    }

    /// Faults injected, by kind: windows opened here, messages hit by LNet rules (per the
    /// nodes' counters; partitions count their windows, not the messages they cut) and what
    /// the devices report.
    pub fn counts(&self, cluster: &mut Cluster, plan: &Plan, art: &Path, timeout: Duration) -> anyhow::Result<BTreeMap<String, u64>> {
        let mut by_kind = self.windows.clone();
        for (k, n) in &self.saved_hits {
            *by_kind.entry(k.clone()).or_default() += n;
        }
        for i in 0..plan.nodes.len() {
            let st = cluster.cmd(i, json!({"op": "stats"}), timeout)?;
            // Kept with the artifacts: counters of every layer, for whoever debugs the run.
            let _ = std::fs::write(art.join("nodes").join(format!("{}.stats.json", plan.nodes[i].name)), serde_json::to_string_pretty(&st).unwrap_or_default() + "\n");
            add_hits(&mut by_kind, &st);
        }
        for (k, n) in cluster.device_faults(art) {
            *by_kind.entry(k).or_default() += n;
        }
        by_kind.retain(|_, n| *n > 0);
        Ok(by_kind)
    }
}
