//! Issue 14: a DMA fabric across two emulated hosts on the process backend — one `dmadev` per
//! host, linked over loopback TCP with the run's token. Every byte verified, pulls counted as
//! crossing the link; a `fabric_link` cut mid-run loses nothing; the token is in no artifact.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

const TOKEN: &str = "two-hosts-test-token-5d1c0b9e8f";

/// Runs `spec` with the run's token set; returns the report and the artifacts directory.
fn run(spec: &str, art: &Path) -> (serde_json::Value, PathBuf) {
    let out = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
        .args(["run", root().join(spec).to_str().unwrap(), "--json", "--seed", "3", "--timeout", "120", "--artifacts", art.to_str().unwrap()])
        .env("LNETLAB_CONTROL_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{spec}: no report ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["ok"], true, "{spec}: {r}\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = PathBuf::from(r["artifacts"].as_str().unwrap());
    (r, dir)
}

/// Every file under `dir`, for a string nobody may find there.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())) {
            hits.push(p);
        }
    }
    hits
}

fn check_bytes(r: &serde_json::Value, want: u64) {
    let w = &r["workloads"][0];
    assert_eq!((w["bytes_written"].as_u64(), w["bytes_verified"].as_u64(), w["errors"].as_u64()), (Some(want), Some(want), Some(0)), "{r}");
    assert_eq!((r["lost_acked_writes"].as_u64(), r["silent_corruptions"].as_u64()), (Some(0), Some(0)), "{r}");
}

#[test]
fn the_quickstart_split_over_two_hosts_pulls_across_the_link() {
    let art = tempfile::tempdir().unwrap();
    let (r, dir) = run("clusters/two-hosts.yaml", art.path());
    check_bytes(&r, 3 * 4 * (8 << 20));
    // c1 and c2 write 64 MiB the OSS pulls from the other host, and pull it back to read it.
    let l = &r["fabric_links"];
    assert!(l["bytes"].as_u64().unwrap() >= 2 * 2 * 4 * (8 << 20), "{l}");
    assert!(l["pulls"].as_u64().unwrap() >= 2 * 2 * 4 * 8, "{l}");
    assert!(l["smsgs"].as_u64().unwrap() > 0, "{l}");
    assert_eq!(l["links_lost"], 0, "{l}");
    for host in ["storage", "compute"] {
        assert!(dir.join(format!("dmadev-dma0-{host}.log")).exists(), "one device per host");
    }
    assert_eq!(files_containing(art.path(), TOKEN), Vec::<PathBuf>::new(), "the run's token leaked into artifacts");
}

#[test]
fn a_fabric_link_cut_mid_run_loses_nothing() {
    let art = tempfile::tempdir().unwrap();
    let (r, dir) = run("clusters/two-hosts-link-cut.yaml", art.path());
    check_bytes(&r, 3 * 4 * (16 << 20));
    assert_eq!(r["faults"]["fabric_link"], 1, "{r}");
    assert!(r["fabric_links"]["links_lost"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["resends"].as_u64().unwrap() + r["reconnects"].as_u64().unwrap() > 0, "nothing crossed the cut: {r}");
    let log = std::fs::read_to_string(dir.join("dmadev-dma0-storage.log")).unwrap();
    assert!(log.contains("fabric link down") && log.matches("fabric link up").count() >= 2, "the link did not go and come back:\n{log}");
    assert_eq!(files_containing(art.path(), TOKEN), Vec::<PathBuf>::new(), "the run's token leaked into artifacts");
}
