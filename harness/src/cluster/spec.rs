//! Cluster specs (`clusters/*.yaml`) as typed structs. Every error names the file, line and
//! column and says what was expected: syntax and type errors come from the YAML parser's
//! location, semantic ones from where the offending name appears.

use lnd::wire::{LndType, Net};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// A spec error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {msg}")]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

/// A byte size written as `8MiB`, `256MiB`, `4096` ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => lnd::daemon::parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetKind {
    Dma,
    Tcp,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    pub kind: NetKind,
    /// For the Docker backend: the bridge's subnet (`10.88.0.0/24`). The process backend uses
    /// loopback addresses of its own.
    #[serde(default)]
    pub subnet: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Oss,
    Client,
    Router,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The remote net.
    pub net: String,
    /// The router node.
    pub via: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub ost: u32,
    pub size: Size,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub roles: Vec<Role>,
    pub nis: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Io,
    Selftest,
}

/// How a selftest's `from` group maps onto its `to` group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Distribute {
    /// Client k tests against target k mod n.
    #[serde(rename = "1:1")]
    OneToOne,
    /// Every client tests against every target in turn.
    #[serde(rename = "1:n")]
    OneToAll,
}

fn one_usize() -> usize {
    1
}
fn one_to_one() -> Distribute {
    Distribute::OneToOne
}

/// Parses `3s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 3s, 500ms, 2m)"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" | "" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(60 * n)),
        u => Err(format!("`{s}`: unknown unit `{u}` (use ms, s, m)")),
    }
}

fn one_mib() -> Size {
    Size(1 << 20)
}
fn one() -> u32 {
    1
}
fn eight() -> usize {
    8
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub name: String,
    pub kind: WorkloadKind,
    /// io: the client nodes.
    #[serde(default)]
    pub clients: Vec<String>,
    /// io: files per client.
    #[serde(default)]
    pub files: u64,
    /// io: bytes per file; selftest: bytes per brw operation.
    pub size: Size,
    /// selftest: the group that runs the test...
    #[serde(default)]
    pub from: Vec<String>,
    /// ...against this group.
    #[serde(default)]
    pub to: Vec<String>,
    /// selftest: ping, brw_read or brw_write.
    #[serde(default)]
    pub test: Option<lnd::selftest::StTest>,
    /// selftest: operations in flight per client.
    #[serde(default = "one_usize")]
    pub concurrency: usize,
    #[serde(default = "one_to_one")]
    pub distribute: Distribute,
    /// selftest: how long (e.g. `3s`, `500ms`), or `count` operations per client.
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub count: Option<u64>,
    /// io: resend an RPC whose reply has not come after this long (default 5s).
    #[serde(default)]
    pub rpc_timeout: Option<String>,
    /// io: attempts per RPC (resends and bulk redos) before it counts as failed (default 8).
    #[serde(default)]
    pub max_tries: Option<u32>,
    #[serde(default = "one_mib")]
    pub stripe_size: Size,
    #[serde(default = "one")]
    pub stripe_count: u32,
    #[serde(default = "eight")]
    pub inflight: usize,
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default)]
    pub punch: bool,
    #[serde(default)]
    pub destroy: bool,
    /// io: create and write nothing; read back and verify what the earlier io workload of this
    /// name wrote on the same clients (same files, size and striping).
    #[serde(default)]
    pub read_back: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// LNet drop rule on `node` (like `lctl net_drop_add`), for messages it receives.
    LnetDrop,
    /// LNet delay rule on `node` (like `lctl net_delay_add`): hold matching messages `latency`.
    LnetDelay,
    /// The DMA device of `net` damages one in `rate` pulled transfers.
    DmaCorrupt,
    /// ...refuses one in `rate` transmit setups.
    DmaTxfail,
    /// ...fails one in `rate` pulls (error completions at both ends).
    DmaPullfail,
    /// ...refuses one in `rate` short messages as if the receiver's mailbox were full.
    DmaMailbox,
    /// ...completes one in `rate` pulls `latency` late.
    DmaLate,
    /// ...loses the puller's completion of one in `rate` pulls (the LND's timeout must act).
    DmaLost,
    /// Freeze `node` (SIGSTOP / docker pause) at `at` for `duration`, `count` times `every`.
    Pause,
    /// Cut LNet traffic between the two node sets of `between` at `at` for `duration`.
    Partition,
    /// SIGKILL `node` at `at` and start it again `duration` later (same addresses, storage).
    Restart,
    /// Kill the DMA device of `net` at `at` and start a new one `duration` later.
    DeviceRestart,
    /// A lossy and/or slow link between the two node sets of `between`, both ways: one in
    /// `rate` messages lost, every message held `latency` (LNet rules on both ends).
    Link,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::LnetDrop => "lnet_drop",
            FaultKind::LnetDelay => "lnet_delay",
            FaultKind::DmaCorrupt => "dma_corrupt",
            FaultKind::DmaTxfail => "dma_txfail",
            FaultKind::DmaPullfail => "dma_pullfail",
            FaultKind::DmaMailbox => "dma_mailbox",
            FaultKind::DmaLate => "dma_late",
            FaultKind::DmaLost => "dma_lost",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Restart => "restart",
            FaultKind::DeviceRestart => "device_restart",
            FaultKind::Link => "link",
        }
    }
    /// Faults the DMA device injects.
    pub fn is_device(self) -> bool {
        matches!(self, FaultKind::DmaCorrupt | FaultKind::DmaTxfail | FaultKind::DmaPullfail | FaultKind::DmaMailbox | FaultKind::DmaLate | FaultKind::DmaLost)
    }
    /// LNet rules installed on one node.
    pub fn is_lnet_rule(self) -> bool {
        matches!(self, FaultKind::LnetDrop | FaultKind::LnetDelay)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub kind: FaultKind,
    /// lnet_drop, lnet_delay, pause: the node.
    #[serde(default)]
    pub node: String,
    /// dma_*: the DMA net.
    #[serde(default)]
    pub net: Option<String>,
    /// Only messages from this node...
    #[serde(default)]
    pub src: Option<String>,
    /// ...on this portal...
    #[serde(default)]
    pub portal: Option<u32>,
    /// ...of this type (PUT, GET, ACK, REPLY).
    #[serde(default, rename = "type")]
    pub msg_type: Option<String>,
    /// One in `rate` at random (seeded), or every `interval`-th.
    #[serde(default)]
    pub rate: Option<u32>,
    #[serde(default)]
    pub interval: Option<u32>,
    /// lnet_delay, dma_late: how long (`40ms`).
    #[serde(default)]
    pub latency: Option<String>,
    /// When the fault starts, from the start of the first workload (`500ms`); LNet rules with
    /// neither `at` nor `duration` hold for the whole run.
    #[serde(default)]
    pub at: Option<String>,
    /// How long it lasts.
    #[serde(default)]
    pub duration: Option<String>,
    /// Repeat every this long...
    #[serde(default)]
    pub every: Option<String>,
    /// ...this many times in all (default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// partition: the two sides.
    #[serde(default)]
    pub between: Vec<Vec<String>>,
}

impl FaultSpec {
    /// The windows `(start, end)` of a timed fault; empty for untimed ones.
    pub fn windows(&self) -> Result<Vec<(std::time::Duration, std::time::Duration)>, String> {
        if self.at.is_none() && self.duration.is_none() {
            return Ok(Vec::new());
        }
        let at = self.at.as_deref().map(parse_duration).transpose()?.unwrap_or_default();
        let dur = self.duration.as_deref().map(parse_duration).transpose()?.ok_or("a timed fault needs `duration`")?;
        let every = self.every.as_deref().map(parse_duration).transpose()?;
        let count = self.count.unwrap_or(1);
        if count > 1 && every.is_none() {
            return Err("`count` above 1 needs `every`".into());
        }
        if every.is_some_and(|e| e <= dur) {
            return Err("`every` must be longer than `duration` (windows may not overlap)".into());
        }
        Ok((0..count).map(|k| {
            let start = at + every.unwrap_or_default() * k;
            (start, start + dur)
        }).collect())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    #[serde(default)]
    pub seed: Option<u64>,
    pub nets: BTreeMap<String, NetSpec>,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// Faults injected once the cluster is up.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    #[serde(skip)]
    pub source: PathBuf,
}

impl ClusterSpec {
    pub fn load(path: &Path) -> Result<ClusterSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError { file: path.display().to_string(), line: 0, col: 0, msg: format!("cannot read: {e}") })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<ClusterSpec, SpecError> {
        let file = path.display().to_string();
        let mut spec: ClusterSpec = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, col) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            // The parser's message ends with its own "at line X column Y"; keep the part that says what was expected.
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            SpecError { file: file.clone(), line, col, msg }
        })?;
        spec.source = path.to_path_buf();
        spec.validate(text, &file)?;
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
            }
            FaultKind::Pause | FaultKind::Restart => {
                node_known(&f.node)?;
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
                if windows.is_empty() && f.kind == FaultKind::Partition {
                    return Err(err(k, "partition needs `at` and `duration`".into()));
                }
            }
            _ => unreachable!("device faults handled above"),
        }
        Ok(())
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
