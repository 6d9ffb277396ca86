//! `lnetlab runs`: the past runs in an artifacts directory, newest first, each with its result
//! (ok, failed, or unfinished: no report yet), seed, backend and REPRO line.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunEntry {
    pub name: String,
    pub dir: String,
    /// `ok`, `failed` or `unfinished` (no report.json: still running, or killed).
    pub result: String,
    pub cluster: Option<String>,
    pub seed: Option<u64>,
    pub backend: Option<String>,
    pub error: Option<String>,
    pub repro: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    /// The artifacts directory (default target/lnetlab/runs).
    #[arg(long)]
    pub artifacts: Option<std::path::PathBuf>,
    /// One JSON array instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What `lnetlab runs` prints.
pub fn show(a: &RunsArgs) -> Result<String, String> {
    let base = a.artifacts.clone().unwrap_or_else(|| "target/lnetlab/runs".into());
    let runs = list(&base).map_err(|e| format!("{}: {e}", base.display()))?;
    Ok(if a.json { serde_json::to_string(&runs).unwrap_or_default() + "\n" } else { table(&runs) })
}

/// The runs under `base` (directories with a REPRO or report.json), newest first.
pub fn list(base: &Path) -> std::io::Result<Vec<RunEntry>> {
    let mut runs: Vec<(std::time::SystemTime, RunEntry)> = Vec::new();
    for e in std::fs::read_dir(base)?.flatten() {
        let p = e.path();
        // `latest` is a link to one of them.
        if e.file_type().map(|t| !t.is_dir()).unwrap_or(true) || !(p.join("REPRO").is_file() || p.join("report.json").is_file()) {
            continue;
        }
        let report: Option<serde_json::Value> = std::fs::read_to_string(p.join("report.json")).ok().and_then(|t| serde_json::from_str(&t).ok());
        let repro = std::fs::read_to_string(p.join("REPRO")).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let r = report.as_ref();
        let result = match r.map(|r| r["ok"] == true) {
            Some(true) => "ok",
            Some(false) => "failed",
            None => "unfinished",
        };
        let seed = r.and_then(|r| r["seed"].as_u64()).or_else(|| repro.as_deref().and_then(|s| s.split_whitespace().skip_while(|w| *w != "--seed").nth(1)?.parse().ok()));
        let entry = RunEntry {
            name: e.file_name().to_string_lossy().into_owned(),
            dir: p.display().to_string(),
            result: result.into(),
            cluster: r.and_then(|r| r["cluster"].as_str().map(String::from)),
            seed,
            backend: r.and_then(|r| r["backend"].as_str().map(String::from)),
            error: r.and_then(|r| r["error"].as_str().map(|s| s.lines().next().unwrap_or("").to_string())),
            repro,
        };
        let t = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        runs.push((t, entry));
    }
    runs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.name.cmp(&a.1.name)));
    Ok(runs.into_iter().map(|x| x.1).collect())
}

/// One line per run: name, result, seed, and the REPRO of failed ones (the error below it).
pub fn table(runs: &[RunEntry]) -> String {
    let mut s = String::new();
    for r in runs {
        let seed = r.seed.map_or("-".into(), |x| x.to_string());
        s += &format!("{:<44} {:<10} seed {:<20} {}\n", r.name, r.result, seed, r.repro.as_deref().unwrap_or("-"));
        if let Some(e) = r.error.as_deref().filter(|_| r.result == "failed") {
            s += &format!("    error: {e}\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_listed_with_their_result_seed_and_repro() {
        let d = tempfile::tempdir().unwrap();
        let mk = |name: &str, report: Option<&str>| {
            let p = d.path().join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("REPRO"), format!("lnetlab run x.yaml --seed 9 --backend sim --keep\n")).unwrap();
            if let Some(r) = report {
                std::fs::write(p.join("report.json"), r).unwrap();
            }
        };
        mk("a-1", Some(r#"{"ok": true, "seed": 9, "cluster": "a", "backend": "sim"}"#));
        mk("b-2", Some(r#"{"ok": false, "seed": 9, "error": "workload `w`: stalled\n  more"}"#));
        mk("c-3", None);
        std::fs::create_dir(d.path().join("not-a-run")).unwrap();
        std::os::unix::fs::symlink("a-1", d.path().join("latest")).unwrap();
        let mut runs = list(d.path()).unwrap();
        runs.sort_by(|a, b| a.name.cmp(&b.name));
        let got: Vec<(&str, &str, Option<u64>)> = runs.iter().map(|r| (r.name.as_str(), r.result.as_str(), r.seed)).collect();
        assert_eq!(got, [("a-1", "ok", Some(9)), ("b-2", "failed", Some(9)), ("c-3", "unfinished", Some(9))]);
        let t = table(&runs);
        assert!(t.contains("error: workload `w`: stalled\n") && !t.contains("more"), "{t}");
        assert!(t.contains("lnetlab run x.yaml --seed 9"), "{t}");
    }
}
