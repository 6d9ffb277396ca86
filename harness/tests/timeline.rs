//! `lnetlab timeline RUN_DIR` on a faults run: the page holds the run's messages, RPCs and fault
//! windows, and a real browser (headless Chromium, as `.ci/run` installs it) renders it with no
//! script error — the whole run, and filtered.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lnetlab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(args).output().unwrap()
}

/// A faults run on sim (every fault kind the spec has, on virtual time): its artifacts.
fn faults_run(art: &Path) -> PathBuf {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clusters/faults.yaml");
    let o = lnetlab(&["run", spec.to_str().unwrap(), "--backend", "sim", "--seed", "3", "--json", "--artifacts", art.to_str().unwrap()]);
    let r: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(r["ok"], true, "{r}");
    PathBuf::from(r["artifacts"].as_str().unwrap())
}

/// The data the page inlines.
fn data_of(page: &str) -> Value {
    let start = page.find("const DATA = ").unwrap() + "const DATA = ".len();
    let end = start + page[start..].find(";\n").unwrap();
    serde_json::from_str(&page[start..end].replace("<\\/", "</")).unwrap()
}

/// Chromium, headless, on `page` with `query`: (the DOM after the scripts ran, the browser's
/// log), or `None` when Chromium is not installed.
fn chromium(page: &Path, query: &str, extra: &[&str]) -> Option<(String, String)> {
    let bin = ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))?;
    let url = format!("file://{}{query}", page.canonicalize().unwrap().display());
    let o = Command::new(bin).args(["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--window-size=1400,700"]).args(extra).arg(url).output().unwrap();
    assert!(o.status.success(), "chromium failed: {}", String::from_utf8_lossy(&o.stderr));
    Some((String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned()))
}

/// `data-rendered` of the page's body: how many items it drew; panics on a script error.
fn rendered(dom: &str, log: &str) -> usize {
    let body = &dom[dom.find("<body").expect("a body")..];
    let body = &body[..body.find('>').unwrap()];
    assert!(!body.contains("data-error"), "the page reported a script error: {body}");
    for l in log.lines() {
        assert!(!(l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error"))), "console error: {l}");
    }
    let n = body.split("data-rendered=\"").nth(1).unwrap_or_else(|| panic!("the page drew nothing: {body}"));
    n[..n.find('"').unwrap()].parse().unwrap()
}

#[test]
fn a_faults_runs_timeline_renders_in_headless_chromium() {
    let art = tempfile::tempdir().unwrap();
    let dir = faults_run(art.path());
    let o = lnetlab(&["timeline", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page = dir.join("timeline.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let d = data_of(&html);
    assert_eq!(d["lanes"], serde_json::json!(["oss1", "c1", "c2", "c3"]));
    let arrows = d["arrows"].as_array().unwrap();
    let marks = d["marks"].as_array().unwrap();
    let windows = d["windows"].as_array().unwrap();
    assert!(arrows.len() > 100 && arrows.iter().any(|a| a["from"] != a["to"] && a["t1"].as_u64() > a["t0"].as_u64()), "{} arrows", arrows.len());
    // RPCs grouped by xid: some group has the client's line and the server's.
    let mut groups = std::collections::HashMap::<&str, std::collections::HashSet<u64>>::new();
    for m in marks.iter().filter(|m| m["cat"] == "rpc") {
        groups.entry(m["group"].as_str().unwrap()).or_default().insert(m["lane"].as_u64().unwrap());
    }
    assert!(groups.values().filter(|l| l.len() == 2).count() > 20, "RPCs seen on both sides: {groups:?}");
    // The spec's windows on virtual time: pauses, the partition, the device and OSS restarts.
    for what in ["pause oss1", "partition", "device_restart dma0", "restart oss1"] {
        assert!(windows.iter().any(|w| w["what"].as_str().unwrap().starts_with(what) && w["t1"].as_u64() > w["t0"].as_u64()), "no {what} window: {windows:?}");
    }
    assert!(arrows.iter().any(|a| a["status"].as_i64() < Some(0)) || marks.iter().any(|m| m["error"] == true), "a faults run with no error shown");
    assert!(!html.contains("http://") || html.matches("http://").all(|_| html.contains("http://www.w3.org/2000/svg")), "the page links out");

    let Some((dom, log)) = chromium(&page, "", &["--dump-dom"]) else {
        eprintln!("SKIPPED browser check: chromium is not installed (apt-get install chromium); .ci/run installs it");
        return;
    };
    let all = rendered(&dom, &log);
    assert!(all > arrows.len(), "drew {all} items of {} arrows and {} marks", arrows.len(), marks.len());
    let (dom, log) = chromium(&page, "?filter=OST_WRITE", &["--dump-dom"]).unwrap();
    let writes = rendered(&dom, &log);
    assert!(writes > 0 && writes < all / 4, "filter OST_WRITE drew {writes} of {all}");
    let shot = art.path().join("timeline.png");
    let (_, log) = chromium(&page, "", &[&format!("--screenshot={}", shot.display())]).unwrap();
    assert!(!log.contains("Uncaught"), "{log}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "screenshot of {} bytes", png.len());
}

#[test]
fn a_directory_that_is_not_a_run_gets_one_line() {
    let d = tempfile::tempdir().unwrap();
    let o = lnetlab(&["timeline", d.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("not the artifacts of a run (no nids.json)") && err.trim().lines().count() == 1, "{err}");
}
