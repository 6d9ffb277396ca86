//! Two io workloads on the same clients in one run: one writes, the other reads back and
//! verifies (`read_back`), on the process and sim backends. Before issue 20 the second job's
//! xids repeated the first's (both started at `seed << 20`) and the OSS answered its CONNECT,
//! WRITEs and READs from its reply cache with the first job's replies: the read-back failed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(backend: &str) {
    let art = tempfile::tempdir().unwrap();
    let spec = root().join("clusters/two-jobs.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
        .args(["run", spec.to_str().unwrap(), "--json", "--seed", "9", "--backend", backend, "--artifacts", art.path().to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{backend}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(r["ok"], true, "{backend}: {r}");
    let total = 2 * 2 * (3u64 << 20);
    let (w, rb) = (&r["workloads"][0], &r["workloads"][1]);
    assert_eq!((w["name"].as_str(), w["bytes_written"].as_u64(), w["errors"].as_u64()), (Some("write"), Some(total), Some(0)), "{r}");
    assert_eq!((rb["name"].as_str(), rb["bytes_written"].as_u64(), rb["bytes_verified"].as_u64(), rb["errors"].as_u64()), (Some("read-back"), Some(0), Some(total), Some(0)), "{r}");
}

#[test]
fn a_second_workload_reads_back_what_the_first_wrote_on_the_same_clients() {
    run("process");
    run("sim");
}
