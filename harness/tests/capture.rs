//! Captures: `run --capture` (or `capture: true` in the spec) writes `pcap/NODE.pcap` of every
//! TCP node's socklnd traffic into the artifacts, on every backend, and Wireshark's own `lnet`
//! and `lustre` dissectors decode it; a node started again goes on with the same file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `lnetlab run FILE --seed 1 --json ARGS` into `art`; the report.
fn run(file: &Path, art: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lnetlab"))
        .args(["run", file.to_str().unwrap(), "--json", "--seed", "1", "--artifacts", art.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["ok"], true, "{r}");
    r
}

fn pcap_dir(r: &serde_json::Value) -> PathBuf {
    Path::new(r["artifacts"].as_str().unwrap()).join("pcap")
}

/// The capture's LNet messages (type and portal per message), or `None` without tshark. Panics
/// on a frame Wireshark flags, except bulk data: the `lustre` dissector reads every PUT as a
/// ptlrpc message, and a PUT to OST_BULK_PORTAL (8) carries file data, not one.
fn lnet_messages(pcap: &Path) -> Option<Vec<String>> {
    let tshark = |args: &[&str]| Command::new("tshark").arg("-r").arg(pcap).args(["-o", "tcp.check_checksum:FALSE"]).args(args).output();
    let Ok(bad) = tshark(&["-Y", "(_ws.malformed || _ws.expert.severity >= error) && !(lnet.ptl_index == 8)"]) else {
        eprintln!("SKIPPED tshark check: tshark is not installed (apt-get install tshark); .ci/run installs it");
        return None;
    };
    assert!(bad.status.success(), "tshark failed on {}: {}", pcap.display(), String::from_utf8_lossy(&bad.stderr));
    let bad = String::from_utf8_lossy(&bad.stdout);
    assert!(bad.trim().is_empty(), "{}: frames Wireshark flags:\n{bad}", pcap.display());
    let out = tshark(&["-Y", "lnet", "-T", "fields", "-e", "lnet.msg_type", "-e", "lnet.ptl_index"]).unwrap();
    Some(String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

/// The quickstart on the process backend with `--capture`: a file for each TCP node (the OSS
/// and c3), none for the DMA-only clients, and the device's of the fabric; Wireshark decodes them, the OSS's holds its replies to
/// c3's requests, and the REPRO line keeps `--capture`.
#[test]
fn run_capture_writes_a_pcap_per_tcp_node_that_wireshark_decodes() {
    let art = tempfile::tempdir().unwrap();
    let r = run(&root().join("clusters/quickstart.yaml"), art.path(), &["--capture"]);
    let dir = pcap_dir(&r);
    let mut files: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    assert_eq!(files, ["c3.pcap", "dma-dma0.pcap", "oss1.pcap"], "one capture per node on tcp0, one of the fabric");
    let repro = std::fs::read_to_string(Path::new(r["artifacts"].as_str().unwrap()).join("REPRO")).unwrap();
    assert!(repro.lines().next().unwrap().ends_with("--keep --capture"), "{repro}");
    for f in files.iter().filter(|f| !f.starts_with("dma-")) {
        let Some(msgs) = lnet_messages(&dir.join(f)) else { return };
        assert!(msgs.len() >= 10, "{f}: {} LNet messages", msgs.len());
    }
    // The OSS answers on the reply portal (OST_REPLY_PORTAL 4), c3 asks on OST_REQUEST_PORTAL 6.
    let Some(oss) = lnet_messages(&dir.join("oss1.pcap")) else { return };
    assert!(oss.iter().any(|m| m.ends_with("\t4")), "{oss:?}");
    let Some(c3) = lnet_messages(&dir.join("c3.pcap")) else { return };
    assert!(c3.iter().any(|m| m.ends_with("\t6")), "{c3:?}");
}

/// `capture: true` in a spec on the simulator, with the OSS restarted mid-run: its capture holds
/// both lives in one readable file, and it is the same, byte for byte, when the seed runs again.
#[test]
fn a_sim_capture_spans_a_restart_and_replays_with_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("cap.yaml");
    std::fs::write(
        &spec,
        "name: cap
capture: true
nets: {dma0: {kind: dma}, tcp0: {kind: tcp}}
nodes:
  - {name: oss1, roles: [oss], nis: [dma0, tcp0], targets: [{ost: 0, size: 64MiB}]}
  - {name: c1, roles: [client], nis: [tcp0]}
workloads:
  - {name: io, kind: io, clients: [c1], files: 4, size: 8MiB, rpc_timeout: 100ms, max_tries: 16}
faults:
  - {kind: restart, node: oss1, at: 1ms, duration: 20ms}
",
    )
    .unwrap();
    let a = run(&spec, &dir.path().join("a"), &["--backend", "sim"]);
    assert_eq!(a["faults"]["restart"], 1, "{a}");
    let b = run(&spec, &dir.path().join("b"), &["--backend", "sim"]);
    let (pa, pb) = (pcap_dir(&a).join("oss1.pcap"), pcap_dir(&b).join("oss1.pcap"));
    let bytes = std::fs::read(&pa).unwrap();
    assert_eq!(bytes, std::fs::read(&pb).unwrap(), "the same seed, the same capture");
    // One pcap file header, then records to the very end: a second header would break the walk.
    assert_eq!(bytes[..4], 0xa1b2_c3d4u32.to_le_bytes());
    // Each record: 16 bytes of pcap header, IPv4 (20) and TCP (20) headers, then our bytes; a
    // HELLO opens with LNET_PROTO_MAGIC; in each life the OSS answers c1's three connections
    // (control, bulk in, bulk out, as ksocklnd types them).
    let (mut at, mut records, mut hellos) = (24, 0, 0);
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        hellos += usize::from(bytes.get(at + 56..at + 60) == Some(&0x4572_6963u32.to_le_bytes()[..]));
        at += 16 + len;
        records += 1;
    }
    assert_eq!(at, bytes.len(), "the records end where the file does ({records} records)");
    assert_eq!(hellos, 6, "three HELLOs from each of the OSS's two lives (3 with the first life lost)");
    let Some(msgs) = lnet_messages(&pa) else { return };
    assert!(msgs.len() >= 10, "{} LNet messages", msgs.len());
}

/// `tshark -X lua_script:tools/dmalnd.lua` on `pcap`: one line per record (`fields`), or `None`
/// without tshark.
fn dma_tshark(pcap: &Path, args: &[&str]) -> Option<String> {
    let lua = format!("lua_script:{}", root().join("tools/dmalnd.lua").display());
    let Ok(o) = Command::new("tshark").args(["-X", &lua, "-r"]).arg(pcap).args(args).output() else {
        eprintln!("SKIPPED tshark check: tshark is not installed (apt-get install tshark); .ci/run installs it");
        return None;
    };
    assert!(o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("Lua: Error"), "tshark: {}", String::from_utf8_lossy(&o.stderr));
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The DMA fabric of the quickstart on the simulator, captured (`pcap/dma-dma0.pcap`) and read
/// by the repo's Lua dissector: every DMA LND message type the run uses decodes (IMMEDIATE,
/// PUT_REQ, GET_REQ, TX_READY, NOOP), transmit setups and pulls are there, none is malformed,
/// and the LNet header inside goes on to Wireshark's LNet and Lustre dissectors. A record with a
/// damaged magic is flagged malformed (the check can fail).
#[test]
fn the_dma_fabric_capture_decodes_with_the_lua_dissector() {
    let art = tempfile::tempdir().unwrap();
    let r = run(&root().join("clusters/quickstart.yaml"), art.path(), &["--backend", "sim", "--capture"]);
    let pcap = pcap_dir(&r).join("dma-dma0.pcap");
    let Some(out) = dma_tshark(&pcap, &["-T", "fields", "-e", "dmafab.event", "-e", "dmalnd.type", "-e", "frame.protocols"]) else { return };
    let count = |ev: &str, ty: &str| out.lines().filter(|l| l.starts_with(&format!("{ev}\t{ty}\t"))).count();
    for ty in ["0x10", "0x11", "0x12", "0x02", "0x01"] {
        assert!(count("1", ty) >= 1, "no SMSG of type {ty}:\n{out}");
    }
    assert!(count("2", "") >= 1 && count("3", "") >= 1, "transmit setups and pulls recorded");
    let lnd_msgs = || out.lines().filter(|l| ["\t0x10\t", "\t0x11\t", "\t0x12\t"].iter().any(|t| l.contains(t)));
    assert!(lnd_msgs().all(|l| l.contains(":lnet")), "every LND message's header goes to Wireshark's LNet dissector");
    assert!(lnd_msgs().filter(|l| l.ends_with(":lnet:lustre")).count() >= 100, "and the RPCs on to its Lustre dissector");
    let bad = dma_tshark(&pcap, &["-Y", "_ws.malformed || _ws.expert.severity >= error"]).unwrap();
    assert!(bad.trim().is_empty(), "malformed:\n{bad}");
    // The same first SMSG with its magic damaged.
    let bytes = std::fs::read(&pcap).unwrap();
    let mut damaged = bytes[..24 + 16 + 24 + 64.min(bytes.len() - 64)].to_vec();
    let len = u32::from_le_bytes(damaged[32..36].try_into().unwrap()) as usize;
    damaged.truncate(24 + 16);
    damaged.extend_from_slice(&bytes[40..40 + len]);
    damaged[40 + 24] ^= 0xff;
    let file = art.path().join("damaged.pcap");
    std::fs::write(&file, &damaged).unwrap();
    let bad = dma_tshark(&file, &["-Y", "_ws.malformed || _ws.expert.severity >= error"]).unwrap();
    assert_eq!(bad.lines().count(), 1, "the damaged record is flagged: {bad}");
}
