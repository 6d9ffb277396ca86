//! JUnit XML for CI (`--junit FILE` on `run`, `hunt` and `golden check`): one test case per
//! workload, seed or scenario; a failure carries its message and the REPRO line.

use crate::cluster::report::Report;
use crate::hunt::seeds::HuntSummary;
use std::path::Path;

/// One test case: `failure` is (message, details).
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub name: String,
    pub classname: String,
    pub secs: f64,
    pub failure: Option<(String, String)>,
}

/// Text as XML character data or attribute value: markup escaped, characters XML 1.0 cannot
/// carry (most control characters) dropped.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => o.push(c),
        }
    }
    o
}

/// The XML of one suite `name` holding `cases`.
pub fn xml(name: &str, cases: &[Case]) -> String {
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let secs: f64 = cases.iter().map(|c| c.secs).sum();
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"lnetlab\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{secs:.3}\">\n", cases.len());
    s += &format!("  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{secs:.3}\">\n", esc(name), cases.len());
    for c in cases {
        s += &format!("    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"", esc(&c.name), esc(&c.classname), c.secs);
        match &c.failure {
            None => s += "/>\n",
            Some((msg, body)) => s += &format!(">\n      <failure message=\"{}\" type=\"failure\">{}</failure>\n    </testcase>\n", esc(msg), esc(body)),
        }
    }
    s + "  </testsuite>\n</testsuites>\n"
}

/// Writes the suite to `path`.
pub fn write(path: &Path, name: &str, cases: &[Case]) -> std::io::Result<()> {
    std::fs::write(path, xml(name, cases)).map_err(|e| std::io::Error::new(e.kind(), format!("--junit {}: {e}", path.display())))
}

/// `run`: one case per workload of the spec (`workloads`, in order), failed when the workload
/// had errors or unverified bytes, or did not run because the run failed first; a run without
/// workloads is one case.
pub fn run_cases(r: &Report, workloads: &[String], repro: &str) -> Vec<Case> {
    let class = format!("lnetlab.run.{}", r.cluster);
    let body = |msg: &str| format!("{msg}\nartifacts: {}\nREPRO: {repro}\n", r.artifacts);
    let mut cases = Vec::new();
    let names: Vec<String> = if workloads.is_empty() { vec!["bring-up".into()] } else { workloads.to_vec() };
    for n in &names {
        let w = r.workloads.iter().find(|w| &w.name == n);
        let failure = match w {
            Some(w) if w.errors > 0 || w.bytes_verified < w.bytes_written => {
                let msg = format!("workload `{n}`: {} errors, {} of {} bytes verified{}", w.errors, w.bytes_verified, w.bytes_written, w.messages.first().map(|m| format!(": {m}")).unwrap_or_default());
                Some(body(&msg))
            }
            Some(_) => None,
            None if r.ok && workloads.is_empty() => None,
            None => Some(body(&format!("workload `{n}` did not finish: {}", r.error.as_deref().unwrap_or("the run failed before it")))),
        };
        let secs = if Some(n) == names.first() { r.elapsed_s } else { 0.0 };
        cases.push(Case { name: n.clone(), classname: class.clone(), secs, failure: failure.map(|b| (b.lines().next().unwrap_or("").to_string(), b)) });
    }
    // A run whose workloads all passed can still fail (a fault window, determinism): say so on
    // its last case.
    if !r.ok && cases.iter().all(|c| c.failure.is_none()) {
        let b = body(&format!("the run failed: {}", r.error.as_deref().unwrap_or("see report.json")));
        cases.last_mut().expect("at least one case").failure = Some((b.lines().next().unwrap_or("").to_string(), b));
    }
    cases
}

/// Writes `run`'s JUnit file: the workloads are those of the run's spec (of kind `only`).
pub fn write_run(path: &Path, r: &Report, opts: &crate::cluster::run::RunOpts, repro: &str) -> std::io::Result<()> {
    let spec = crate::cluster::spec::ClusterSpec::load(&opts.file).ok();
    let names: Vec<String> = spec.iter().flat_map(|s| s.workloads.iter()).filter(|w| opts.only.is_none_or(|k| w.kind == k)).map(|w| w.name.clone()).collect();
    write(path, &format!("run {}", r.cluster), &run_cases(r, &names, repro))
}

/// `hunt`: one case per seed.
pub fn hunt_cases(s: &HuntSummary) -> Vec<Case> {
    s.results
        .iter()
        .map(|r| {
            let failure = (!r.ok).then(|| {
                let msg = r.error.clone().unwrap_or_else(|| "failed".into());
                let mut body = format!("{msg}\n");
                if let Some(sp) = &r.spec {
                    body += &format!("spec: {sp}\n");
                }
                for l in &r.repro {
                    body += &format!("REPRO: {l}\n");
                }
                (msg.lines().next().unwrap_or("").to_string(), body)
            });
            Case { name: format!("seed {}", r.seed), classname: format!("lnetlab.hunt.{}", s.backends.join("+")), secs: r.secs, failure }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_messages_is_escaped_and_control_characters_dropped() {
        let c = Case { name: "a<b>".into(), classname: "x".into(), secs: 0.5, failure: Some(("\"&'\u{1}".into(), "line\n<tag>".into())) };
        let x = xml("s&s", &[c]);
        assert!(x.contains("name=\"a&lt;b&gt;\"") && x.contains("message=\"&quot;&amp;&apos;\"") && x.contains("line\n&lt;tag&gt;</failure>"), "{x}");
        assert!(x.contains("tests=\"1\" failures=\"1\""), "{x}");
    }
}
