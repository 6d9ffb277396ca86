//! Every mutant of `lnd/src/mutant.rs` is caught: `lnetlab hunt` with the mutant on finds a
//! failing seed within 200 (and the same seeds pass without it, so the catch is the mutant's),
//! and `lnetlab shrink` of that run leaves a spec of at most 2 faults that still fails on replay
//! with the mutant, and passes without. Each mutant has a small spec in `harness/tests/mutants/`.
//! A new mutant is one `caught!` line.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn lnetlab(args: &[&str], mutant: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lnetlab"));
    c.args(args);
    match mutant {
        Some(m) => c.env("LNETLAB_MUTANT", m),
        None => c.env_remove("LNETLAB_MUTANT"),
    };
    c.output().unwrap()
}

fn json_of(o: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&o.stderr)))
}

fn hunt(spec: &Path, seeds: &str, out: &Path, timeout: u64, mutant: Option<&str>) -> (i32, Value) {
    let t = timeout.to_string();
    let o = lnetlab(&["hunt", spec.to_str().unwrap(), "--seeds", seeds, "--backend", "sim", "-j", "1", "--first-failure", "--timeout", &t, "--json", "--out", out.to_str().unwrap()], mutant);
    (o.status.code().unwrap_or(-1), json_of(&o))
}

/// The shrunk spec run again with `seed`: does it pass?
fn replay_ok(spec: &Path, seed: u64, art: &Path, timeout: u64, mutant: Option<&str>) -> Value {
    let o = lnetlab(&["run", spec.to_str().unwrap(), "--seed", &seed.to_string(), "--backend", "sim", "--timeout", &timeout.to_string(), "--json", "--artifacts", art.to_str().unwrap()], mutant);
    json_of(&o)
}

/// `mutant` is caught on `spec` (in harness/tests/mutants/): runs of a failing seed take
/// `timeout` seconds at most (a stall is seen only then); `shrink` gets `max_runs` trials.
fn caught(mutant: &str, spec: &str, timeout: u64, max_runs: u64) {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mutants").join(spec);
    let dir = tempfile::tempdir().unwrap();
    let (code, s) = hunt(&spec, "1..200", &dir.path().join("hunt-mutant"), timeout, Some(mutant));
    assert_eq!(code, 1, "{mutant}: hunt found no failing seed in 1..200: {s}");
    let f = &s["failed"][0];
    let seed = f["seed"].as_u64().unwrap();
    let (code, clean) = hunt(&spec, &format!("1..{seed}"), &dir.path().join("hunt-clean"), timeout, None);
    assert_eq!((code, clean["passed"].as_u64()), (0, Some(seed)), "{mutant}: without the mutant seeds 1..{seed} must pass: {clean}");
    let run_dir = f["run_dir"].as_str().unwrap_or_else(|| panic!("{mutant}: no run_dir: {f}"));
    let out = dir.path().join("shrunk");
    let o = lnetlab(&["shrink", run_dir, "--max-runs", &max_runs.to_string(), "--timeout", &timeout.to_string(), "--json", "--out", out.to_str().unwrap()], Some(mutant));
    assert!(o.status.success(), "{mutant}: shrink failed: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let r = json_of(&o);
    assert!(r["faults"].as_u64().unwrap() <= 2, "{mutant}: shrunk to more than 2 faults: {r}");
    let shrunk = out.join("shrunk.yaml");
    let again = replay_ok(&shrunk, seed, &dir.path().join("replay"), timeout, Some(mutant));
    assert_eq!(again["ok"], false, "{mutant}: the shrunk spec passes on replay: {again}");
    let clean = replay_ok(&shrunk, seed, &dir.path().join("replay-clean"), timeout, None);
    assert_eq!(clean["ok"], true, "{mutant}: the shrunk spec fails without the mutant too: {clean}");
}

macro_rules! caught {
    ($test:ident, $mutant:literal, $spec:literal, timeout $t:literal, max_runs $m:literal) => {
        #[test]
        fn $test() {
            caught($mutant, $spec, $t, $m);
        }
    };
}

caught!(an_oss_that_drops_acknowledged_writes_is_caught, "oss_drop_acked_write", "drop-acked-write.yaml", timeout 30, max_runs 12);
caught!(an_oss_that_damages_acknowledged_writes_is_caught, "oss_damage_acked_write", "drop-acked-write.yaml", timeout 30, max_runs 12);
caught!(an_oss_that_makes_a_second_object_for_a_resent_create_is_caught, "oss_no_create_reconstruct", "create-resend.yaml", timeout 30, max_runs 12);
caught!(a_dma_lnd_that_leaks_the_credits_of_a_bounced_message_is_caught, "dmalnd_bounce_leaks_credits", "bounce-credits.yaml", timeout 10, max_runs 3);
caught!(a_router_that_drops_a_gets_reply_is_caught, "router_drop_get_reply", "routed-reply.yaml", timeout 30, max_runs 12);
caught!(clients_that_skip_replay_after_a_crash_are_caught, "osc_no_replay", "skip-replay.yaml", timeout 30, max_runs 12);
caught!(lnet_reporting_a_multi_rail_peer_by_the_wrong_nid_is_caught, "lnet_initiator_not_primary", "multirail-initiator.yaml", timeout 30, max_runs 12);

/// A misspelt mutant is refused (it would be a silent no-op: every hunt would pass).
#[test]
fn an_unknown_mutant_is_refused_in_one_line() {
    let o = lnetlab(&["hunt", "../clusters/quickstart.yaml", "--seeds", "1..2"], Some("oss_drop_acked_writes"));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no mutant `oss_drop_acked_writes` (known: ") && err.lines().count() == 1, "{err}");
}
