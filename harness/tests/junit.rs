//! `--junit FILE` on `run`, `hunt` and `golden check`: the file parses as JUnit XML (read back
//! with quick-xml), holds one test case per workload, seed or scenario, and a failure carries
//! its message and the REPRO line.

use quick_xml::events::Event;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn lnetlab(args: &[&str], tmp: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lnetlab")).args(args).env("TMPDIR", tmp).env("XDG_STATE_HOME", tmp).env_remove("LNETLAB_STATE_DIR").current_dir(root()).output().unwrap()
}

#[derive(Debug, Default)]
struct Suite {
    tests: usize,
    failures: usize,
    /// (name, failure message, failure text)
    cases: Vec<(String, Option<(String, String)>)>,
}

/// Reads a JUnit file: the suite's counts and every test case with its failure.
fn parse(path: &Path) -> Suite {
    let xml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = quick_xml::Reader::from_str(&xml);
    let mut s = Suite::default();
    let mut in_failure = false;
    let attr = |e: &quick_xml::events::BytesStart, k: &str| -> String { e.try_get_attribute(k).unwrap().map(|a| a.unescape_value().unwrap().into_owned()).unwrap_or_default() };
    loop {
        match r.read_event().unwrap_or_else(|e| panic!("{e}: {xml}")) {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testsuite" => {
                s.tests = attr(&e, "tests").parse().unwrap();
                s.failures = attr(&e, "failures").parse().unwrap();
            }
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => s.cases.push((attr(&e, "name"), None)),
            Event::Start(e) if e.name().as_ref() == b"failure" => {
                s.cases.last_mut().unwrap().1 = Some((attr(&e, "message"), String::new()));
                in_failure = true;
            }
            Event::Text(t) if in_failure => s.cases.last_mut().unwrap().1.as_mut().unwrap().1 += &t.decode().unwrap(),
            Event::GeneralRef(g) if in_failure => {
                let c = match g.as_ref() { b"lt" => "<", b"gt" => ">", b"amp" => "&", b"quot" => "\"", b"apos" => "'", _ => "?" };
                s.cases.last_mut().unwrap().1.as_mut().unwrap().1 += c;
            }
            Event::End(e) if e.name().as_ref() == b"failure" => in_failure = false,
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(s.tests, s.cases.len(), "{xml}");
    assert_eq!(s.failures, s.cases.iter().filter(|c| c.1.is_some()).count(), "{xml}");
    s
}

#[test]
fn run_writes_a_case_per_workload_and_a_failure_with_its_repro() {
    let tmp = tempfile::tempdir().unwrap();
    let j = tmp.path().join("ok.xml");
    let o = lnetlab(&["run", "clusters/quickstart.yaml", "--backend", "sim", "--seed", "3", "--artifacts", tmp.path().join("runs").to_str().unwrap(), "--junit", j.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = parse(&j);
    assert_eq!(s.cases.iter().map(|c| (c.0.as_str(), c.1.is_some())).collect::<Vec<_>>(), [("write-read", false)]);

    let j = tmp.path().join("fails.xml");
    let spec = root().join("harness/tests/junit/fails.yaml");
    let o = lnetlab(&["run", spec.to_str().unwrap(), "--backend", "sim", "--seed", "4", "--artifacts", tmp.path().join("runs").to_str().unwrap(), "--junit", j.to_str().unwrap()], tmp.path());
    assert!(!o.status.success(), "the run must fail: {}", String::from_utf8_lossy(&o.stdout));
    let s = parse(&j);
    assert_eq!(s.cases.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["doomed", "never-run"]);
    let repro = format!("REPRO: lnetlab run {} --seed 4 --backend sim --keep", spec.display());
    for (name, f) in &s.cases {
        let (msg, text) = f.as_ref().unwrap_or_else(|| panic!("{name} must fail"));
        assert!(msg.contains(name.as_str()), "{name}: {msg}");
        assert!(text.contains(&repro), "{name}: {text}");
    }
}

#[test]
fn hunt_writes_a_case_per_seed_and_golden_check_one_per_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let j = tmp.path().join("hunt.xml");
    let o = lnetlab(&["hunt", "clusters/quickstart.yaml", "--seeds", "1..3", "-j", "2", "--out", tmp.path().join("hunt").to_str().unwrap(), "--junit", j.to_str().unwrap()], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = parse(&j);
    assert_eq!(s.cases.iter().map(|c| (c.0.as_str(), c.1.is_some())).collect::<Vec<_>>(), [("seed 1", false), ("seed 2", false), ("seed 3", false)]);

    // One scenario with its snapshot, one without: a pass and a failure naming the fix.
    let sc = tmp.path().join("scenarios");
    let golden = tmp.path().join("golden");
    std::fs::create_dir_all(&sc).unwrap();
    std::fs::create_dir_all(&golden).unwrap();
    std::fs::copy(root().join("clusters/golden/serial.yaml"), sc.join("serial.yaml")).unwrap();
    std::fs::copy(root().join("golden/serial.snap"), golden.join("serial.snap")).unwrap();
    std::fs::copy(root().join("clusters/golden/serial.yaml"), sc.join("unsnapped.yaml")).unwrap();
    let j = tmp.path().join("golden.xml");
    let o = lnetlab(&["golden", "check", "--scenarios", sc.to_str().unwrap(), "--golden", golden.to_str().unwrap(), "--junit", j.to_str().unwrap()], tmp.path());
    assert!(!o.status.success(), "a missing snapshot fails the check");
    let s = parse(&j);
    assert_eq!(s.cases.iter().map(|c| (c.0.as_str(), c.1.is_some())).collect::<Vec<_>>(), [("serial", false), ("unsnapped", true)]);
    let (msg, text) = s.cases[1].1.clone().unwrap();
    assert!(msg.contains("unsnapped.snap") && text.contains("REPRO: lnetlab golden check"), "{msg}\n{text}");
}
