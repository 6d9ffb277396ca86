//! Golden traces: every node's event trace normalized into the protocol story — node names
//! instead of NIDs, xids renumbered by first appearance, no times — compared with the
//! snapshots in `golden/` (insta's `.snap` format) by `lnetlab golden check`.

use crate::cluster::report::Report;
use crate::cluster::run::{run, RunOpts};
use crate::junit::Case;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One node's trace as the protocol story. `paths`: include LND path counters (they depend on
/// batching, so only deterministic backends can compare them).
pub fn normalize(trace: &str, names: &HashMap<String, String>, paths: bool) -> String {
    // xids are per client: key them by the peer too.
    let mut xids: HashMap<(String, u64), usize> = HashMap::new();
    let mut out = String::new();
    let peer = |v: &Value| -> String {
        let s = v.as_str().unwrap_or("?");
        let nid = s.split_once('-').map(|x| x.1).unwrap_or(s);
        names.get(nid).cloned().unwrap_or_else(|| nid.to_string())
    };
    let status = |v: &Value| -> String {
        match v.as_i64().unwrap_or(0) {
            0 => String::new(),
            e => format!(" status={e}"),
        }
    };
    for line in trace.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        if let Some(ev) = v["ev"].as_str() {
            out += &format!("{ev:<6} {} portal={} len={}{}\n", peer(&v["peer"]), v["portal"], v["mlength"], status(&v["status"]));
        } else if let Some(rpc) = v["rpc"].as_str() {
            let n = xids.len() + 1;
            let x = *xids.entry((v["peer"].as_str().unwrap_or("").to_string(), v["xid"].as_u64().unwrap_or(0))).or_insert(n);
            let who = if v.get("ost").is_some() { format!("ost{}", v["ost"]) } else { format!("from {}", peer(&v["peer"])) };
            let data = v["data"].as_str().map(|d| format!(" data={d}")).unwrap_or_default();
            out += &format!("rpc    {rpc} x{x} {who}{data}{}\n", status(&v["status"]));
        } else if paths {
            if let Some(l) = v["lnd"].as_str() {
                out += &format!("path   {l}.{} +{}\n", v["path"].as_str().unwrap_or("?"), v["n"]);
            }
        }
    }
    out
}

/// Every node's normalized trace, in spec order, with the run's node names.
fn node_stories(art: &Path, paths: bool) -> anyhow::Result<Vec<(String, String)>> {
    let nodes: Vec<(String, Vec<String>)> = serde_json::from_str(&std::fs::read_to_string(art.join("nids.json"))?)?;
    let names: HashMap<String, String> = nodes.iter().flat_map(|(n, nids)| nids.iter().map(move |x| (x.clone(), n.clone()))).collect();
    Ok(nodes.iter().map(|(n, _)| (n.clone(), normalize(&std::fs::read_to_string(art.join("traces").join(format!("{n}.jsonl"))).unwrap_or_default(), &names, paths))).collect())
}

/// The story of a whole run: every node's normalized trace, in spec order; then, for `lnet:`
/// specs, each NI's health at its lowest and at the end, its resends and the bytes it sent
/// after the faults (peer NIs named `node/net`).
pub fn story(report: &Report, paths: bool) -> anyhow::Result<String> {
    let mut s: String = node_stories(Path::new(&report.artifacts), paths)?.iter().map(|(n, t)| format!("## {n}\n{t}")).collect();
    if !report.lnet_health.is_empty() {
        let nodes: Vec<(String, Vec<String>)> = serde_json::from_str(&std::fs::read_to_string(Path::new(&report.artifacts).join("nids.json"))?)?;
        let name = |nid: &str| {
            let node = nodes.iter().find(|(_, nids)| nids.iter().any(|x| x == nid)).map_or("?", |(n, _)| n.as_str());
            let net = nid.parse::<lnd::wire::Nid>().map(|n| n.net().to_string()).unwrap_or_default();
            format!("{node}/{net}")
        };
        s += "## lnet health\n";
        for (node, nis) in &report.lnet_health {
            for ni in nis {
                let peers: Vec<String> = ni.peer_nis.iter().map(|p| format!(" peer {} lowest {} health {}", name(&p.nid), p.health_lowest, p.health)).collect();
                s += &format!("{node} {} lowest {} health {} resent {} after_faults {}{}\n", name(&ni.nid), ni.health_lowest, ni.health, ni.resent, ni.sent_bytes_after_faults.map_or("-".into(), |b| b.to_string()), peers.concat());
            }
        }
    }
    Ok(s)
}

/// Each client's part of a run's story with order ignored, for backends whose clients really
/// run at once (process, Docker): the client's own lines and every other node's lines about it
/// (prefixed `@NODE`; not their send completions), xids dropped, sorted and counted. What each
/// client did and caused is compared; how the clients interleaved is not.
pub fn client_stories(report: &Report) -> anyhow::Result<String> {
    let art = Path::new(&report.artifacts);
    let spec_path = art.join("spec.yaml");
    let text = std::fs::read_to_string(&spec_path).map_err(|e| anyhow::anyhow!("{}: {e}", spec_path.display()))?;
    let spec = crate::cluster::spec::ClusterSpec::parse(&text, &spec_path)?;
    let stories = node_stories(art, false)?;
    let no_xid = |l: &str| l.split(' ').filter(|w| !(w.len() > 1 && w.starts_with('x') && w[1..].bytes().all(|b| b.is_ascii_digit()))).collect::<Vec<_>>().join(" ");
    let mut s = String::new();
    for client in spec.nodes.iter().filter(|n| n.roles.contains(&crate::cluster::spec::Role::Client)).map(|n| &n.name) {
        let mut lines: Vec<String> = Vec::new();
        for (node, story) in &stories {
            for l in story.lines() {
                let words: Vec<&str> = l.split_whitespace().collect();
                if node == client {
                    lines.push(no_xid(l));
                } else if words[0] == "SEND" {
                    // Another node's send completion: what arrived is on the client's own
                    // lines, and the last ones race with teardown.
                } else if words.get(1) == Some(&client.as_str()) || l.contains(&format!(" from {client}")) {
                    lines.push(format!("@{node} {}", no_xid(l)));
                }
            }
        }
        lines.sort();
        s += &format!("## {client}\n");
        let mut i = 0;
        while i < lines.len() {
            let n = lines[i..].iter().take_while(|l| **l == lines[i]).count();
            s += &format!("{n:>4} {}\n", lines[i]);
            i += n;
        }
    }
    Ok(s)
}

/// Runs one scenario and returns its report and story (artifacts under `art`, or a temporary
/// directory that is gone afterwards).
pub fn run_scenario_in(file: &Path, backend: &str, seed: Option<u64>, paths: bool, art: &Path) -> anyhow::Result<(Report, String)> {
    let opts = RunOpts { file: file.to_path_buf(), seed, keep: false, json: true, artifacts: Some(art.to_path_buf()), backend: backend.into(), timeout: Duration::from_secs(120), up_only: None, only: None, capture: false };
    let r = run(&opts)?;
    if !r.ok {
        anyhow::bail!("{}: the run failed: {}", file.display(), r.error.clone().unwrap_or_else(|| format!("{:?}", r.workloads)));
    }
    let s = story(&r, paths)?;
    Ok((r, s))
}

pub fn run_scenario(file: &Path, backend: &str, seed: Option<u64>, paths: bool) -> anyhow::Result<(Report, String)> {
    let art = tempfile::Builder::new().prefix("lnetlab-golden-").tempdir()?;
    run_scenario_in(file, backend, seed, paths, art.path())
}

/// The golden scenarios in `dir`, sorted.
pub fn scenarios(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "yaml")).collect();
    v.sort();
    Ok(v)
}

pub fn snap_name(file: &Path) -> String {
    file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
}

/// The contents of an insta `.snap` file (after its header).
pub fn read_snap(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let rest = t.strip_prefix("---\n")?;
    let (_, body) = rest.split_once("\n---\n")?;
    Some(body.to_string())
}

pub fn write_snap(path: &Path, name: &str, body: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("---\nsource: lnetlab golden\nexpression: {name}\n---\n{body}"))
}

/// A unified diff, golden vs actual.
pub fn diff(golden: &str, actual: &str) -> String {
    similar::TextDiff::from_lines(golden, actual).unified_diff().context_radius(3).header("golden", "actual").to_string()
}

/// `golden check` / `golden accept` over every scenario; returns the number of mismatches (a
/// scenario whose run fails counts as one); each scenario's outcome is added to `cases`.
pub fn check(scenarios_dir: &Path, golden_dir: &Path, accept: bool, out: &mut dyn std::io::Write, cases: &mut Vec<Case>) -> anyhow::Result<usize> {
    let mut bad = 0;
    for f in scenarios(scenarios_dir)? {
        let name = snap_name(&f);
        let t0 = std::time::Instant::now();
        let mut case = |failure: Option<(String, String)>| cases.push(Case { name: name.clone(), classname: "lnetlab.golden".into(), secs: t0.elapsed().as_secs_f64(), failure });
        let s = match run_scenario(&f, "sim", None, true) {
            Ok((_, s)) => s,
            Err(e) if !accept => {
                bad += 1;
                writeln!(out, "FAILED   {name}: {e:#}")?;
                case(Some((format!("{e:#}").lines().next().unwrap_or("").to_string(), format!("{e:#}\nREPRO: lnetlab run {} --backend sim\n", f.display()))));
                continue;
            }
            Err(e) => return Err(e),
        };
        let snap = golden_dir.join(format!("{name}.snap"));
        if accept {
            std::fs::create_dir_all(golden_dir)?;
            write_snap(&snap, &name, &s)?;
            writeln!(out, "accepted {}", snap.display())?;
            continue;
        }
        let repro = format!("REPRO: lnetlab golden check --scenarios {} --golden {}", scenarios_dir.display(), golden_dir.display());
        match read_snap(&snap) {
            Some(g) if g == s => {
                writeln!(out, "ok       {name}")?;
                case(None);
            }
            Some(g) => {
                bad += 1;
                let d = diff(&g, &s);
                writeln!(out, "MISMATCH {name} ({})\n{d}", snap.display())?;
                case(Some((format!("the story differs from {}", snap.display()), format!("{d}\n{repro}\n"))));
            }
            None => {
                bad += 1;
                writeln!(out, "MISSING  {name}: no {} (run `lnetlab golden accept`)", snap.display())?;
                case(Some((format!("no snapshot {}", snap.display()), format!("run `lnetlab golden accept`\n{repro}\n"))));
            }
        }
    }
    Ok(bad)
}
