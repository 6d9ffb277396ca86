//! `lnetlab shrink`: a failing run made small. Faults, workloads, clients and nodes are removed,
//! fault windows shortened and workload sizes halved, one step at a time, keeping every step
//! after which the run (same seed, same backend) still fails — proptest's shrinking, for clusters.

use super::child::{failure, run_one};
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ShrinkOpts {
    pub spec: PathBuf,
    pub seed: u64,
    pub backend: String,
    /// Where `shrunk.yaml` and its REPRO go.
    pub out: PathBuf,
    pub timeout: Duration,
    /// At most this many trial runs.
    pub max_runs: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Shrunk {
    pub spec: String,
    pub repro: String,
    pub runs: usize,
    pub steps: Vec<String>,
    pub faults: usize,
    pub nodes: usize,
    pub workloads: usize,
    /// Why the shrunk spec fails.
    pub failure: String,
}

/// The seed and backend of a run directory, from its REPRO line (`lnetlab run F --seed S --backend B`).
pub fn from_run_dir(dir: &Path) -> anyhow::Result<(PathBuf, u64, String)> {
    let repro = std::fs::read_to_string(dir.join("REPRO")).map_err(|e| anyhow::anyhow!("{}: not a run directory (no REPRO: {e})", dir.display()))?;
    let words: Vec<&str> = repro.split_whitespace().collect();
    let after = |flag: &str| words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1)).copied();
    let seed = after("--seed").and_then(|s| s.parse().ok()).ok_or_else(|| anyhow::anyhow!("{}/REPRO names no --seed", dir.display()))?;
    let backend = after("--backend").unwrap_or("process").to_string();
    let spec = dir.join("spec.yaml");
    if !spec.exists() {
        anyhow::bail!("{}: no spec.yaml", dir.display());
    }
    Ok((spec, seed, backend))
}

fn seq<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Vec<Value>> {
    v.get_mut(key)?.as_sequence_mut()
}

fn names_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(xs) => xs.iter().for_each(|x| names_in(x, out)),
        Value::Mapping(m) => m.values().for_each(|x| names_in(x, out)),
        _ => {}
    }
}

/// Halves a size written as `8MiB`, `512KiB` or a number (None when already at 64 KiB).
fn halve_size(s: &Value) -> Option<Value> {
    let bytes = match s {
        Value::Number(n) => n.as_u64()?,
        Value::String(t) => lnd::daemon::parse_size(t).ok()?,
        _ => return None,
    };
    (bytes >= 128 << 10).then(|| Value::String(format!("{}KiB", bytes / 2 >> 10)))
}

/// Every one-step smaller variant of `spec`, most promising first, each with what it did.
fn candidates(spec: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let nfaults = count(spec, "faults");
    for k in 0..nfaults {
        let mut c = spec.clone();
        let f = seq(&mut c, "faults").unwrap().remove(k);
        out.push((format!("remove fault {} ({})", k + 1, f.get("kind").and_then(Value::as_str).unwrap_or("?")), c));
    }
    let workloads = spec.get("workloads").and_then(Value::as_sequence).cloned().unwrap_or_default();
    if workloads.len() > 1 {
        for k in 0..workloads.len() {
            let mut c = spec.clone();
            seq(&mut c, "workloads").unwrap().remove(k);
            out.push((format!("remove workload {}", workloads[k].get("name").and_then(Value::as_str).unwrap_or("?")), c));
        }
    }
    for (k, w) in workloads.iter().enumerate() {
        let wname = w.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        for key in ["clients", "from"] {
            let n = w.get(key).and_then(Value::as_sequence).map_or(0, Vec::len);
            for j in 0..if n > 1 { n } else { 0 } {
                let mut c = spec.clone();
                let gone = seq(&mut c["workloads"][k], key).unwrap().remove(j);
                out.push((format!("workload {wname}: drop {}", gone.as_str().unwrap_or("?")), c));
            }
        }
        for key in ["size", "stripe_size"] {
            if let Some(h) = w.get(key).and_then(halve_size) {
                let mut c = spec.clone();
                c["workloads"][k][key] = h.clone();
                out.push((format!("workload {wname}: {key} {}", h.as_str().unwrap_or("?")), c));
            }
        }
        for key in ["files", "inflight", "count", "concurrency", "stripe_count"] {
            if let Some(n) = w.get(key).and_then(Value::as_u64).filter(|n| *n > 1) {
                let mut c = spec.clone();
                c["workloads"][k][key] = Value::from(n / 2);
                out.push((format!("workload {wname}: {key} {}", n / 2), c));
            }
        }
    }
    for k in 0..nfaults {
        let f = &spec["faults"][k];
        if let Some(n) = f.get("count").and_then(Value::as_u64).filter(|n| *n > 1) {
            let mut c = spec.clone();
            c["faults"][k]["count"] = Value::from(n / 2);
            out.push((format!("fault {}: count {}", k + 1, n / 2), c));
        }
    }
    // Nodes nothing names any more (no workload, fault, route or target of another node).
    let nodes = spec.get("nodes").and_then(Value::as_sequence).cloned().unwrap_or_default();
    for (k, n) in nodes.iter().enumerate() {
        let name = n.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let mut rest = spec.clone();
        seq(&mut rest, "nodes").unwrap().remove(k);
        let mut named = Vec::new();
        names_in(&rest, &mut named);
        if !named.contains(&name) {
            out.push((format!("remove node {name}"), rest));
        }
    }
    out
}

fn count(spec: &Value, key: &str) -> usize {
    spec.get(key).and_then(Value::as_sequence).map_or(0, Vec::len)
}

/// Shrinks a failing spec; errors if it does not fail to begin with.
pub fn shrink(o: &ShrinkOpts, say: &dyn Fn(&str)) -> anyhow::Result<Shrunk> {
    let text = std::fs::read_to_string(&o.spec).map_err(|e| anyhow::anyhow!("{}: {e}", o.spec.display()))?;
    let mut spec: Value = serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", o.spec.display()))?;
    std::fs::create_dir_all(&o.out)?;
    let work = tempfile::Builder::new().prefix("lnetlab-shrink-").tempdir()?;
    let mut runs = 0;
    // Does `cand` still fail (a report that says not ok: an invalid spec or a crash does not count)?
    let fails = |cand: &Value, runs: &mut usize| -> anyhow::Result<Option<String>> {
        *runs += 1;
        let p = work.path().join("candidate.yaml");
        std::fs::write(&p, serde_yaml_ng::to_string(cand)?)?;
        Ok(run_one(&p, o.seed, &o.backend, &work.path().join("runs"), o.timeout, &[]).ok().and_then(|r| failure(&r)))
    };
    let mut why = fails(&spec, &mut runs)?.ok_or_else(|| anyhow::anyhow!("{} with seed {} on {} does not fail: nothing to shrink", o.spec.display(), o.seed, o.backend))?;
    say(&format!("fails as given: {why}"));
    let mut steps = Vec::new();
    'outer: while runs < o.max_runs {
        for (what, cand) in candidates(&spec) {
            if runs >= o.max_runs || crate::interrupt::interrupted() {
                break 'outer;
            }
            if let Some(w) = fails(&cand, &mut runs)? {
                say(&format!("still fails after: {what}"));
                steps.push(what);
                spec = cand;
                why = w;
                continue 'outer;
            }
        }
        break;
    }
    if let Value::Mapping(m) = &mut spec {
        let name = m.get("name").and_then(Value::as_str).unwrap_or("cluster").to_string();
        m.insert(Value::from("name"), Value::from(format!("{name}-shrunk")));
    }
    let out = o.out.join("shrunk.yaml");
    // A failure may say several lines (a stalled run names what each client waits for).
    let said = why.lines().collect::<Vec<_>>().join("\n#   ");
    let header = format!("# shrunk by lnetlab shrink from {} (seed {}, backend {}): {} steps, {} runs\n# fails with: {said}\n", o.spec.display(), o.seed, o.backend, steps.len(), runs);
    std::fs::write(&out, header + &serde_yaml_ng::to_string(&spec)?)?;
    let repro = format!("lnetlab run {} --seed {} --backend {} --keep", out.display(), o.seed, o.backend);
    std::fs::write(o.out.join("shrunk.REPRO"), format!("{repro}\n"))?;
    Ok(Shrunk { spec: out.display().to_string(), repro, runs, steps, faults: count(&spec, "faults"), nodes: count(&spec, "nodes"), workloads: count(&spec, "workloads"), failure: why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_remove_and_halve_but_keep_named_nodes() {
        let spec: Value = serde_yaml_ng::from_str("name: x\nnodes:\n  - {name: oss1}\n  - {name: c1}\n  - {name: c2}\nworkloads:\n  - {name: io1, clients: [c1], size: 4MiB, files: 3}\nfaults:\n  - {kind: pause, node: oss1, count: 4}\n").unwrap();
        let what: Vec<String> = candidates(&spec).into_iter().map(|c| c.0).collect();
        assert!(what.contains(&"remove fault 1 (pause)".to_string()), "{what:?}");
        assert!(what.contains(&"workload io1: size 2048KiB".to_string()), "{what:?}");
        assert!(what.contains(&"workload io1: files 1".to_string()), "{what:?}");
        assert!(what.contains(&"fault 1: count 2".to_string()), "{what:?}");
        assert!(what.contains(&"remove node c2".to_string()), "{what:?}");
        assert!(!what.iter().any(|w| w == "remove node c1" || w == "remove node oss1"), "{what:?}");
        assert!(!what.iter().any(|w| w.starts_with("remove workload")), "the last workload stays: {what:?}");
    }

    #[test]
    fn sizes_halve_down_to_64k() {
        assert_eq!(halve_size(&Value::from("1MiB")), Some(Value::from("512KiB")));
        assert_eq!(halve_size(&Value::from("64KiB")), None);
    }
}
