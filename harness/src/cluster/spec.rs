//! Cluster specs (`clusters/*.yaml`) as typed structs. Every error names the file, line and
//! column and says what was expected: syntax and type errors come from the YAML parser's
//! location, semantic ones from where the offending name appears.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// For the Docker backend: the bridge's subnet (`10.88.0.0/24`, `/8` to `/30`, kept as
    /// given; an error if taken), else a free /24 is claimed. The process backend uses loopback
    /// addresses of its own.
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
    /// A node group: this many nodes, `NAME0`… (`cluster/groups.rs`); its name stands for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    pub roles: Vec<Role>,
    pub nis: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub targets: Vec<TargetSpec>,
    /// oss: how often its OSTs commit what they acknowledged (`5s`, Lustre's default; at most
    /// 60m). Until then a `crash` loses it and clients replay it.
    #[serde(default)]
    pub commit_interval: Option<String>,
    /// The host the node runs on (a fabric across hosts: one DMA device per host, linked). Nodes
    /// that name none run on the first host the spec names; a spec naming none is one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
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
/// An optional duration field in milliseconds (`None` when it is not given).
pub fn optional_ms(v: &Option<String>) -> Result<Option<u64>, String> {
    v.as_deref().map(parse_duration).transpose().map(|d| d.map(|d| d.as_millis() as u64))
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a duration (e.g. 3s, 500ms, 2m)"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" | "" => Ok(std::time::Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(std::time::Duration::from_secs).ok_or_else(|| format!("`{s}` is too long")),
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
    /// io: resend an RPC whose reply has not come after this long, a fixed timeout (without it,
    /// adaptive timeouts: deadlines from the servers' service estimates, early replies).
    #[serde(default)]
    pub rpc_timeout: Option<String>,
    /// io, adaptive timeouts: no RPC timeout below `at_min` (default 0) or above `at_max`
    /// (default 600s), as Lustre's module parameters.
    #[serde(default)]
    pub at_min: Option<String>,
    #[serde(default)]
    pub at_max: Option<String>,
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
    /// io: preallocate each object to its final size (OST_FALLOCATE) before writing it.
    #[serde(default)]
    pub fallocate: bool,
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
    /// SIGKILL `node` at `at` and start it again `duration` later (same addresses, storage);
    /// an OSS commits first, so nothing acknowledged is lost (a daemon crash: the kernel keeps
    /// what the process wrote).
    Restart,
    /// Power loss of OSS `node` at `at`: it dies with what its OSTs had not committed, and comes
    /// back `duration` later; its clients replay what was lost.
    Crash,
    /// Kill the DMA device of `net` at `at` and start a new one `duration` later.
    DeviceRestart,
    /// A lossy and/or slow link between the two node sets of `between`, both ways: one in
    /// `rate` messages lost, every message held `latency` (LNet rules on both ends).
    Link,
    /// Cut the fabric link of DMA net `net` between the devices of the two `hosts` at `at` for
    /// `duration`: what crosses it fails, each side's nodes see the other's leave, and come back.
    FabricLink,
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
            FaultKind::Crash => "crash",
            FaultKind::DeviceRestart => "device_restart",
            FaultKind::Link => "link",
            FaultKind::FabricLink => "fabric_link",
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
    /// lnet_drop: fail `node`'s matching *sends* with this LNet health status instead of
    /// dropping what it receives (`lctl net_drop_add -e`): local_dropped, remote_dropped,
    /// network_timeout, ... or random; `net:` limits it to the node's NI on that net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_error: Option<String>,
    /// fabric_link: the two hosts whose devices' link is cut.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
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
        (0..count)
            .map(|k| {
                let start = every.unwrap_or_default().checked_mul(k).and_then(|x| x.checked_add(at));
                start.and_then(|s| Some((s, s.checked_add(dur)?))).ok_or_else(|| "the windows run past the end of time".to_string())
            })
            .collect()
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
    /// Every node's socklnd traffic written to `pcap/NODE.pcap` in the artifacts (`--capture`).
    #[serde(default)]
    pub capture: bool,
    /// LNet health and Multi-Rail, for every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lnet: Option<LnetSpec>,
    #[serde(skip)]
    pub source: PathBuf,
}

/// LNet health and Multi-Rail parameters of every node (Lustre's module parameters and
/// `lnetctl` settings).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LnetSpec {
    /// Nodes that share several nets know each other as Multi-Rail peers (all their NIDs
    /// there, the first in the peer's `nis` order its primary NID) and choose a path per
    /// message by health, priority, credits and round robin.
    #[serde(default)]
    pub multi_rail: bool,
    /// Multi-Rail peers learned, not configured: each node discovers its peers at start
    /// (`lnetctl discover`: a ping whose answer lists the peer's NIs and says it is Multi-Rail).
    #[serde(default)]
    pub discovery: bool,
    /// `lnet_health_sensitivity` (0..=1000; 0 switches health and resends off; default 100).
    #[serde(default)]
    pub health_sensitivity: Option<u32>,
    /// `lnet_retry_count` (default 2).
    #[serde(default)]
    pub retry_count: Option<u32>,
    /// `lnet_transaction_timeout` (default `50s`).
    #[serde(default)]
    pub transaction_timeout: Option<String>,
    /// `lnet_recovery_interval`: how often NIs below full health are looked at, and the unit of
    /// their pings' backoff (default `1s`).
    #[serde(default)]
    pub recovery_interval: Option<String>,
    /// Selection priority of each net's NIs, lower preferred (`{dma0: 0}`; default lowest).
    #[serde(default)]
    pub priority: BTreeMap<String, u32>,
}
