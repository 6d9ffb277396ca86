//! What a run reports: per-workload results, the run's totals and faults, the summary table,
//! and where its artifacts go.

use super::spec::ClusterSpec;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadReport {
    pub name: String,
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub rpcs: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    #[serde(default)]
    pub resends: u64,
    /// Times clients connected again after a server lost their export (it restarted).
    #[serde(default)]
    pub reconnects: u64,
    /// Requests clients replayed to a recovering OSS (what a crash had lost).
    #[serde(default)]
    pub replays: u64,
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
}

#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults_skipped: Vec<String>,
    /// RPCs the clients had to send again.
    pub resends: u64,
    /// Times clients connected again after a server restart.
    pub reconnects: u64,
    /// Requests clients replayed after an OSS crash or restart (recovery).
    pub replays: u64,
    /// Acknowledged writes that did not read back.
    pub lost_acked_writes: u64,
    /// Wrong data that passed its checksum.
    pub silent_corruptions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_s: f64,
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
    let utc = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let base = base.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target/lnetlab/runs"));
    std::fs::create_dir_all(&base).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", base.display())))?;
    for k in 1u32.. {
        let name = if k == 1 { format!("{}-{utc}-{seed}", spec.name) } else { format!("{}-{utc}-{seed}-{k}", spec.name) };
        match std::fs::create_dir(base.join(&name)) {
            Ok(()) => return Ok(base.join(name)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", base.join(name).display()))),
        }
    }
    unreachable!("some suffix is free")
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
