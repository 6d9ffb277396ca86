//! What a run reports: per-workload results, the run's totals and faults, the summary table,
//! and where its artifacts go.

use super::spec::ClusterSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub name: String,
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub rpcs: u64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    #[serde(default)]
    pub resends: u64,
    /// Times clients connected again after a server lost their export (it restarted).
    #[serde(default)]
    pub reconnects: u64,
    /// Requests clients replayed to a recovering OSS (what a crash had lost).
    #[serde(default)]
    pub replays: u64,
    /// Early replies clients received: a busy OSS moved an RPC's deadline out.
    #[serde(default)]
    pub early_replies: u64,
    #[serde(default)]
    pub lost_acked_writes: u64,
    #[serde(default)]
    pub silent_corruptions: u64,
    /// For selftests: rates and latency percentiles (the slowest client's percentiles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selftest: Option<Value>,
    /// For io: the objects each client used, by client (for a later `read_back`).
    #[serde(skip)]
    pub objects: std::collections::BTreeMap<String, Value>,
    /// For io: the chunks each client was told it wrote, by client (a later `read_back` counts
    /// one that does not read back as a lost acknowledged write).
    #[serde(skip)]
    pub acked: std::collections::BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub cluster: String,
    pub backend: String,
    pub seed: u64,
    pub ok: bool,
    pub workloads: Vec<WorkloadReport>,
    pub artifacts: String,
    /// Faults injected (messages dropped or delayed by LNet rules, device faults, pauses and
    /// partitions)...
    pub faults_injected: u64,
    /// ...by kind.
    pub faults: std::collections::BTreeMap<String, u64>,
    /// Spec faults this backend cannot inject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults_skipped: Vec<String>,
    /// RPCs the clients had to send again.
    pub resends: u64,
    /// Times clients connected again after a server restart.
    pub reconnects: u64,
    /// Requests clients replayed after an OSS crash or restart (recovery).
    pub replays: u64,
    /// Early replies clients received (adaptive timeouts: a busy OSS asked for more time).
    #[serde(default)]
    pub early_replies: u64,
    /// Acknowledged writes (chunks, by whichever workload wrote them) that did not read back.
    pub lost_acked_writes: u64,
    /// Of those, the chunks that read back as damaged data (not the old bytes a lost write
    /// leaves) that passed its checksum.
    pub silent_corruptions: u64,
    /// Objects on the OSTs at the end that no client knows (a second object made for a resent
    /// CREATE, say): leaked space.
    pub orphan_objects: u64,
    /// LNet health and Multi-Rail (`lnet:` specs): each NI of each node with several.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub lnet_health: std::collections::BTreeMap<String, Vec<NiHealth>>,
    /// A fabric across hosts: what crossed the links between their devices (pulls and bytes,
    /// counted at the puller's device; SMSGs; links lost).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fabric_links: std::collections::BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_s: f64,
    /// On virtual time: how much of it the run took (bring-up to teardown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_s: Option<f64>,
    /// On virtual time: a hash of every node trace, equal for every replay of the seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_hash: Option<String>,
}

/// A hash of the run's traces (`traces/*.jsonl`, by name): two runs that did the same things in
/// the same order have the same hash.
pub fn trace_hash(art: &Path) -> std::io::Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(art.join("traces"))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect();
    files.sort();
    // FNV-1a over names and contents: stable across builds and machines.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        for b in f.file_name().unwrap_or_default().as_encoded_bytes().iter().chain(std::fs::read(&f)?.iter()) {
            h = (h ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    Ok(format!("{h:016x}"))
}

/// Creates the artifacts directory of a run of `spec` with `seed` (under `base`, default
/// `target/lnetlab/runs`): `NAME-UTC-SEED`, with `-2`, `-3`... when another run of the same
/// second and seed has it already (creating it is what claims the name).
pub fn artifacts_dir(spec: &ClusterSpec, seed: u64, base: Option<&Path>) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let utc = utc_stamp(secs);
    let base = base.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target/lnetlab/runs"));
    std::fs::create_dir_all(&base).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", base.display())))?;
    for k in 1u32.. {
        let name = if k == 1 { format!("{}-{utc}-{seed}", spec.name) } else { format!("{}-{utc}-{seed}-{k}", spec.name) };
        match std::fs::create_dir(base.join(&name)) {
            Ok(()) => {
                point_latest(&base, &name);
                return Ok(base.join(name));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", base.join(name).display()))),
        }
    }
    unreachable!("some suffix is free")
}

/// `base/latest` → `name` (relative, replaced atomically; a failure only costs the link).
fn point_latest(base: &Path, name: &str) {
    let tmp = base.join(format!(".latest-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::os::unix::fs::symlink(name, &tmp).is_ok() && std::fs::rename(&tmp, base.join("latest")).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the Unix epoch (UTC, proleptic Gregorian).
pub fn utc_stamp(secs: u64) -> String {
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

impl Report {
    /// A report not yet run: no workloads, not ok.
    pub fn new(cluster: &str, backend: &str, seed: u64, artifacts: &Path) -> Report {
        Report { cluster: cluster.to_string(), backend: backend.to_string(), seed, ok: false, workloads: Vec::new(), artifacts: artifacts.display().to_string(), faults_injected: 0, faults: Default::default(), faults_skipped: Vec::new(), resends: 0, reconnects: 0, replays: 0, early_replies: 0, lost_acked_writes: 0, silent_corruptions: 0, orphan_objects: 0, lnet_health: Default::default(), fabric_links: Default::default(), error: None, elapsed_s: 0.0, virtual_s: None, trace_hash: None }
    }

    /// Totals from the workloads, `ok` unless `error` or a workload's errors or unverified
    /// bytes say otherwise, and the time since `t0`.
    pub fn finish(&mut self, error: Option<String>, t0: std::time::Instant) {
        self.resends = self.workloads.iter().map(|w| w.resends).sum();
        self.reconnects = self.workloads.iter().map(|w| w.reconnects).sum();
        self.lost_acked_writes = self.workloads.iter().map(|w| w.lost_acked_writes).sum();
        self.silent_corruptions = self.workloads.iter().map(|w| w.silent_corruptions).sum();
        self.ok = error.is_none() && self.workloads.iter().all(|w| w.errors == 0 && w.bytes_verified >= w.bytes_written);
        self.error = error;
        self.elapsed_s = t0.elapsed().as_secs_f64();
    }
}

/// The human summary printed at the end of a run.
pub fn table(r: &Report) -> String {
    let mut s = format!("{:<20} {:>14} {:>14} {:>8} {:>7}\n", "workload", "written", "verified", "rpcs", "errors");
    for w in &r.workloads {
        s += &format!("{:<20} {:>14} {:>14} {:>8} {:>7}\n", w.name, w.bytes_written, w.bytes_verified, w.rpcs, w.errors);
        for m in &w.messages {
            s += &format!("    ! {m}\n");
        }
    }
    s += &format!("cluster {} ({} backend, seed {}): {} in {:.1}s; artifacts {}\n", r.cluster, r.backend, r.seed, if r.ok { "OK" } else { "FAILED" }, r.elapsed_s, r.artifacts);
    if let Some(e) = &r.error {
        s += &format!("error: {e}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamps_match_known_dates() {
        assert_eq!(super::utc_stamp(0), "19700101T000000Z");
        assert_eq!(super::utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(super::utc_stamp(1_796_409_211), "20261204T183331Z");
        assert_eq!(super::utc_stamp(4_102_444_799), "20991231T235959Z");
    }
}

/// One NI of a node, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NiHealth {
    pub nid: String,
    /// `health value` now, and the lowest it fell to during the run.
    pub health: u64,
    pub health_lowest: u64,
    /// Times it went onto the recovery queue.
    pub recoveries: u64,
    pub sent: u64,
    /// Messages LNet sent again over this NI after a failure on another path.
    pub resent: u64,
    pub received: u64,
    pub sent_bytes: u64,
    /// Payload bytes it sent after the last fault window closed (None without faults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_bytes_after_faults: Option<u64>,
    /// Peer NIs reached through it whose health fell: their health now and at the lowest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_nis: Vec<PeerNiHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNiHealth {
    pub nid: String,
    pub health: u64,
    pub health_lowest: u64,
}
