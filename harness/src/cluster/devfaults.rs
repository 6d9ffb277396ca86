//! The spec's DMA device faults: the injector settings of each fabric's device (as `dmadev`
//! arguments or an in-process config) and the faults devices report in their logs.

use super::plan::Plan;
use super::spec::{parse_duration, FaultKind};
use std::collections::BTreeMap;
use std::path::Path;

/// The device faults the spec asks of DMA net `net` (None: a clean device).
pub fn device_config(plan: &Plan, net: &str) -> Option<lnd::dev::engine::FaultConfig> {
    let mut cfg = lnd::dev::engine::FaultConfig::default();
    for f in plan.spec.faults.iter().filter(|f| f.kind.is_device() && f.net.as_deref() == Some(net)) {
        let rate = f.rate.unwrap_or(0);
        match f.kind {
            FaultKind::DmaCorrupt => cfg.corrupt = rate,
            FaultKind::DmaTxfail => cfg.txfail = rate,
            FaultKind::DmaPullfail => cfg.pullfail = rate,
            FaultKind::DmaMailbox => cfg.mailbox = rate,
            FaultKind::DmaLost => cfg.lost = rate,
            FaultKind::DmaLate => {
                cfg.late = rate;
                cfg.late_ms = f.latency.as_deref().and_then(|l| parse_duration(l).ok()).map_or(1, |d| d.as_millis() as u64);
            }
            _ => {}
        }
    }
    (cfg != Default::default()).then_some(cfg)
}

/// `dmadev` arguments for net `net`'s faults.
pub fn dmadev_args(plan: &Plan, net: &str) -> Vec<String> {
    match device_config(plan, net) {
        Some(cfg) => vec!["--faults".into(), serde_json::to_string(&cfg).expect("plain struct"), "--seed".into(), plan.seed.to_string()],
        None => Vec::new(),
    }
}

/// Where device `name` (`plan.device_name`) writes its statistics, in the artifacts directory.
pub fn stats_file(name: &str) -> String {
    format!("dmadev-{name}{STATS_SUFFIX}")
}
const STATS_SUFFIX: &str = ".stats.json";

/// The devices' files in `art` ending in `suffix` (`dmadev-NAME.log`, `dmadev-NAME.stats.json`).
fn device_files(art: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(art).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("dmadev-") && name.ends_with(suffix) {
            out.push(e.path());
        }
    }
    out
}

/// What crossed the fabric links, summed over the devices' statistics files in `art`
/// (`dmadev-*.stats.json`, hosts' devices only): pulls and their bytes (counted where the
/// puller is), SMSGs, and links lost. Empty for a run on one machine.
pub fn link_counts(art: &Path) -> BTreeMap<String, u64> {
    let mut n = BTreeMap::new();
    for f in device_files(art, STATS_SUFFIX) {
        let Some(v) = std::fs::read(f).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()) else { continue };
        for (k, field) in [("pulls", "link_pulls"), ("bytes", "link_bytes"), ("smsgs", "link_smsgs"), ("links_lost", "link_downs")] {
            *n.entry(k.to_string()).or_default() += v[field].as_u64().unwrap_or(0);
        }
    }
    n
}

/// Device faults counted from the `dmadev-*.log` files in `art` (lines `fault: KIND ...`).
pub fn device_counts_from_logs(art: &Path) -> BTreeMap<String, u64> {
    let mut n = BTreeMap::new();
    for f in device_files(art, ".log") {
        for l in std::fs::read_to_string(f).unwrap_or_default().lines() {
            if let Some(k) = l.split("fault: ").nth(1).and_then(|r| r.split_whitespace().next()) {
                *n.entry(k.to_string()).or_default() += 1;
            }
        }
    }
    n
}
