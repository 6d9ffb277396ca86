//! Each fault kind the simulator injects on virtual time, shown by its effect on a small
//! cluster: a paused OSS makes clients time out and resend; a restarted OSS is a new
//! incarnation the clients reconnect to; a partition cuts the DMA fabric; a restarted device is
//! lost and attached again; late completions outlast a short RPC timeout. Every run verifies.

use harness::cluster::report::Report;
use harness::cluster::run::{run, RunOpts};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// One OSS on DMA and TCP, a DMA client and a TCP client, 32 MiB written and read back (about
/// 2 ms of virtual time without faults), with `faults` (YAML list items).
fn run_with(faults: &[&str], rpc_timeout: &str, art: &Path) -> Report {
    let list = if faults.is_empty() { " []".to_string() } else { faults.iter().map(|f| format!("\n  - {f}")).collect() };
    let spec = format!(
        "name: simfault
nets: {{dma0: {{kind: dma}}, tcp0: {{kind: tcp}}}}
nodes:
  - {{name: oss1, roles: [oss], nis: [dma0, tcp0], targets: [{{ost: 0, size: 64MiB}}, {{ost: 1, size: 64MiB}}]}}
  - {{name: c1, roles: [client], nis: [dma0]}}
  - {{name: c3, roles: [client], nis: [tcp0]}}
workloads:
  - {{name: io, kind: io, clients: [c1, c3], files: 2, size: 8MiB, stripe_count: 2, inflight: 4, rpc_timeout: {rpc_timeout}, max_tries: 16}}
faults:{list}
"
    );
    let file = art.join("spec.yaml");
    std::fs::write(&file, spec).unwrap();
    let opts = RunOpts { file, seed: Some(3), keep: false, json: true, artifacts: Some(art.join("runs")), backend: "sim".into(), timeout: Duration::from_secs(120), up_only: None, only: None, capture: false };
    let r = run(&opts).unwrap();
    assert!(r.ok, "the run verifies: {:?} {:?}", r.error, r.workloads);
    assert!(r.faults_skipped.is_empty(), "{:?}", r.faults_skipped);
    assert_eq!((r.lost_acked_writes, r.silent_corruptions), (0, 0));
    r
}

/// Node `node`'s counters at the end of the run.
fn stats(r: &Report, node: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(&r.artifacts).join("nodes").join(format!("{node}.stats.json"))).unwrap()).unwrap()
}

/// Counter `key` of node `node`'s LND `lnd` (`dma`, `tcp`).
fn lnd_stat(r: &Report, node: &str, lnd: &str, key: &str) -> u64 {
    let s = stats(r, node);
    s["lnds"].as_array().unwrap().iter().find(|l| l["name"] == lnd).unwrap()["stats"][key].as_u64().unwrap()
}

fn fault_trace(r: &Report) -> String {
    std::fs::read_to_string(Path::new(&r.artifacts).join("traces/faults.jsonl")).unwrap()
}

#[test]
fn without_faults_nobody_resends() {
    let art = tempfile::tempdir().unwrap();
    let r = run_with(&[], "100ms", art.path());
    assert_eq!((r.resends, r.reconnects), (0, 0), "the baseline the fault tests compare with");
}

/// The OSS frozen for 400 ms of virtual time: what the clients send it queues unread, their
/// 100 ms RPC timeouts expire and they resend; once it thaws it reads everything.
#[test]
fn a_paused_oss_makes_clients_time_out_and_resend() {
    let art = tempfile::tempdir().unwrap();
    let r = run_with(&["{kind: pause, node: oss1, at: 1ms, duration: 400ms}"], "100ms", art.path());
    assert_eq!(r.faults.get("pause"), Some(&1), "{:?}", r.faults);
    assert!(r.resends >= 2, "clients timed out and resent: {r:?}");
    let t = fault_trace(&r);
    assert!(t.contains("\"paused\"") && t.contains("\"resumed\""), "{t}");
    assert_eq!(lnd_stat(&r, "oss1", "dma", "device_losses"), 0);
}

/// The OSS killed mid-run and built again from the plan 100 ms later: nothing of its memory
/// survives (its counters start afresh), the TCP client's socklnd sees a new incarnation, the
/// DMA client saw it leave the fabric, and both reconnect; its OSTs kept what they had.
#[test]
fn a_restarted_oss_is_a_new_incarnation_the_clients_reconnect_to() {
    let art = tempfile::tempdir().unwrap();
    let r = run_with(&["{kind: restart, node: oss1, at: 1ms, duration: 100ms}"], "100ms", art.path());
    assert_eq!(r.faults.get("restart"), Some(&1), "{:?}", r.faults);
    assert!(r.reconnects >= 2, "both clients reconnected: {r:?}");
    assert!(lnd_stat(&r, "c3", "tcp", "peer_restarts") >= 1, "the TCP client saw a new incarnation");
    assert!(lnd_stat(&r, "c1", "dma", "peers_down") >= 1, "the DMA client saw the OSS leave the fabric");
    let rpcs: u64 = r.workloads.iter().map(|w| w.rpcs).sum();
    let oss_recv = stats(&r, "oss1")["lnet"]["recv_count"].as_u64().unwrap();
    assert!(oss_recv < rpcs, "the OSS's LNet counters started afresh ({oss_recv} received since, of {rpcs} RPCs)");
    let t = fault_trace(&r);
    assert!(t.contains("\"killed\"") && t.contains("\"started again\""), "{t}");
}

/// The DMA client cut off from the OSS from the start (the DMA client is done in about 1 ms):
/// the fabric refuses its short messages (the device reports the peer unreachable), so its
/// connect fails until the cut heals; then it does all its I/O.
#[test]
fn a_partition_cuts_the_dma_fabric_between_its_sides() {
    let art = tempfile::tempdir().unwrap();
    let r = run_with(&["{kind: partition, between: [[c1], [oss1]], at: 0ms, duration: 300ms}"], "100ms", art.path());
    assert_eq!(r.faults.get("partition"), Some(&1), "{:?}", r.faults);
    assert!(lnd_stat(&r, "c1", "dma", "dev_errors") >= 1, "the device refused what crossed the cut");
    assert_eq!(lnd_stat(&r, "c3", "tcp", "peer_restarts"), 0, "the TCP client was not involved");
}

/// The DMA device killed for 100 ms from the start: every DMA node sees it go and attaches
/// again when it is back — the DMA client's whole workload runs on the new device.
#[test]
fn a_restarted_device_is_lost_and_attached_again_by_every_node() {
    let art = tempfile::tempdir().unwrap();
    let r = run_with(&["{kind: device_restart, net: dma0, at: 0ms, duration: 100ms}"], "100ms", art.path());
    assert_eq!(r.faults.get("device_restart"), Some(&1), "{:?}", r.faults);
    for n in ["oss1", "c1"] {
        assert_eq!(lnd_stat(&r, n, "dma", "device_losses"), 1, "{n} lost its device once");
    }
    assert!(lnd_stat(&r, "c1", "dma", "get_rdma") >= 1, "c1 moved its bulk data on the new device");
}

/// Every fourth pull completes 50 ms late on virtual time: longer than the 20 ms RPC timeout,
/// so clients resend; without the fault the same timeout needs no resend.
#[test]
fn late_completions_are_held_back_on_virtual_time() {
    let art = tempfile::tempdir().unwrap();
    let base = run_with(&[], "20ms", art.path());
    assert_eq!(base.resends, 0);
    let r = run_with(&["{kind: dma_late, net: dma0, rate: 4, latency: 50ms}"], "20ms", art.path());
    assert!(r.faults.get("dma_late").is_some_and(|n| *n >= 1), "{:?}", r.faults);
    assert!(r.resends >= 1, "a completion held 50 ms outlasted a 20 ms timeout: {r:?}");
}

/// Windows that overlap: the OSS killed while the DMA device is down comes back at once (it
/// does not wait for the device), finds its device gone and attaches when the device is back;
/// the TCP client's partition holds across the restart (the rebuilt OSS is cut off as well).
#[test]
fn an_oss_restarted_while_its_device_is_down_attaches_when_it_is_back() {
    let art = tempfile::tempdir().unwrap();
    let r = run_with(
        &["{kind: device_restart, net: dma0, at: 1ms, duration: 100ms}", "{kind: restart, node: oss1, at: 2ms, duration: 20ms}", "{kind: partition, between: [[c3], [oss1]], at: 1ms, duration: 60ms}"],
        "100ms",
        art.path(),
    );
    for k in ["device_restart", "restart", "partition"] {
        assert_eq!(r.faults.get(k), Some(&1), "{k}: {:?}", r.faults);
    }
    assert_eq!(lnd_stat(&r, "oss1", "dma", "device_losses"), 1, "the new OSS found its device gone");
    assert_eq!(lnd_stat(&r, "c1", "dma", "device_losses"), 1);
    let t = fault_trace(&r);
    let (started, device_back) = (t.find("started again\",\"fault\":\"restart\""), t.find("started again\",\"fault\":\"device_restart\""));
    assert!(started.is_some() && device_back.is_some() && started < device_back, "the OSS was back before its device: {t}");
}

/// A restart that falls inside a pause of the same node: the frozen OSS is thawed before it is
/// killed (a frozen node answers nothing: asking it for its counters used to time out).
#[test]
fn an_oss_killed_while_paused_is_thawed_first() {
    let art = tempfile::tempdir().unwrap();
    let r = run_with(&["{kind: pause, node: oss1, at: 1ms, duration: 100ms}", "{kind: restart, node: oss1, at: 20ms, duration: 20ms}"], "100ms", art.path());
    assert_eq!((r.faults.get("pause"), r.faults.get("restart")), (Some(&1), Some(&1)), "{:?}", r.faults);
    let t = fault_trace(&r);
    let (resumed, killed) = (t.find("\"resumed\""), t.find("\"killed\""));
    assert!(resumed.is_some() && resumed < killed, "{t}");
}

/// An OSS restarted inside a partition window gets the window's LNet rules again: the heal
/// removes from every node what the partition installed (before, the rebuilt OSS came back with
/// no rules and the heal found only the client's).
#[test]
fn an_oss_restarted_inside_a_partition_keeps_its_rules() {
    let art = tempfile::tempdir().unwrap();
    let r = run_with(&["{kind: partition, between: [[c3], [oss1]], at: 1ms, duration: 300ms}", "{kind: restart, node: oss1, at: 5ms, duration: 20ms}"], "100ms", art.path());
    assert_eq!((r.faults.get("partition"), r.faults.get("restart")), (Some(&1), Some(&1)), "{:?}", r.faults);
    let t = fault_trace(&r);
    let lines: Vec<Value> = t.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |action: &str| lines.iter().find(|v| v["action"] == action && v["fault"].as_str().is_some_and(|f| f.starts_with("partition"))).map(|v| v["rules"].as_u64().unwrap());
    let added = count("rules added").expect("the partition added rules");
    assert_eq!(count("rules removed"), Some(added), "the heal removes every rule the partition added: {t}");
    let again = lines.iter().position(|v| v["action"] == "rule added" && v["node"] == "oss1" && v["fault"] == "partition#1");
    let killed = lines.iter().position(|v| v["action"] == "killed");
    assert!(again.is_some() && again > killed, "the restarted OSS got the partition's rule again: {t}");
}
