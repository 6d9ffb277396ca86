//! OST operations as the OFD does them: a resent CREATE answered with the object its first
//! attempt made, SYNC of the range it names, and OST_FALLOCATE. Each test names the Lustre
//! function whose behaviour it checks.

mod common;
use common::ost::*;
use lnd::ptlrpc::wire::*;
use std::time::Duration;

const W: Duration = Duration::from_secs(2);

/// Item 4 at the server: a CREATE whose reply was lost comes again with MSG_RESENT and gets the
/// object of its first attempt, not a second, empty one (`tgt_handle_recovery` reconstructs it
/// from the export's reply data) — also after a reconnect; a new CREATE makes a new object.
/// Before: every resend created another object.
#[test]
fn a_resent_create_returns_the_first_attempts_object() {
    let mut r = Rig::new(70);
    let h = connect(&mut r, 0, "raw-k_UUID", 0xa000);
    let send = |r: &mut Rig, xid: u64, flags: u32, conn_cnt: u32| {
        let body = PtlrpcBody { flags, conn_cnt, ..req(opc::OST_CREATE, h, 0xa07f) };
        r.raw(portal::OST_CREATE, xid, body, vec![obdo(0).emit()], None, W).expect("create reply")
    };
    let first = send(&mut r, 0xa080, 0, 1);
    assert_eq!(first.body.status, 0);
    let again = send(&mut r, 0xa080, MSG_RESENT, 1);
    assert_eq!((again.body.status, again.obdo().oid, again.body.transno), (0, first.obdo().oid, first.body.transno), "the resend made another object");
    assert_eq!(r.oss.ost(0).unwrap().objects(), 1);
    let other = send(&mut r, 0xa100, 0, 1);
    assert!(other.obdo().oid != first.obdo().oid);
    // The reply data outlives a reconnect: the resend of 0xa100 on the new connection.
    assert_eq!(connect_n(&mut r, 0, "raw-k_UUID", 0xa180, 2), h);
    let again = send(&mut r, 0xa100, MSG_RESENT, 2);
    assert_eq!((again.body.status, again.obdo().oid), (0, other.obdo().oid));
    assert_eq!(r.oss.ost(0).unwrap().objects(), 2, "a resend after the reconnect made another object");
}

/// Item 4 end to end: the first CREATE reply the client would get is lost; its timeout
/// reconnects and resends the CREATE (MSG_RESENT), and the OST ends with exactly one object per
/// stripe, the ones the client then writes and reads back. Before: the resend made a second
/// object and the first stayed behind, empty.
#[test]
fn a_lost_create_reply_leaves_no_empty_object() {
    let mut r = Rig::new(71);
    let mut j = job("creator", 0);
    j.timeout_ms = 300;
    let mut o = lnd::ost::osc::Osc::new(j).unwrap();
    o.pump(&mut r.nodes[1]);
    r.oscs.push((1, o));
    while !r.oscs[0].1.phases.iter().any(|p| p.0 == "create") {
        r.step();
    }
    let lose = lnd::lnet::fault::FaultRule { src: None, dst: None, portal: Some(portal::OSC_REPLY), msg_type: Some("PUT".into()), rate: None, interval: Some(1), seed: 0, delay_ms: None, tag: Some("lose".into()), health_error: None };
    r.nodes[1].lnet.add_fault_rule(lose).unwrap();
    while r.nodes[1].lnet.fault_hits().values().sum::<u64>() == 0 {
        r.step();
    }
    r.nodes[1].lnet.remove_fault_rules("lose");
    let rep = r.run_jobs(vec![]).remove(0);
    assert_eq!((rep.errors, rep.bytes_verified), (0, rep.bytes_written), "{rep:?}");
    assert!(rep.resends > 0, "{rep:?}");
    let objects = r.oss.ost(0).unwrap().objects() + r.oss.ost(1).unwrap().objects();
    assert_eq!(objects, rep.objects.len(), "objects on the OSTs vs objects the job used: {:?}", rep.objects);
}

/// A SYNC body: object `oid`, bytes [start, end] (o_size and o_blocks, as `osc_sync_base`).
fn sync_body(oid: u64, start: u64, end: u64) -> Obdo {
    Obdo { valid: valid::FLID | valid::FLGROUP | valid::FLSIZE | valid::FLBLOCKS, size: start, blocks: end, ..obdo(oid) }
}

/// Item 10, SYNC: only the object and the byte range the request names are made durable
/// (`ofd_sync_hdl` → `tgt_sync` → `dt_object_sync(start, end)`, end inclusive as in
/// `vfs_fsync_range`); a range past the end covers what exists; no object means the whole OST.
/// Before: the whole object was synced whatever the range.
#[test]
fn sync_covers_the_range_it_names() {
    let mut r = Rig::new(72);
    let h = connect(&mut r, 0, "raw-l_UUID", 0xb000);
    let (a, b) = (create(&mut r, h, 0xb080), create(&mut r, h, 0xb100));
    let mut xid = 0xb100;
    for oid in [a, b] {
        xid += 0x80;
        let body = PtlrpcBody { mbits: xid, ..req(opc::OST_WRITE, h, xid - 1) };
        let rep = r.raw(portal::OST_IO, xid, body, brw_bufs(obdo(oid), 0, 8192, OBD_BRW_WRITE), Some(Bulk::Source(vec![4; 8192], xid)), W).unwrap();
        assert_eq!(rep.body.status, 0);
    }
    let mut sync = |r: &mut Rig, o: Obdo| {
        xid += 0x80;
        let rep = r.raw(portal::OST_REQUEST, xid, req(opc::OST_SYNC, h, xid - 1), vec![o.emit()], None, W).unwrap();
        assert_eq!(rep.body.status, 0, "{rep:?}");
        r.oss.ost(0).unwrap().synced_bytes()
    };
    assert_eq!(sync(&mut r, sync_body(a, 4096, 8191)), 4096, "SYNC of 4 KiB of one object");
    assert_eq!(sync(&mut r, sync_body(b, 6000, OBD_OBJECT_EOF)), 4096 + 2192, "a range past the end covers what exists");
    assert_eq!(sync(&mut r, sync_body(b, 9000, OBD_OBJECT_EOF)), 4096 + 2192, "nothing there, nothing synced");
    assert_eq!(sync(&mut r, obdo(a)), 4096 + 2192 + 8192, "no range: the whole object");
}

/// A FALLOCATE body: object `oid`, [start, end) in o_size and o_blocks, `mode` in o_nlink.
fn falloc_body(oid: u64, start: u64, end: u64, mode: u32) -> Obdo {
    Obdo { cksum: mode, ..sync_body(oid, start, end) }
}

/// Item 10, OST_FALLOCATE (`ofd_fallocate_hdl`), to OST_IO: preallocation extends the size,
/// KEEP_SIZE does not, PUNCH_HOLE zeroes data and keeps the size; a request without
/// FLSIZE|FLBLOCKS or with a mode the OFD does not take gets -EOPNOTSUPP, start >= end -EINVAL,
/// a range past the OST's space an error — and the OSS keeps serving. Before: every FALLOCATE
/// got -EOPNOTSUPP ("unsupported opcode").
#[test]
fn fallocate_as_the_ofd_does_it() {
    let mut r = Rig::new(73);
    let h = connect(&mut r, 1, "raw-m_UUID", 0xc000);
    let oid = create(&mut r, h, 0xc080);
    let b = Obdo { seq: 1, ..obdo(oid) };
    let body = PtlrpcBody { mbits: 0xc100, ..req(opc::OST_WRITE, h, 0xc0ff) };
    assert_eq!(r.raw(portal::OST_IO, 0xc100, body, brw_bufs(b, 0, 8192, OBD_BRW_WRITE), Some(Bulk::Source(vec![3; 8192], 0xc100)), W).unwrap().body.status, 0);
    let mut xid = 0xc100;
    let mut fallocate = |r: &mut Rig, o: Obdo| {
        xid += 0x80;
        r.raw(portal::OST_IO, xid, req(opc::OST_FALLOCATE, h, xid - 1), vec![Obdo { seq: 1, ..o }.emit()], None, W).expect("the OSS answers")
    };
    let rep = fallocate(&mut r, falloc_body(oid, 4096, 65536, 0));
    assert_eq!((rep.body.status, rep.body.msg_type), (0, PTL_RPC_MSG_REPLY), "FALLOCATE refused");
    assert_eq!(rep.obdo().size, 65536, "preallocation extends the size");
    assert!(rep.body.transno > 0, "a change has a transaction number");
    let rep = fallocate(&mut r, falloc_body(oid, 0, 1 << 20, falloc::KEEP_SIZE));
    assert_eq!((rep.body.status, rep.obdo().size), (0, 65536));
    let rep = fallocate(&mut r, falloc_body(oid, 1000, 3000, falloc::PUNCH_HOLE));
    assert_eq!((rep.body.status, rep.obdo().size), (0, 65536));
    for (o, want) in [
        (Obdo { valid: valid::FLID | valid::FLGROUP, ..falloc_body(oid, 0, 10, 0) }, -95),
        (falloc_body(oid, 0, 10, 0x8), -95),
        (falloc_body(oid, 10, 10, 0), -22),
        (falloc_body(oid, 100, 10, 0), -22),
        (falloc_body(oid, 0, u64::MAX, 0), -27),
        (falloc_body(oid, 0, 1 << 30, 0), -28),
        (falloc_body(oid + 7, 0, 10, 0), -2),
    ] {
        let rep = fallocate(&mut r, o);
        assert_eq!((rep.body.status, rep.body.msg_type), (want, PTL_RPC_MSG_REPLY), "{o:?}");
    }
    xid += 0x80;
    let body = PtlrpcBody { mbits: xid, ..req(opc::OST_READ, h, xid - 1) };
    let rep = r.raw(portal::OST_IO, xid, body, brw_bufs(b, 0, 8192, OBD_BRW_READ), Some(Bulk::Sink(8192, xid)), W).unwrap();
    let data = rep.sunk.unwrap().0;
    assert!(data[..1000].iter().all(|&x| x == 3) && data[1000..3000].iter().all(|&x| x == 0) && data[3000..].iter().all(|&x| x == 3), "the hole is not where it was punched");
}

/// The client issues OST_FALLOCATE: a job with `fallocate` preallocates each object to its
/// final size before writing it (the job arrives as JSON, as the harness sends it), and the
/// files read back whole. Before: `fallocate` was an unknown field of the job.
#[test]
fn a_job_preallocates_its_objects() {
    let mut r = Rig::new(74);
    let mut v = serde_json::to_value(job("prealloc", 0)).unwrap();
    v["fallocate"] = serde_json::json!(true);
    let j: lnd::ost::osc::IoJob = serde_json::from_value(v).expect("a job with fallocate");
    let rep = r.run_jobs(vec![j]).remove(0);
    assert_eq!((rep.errors, rep.bytes_verified), (0, rep.bytes_written), "{rep:?}");
    let ok = r.oss.trace.iter().filter(|v| v["rpc"] == "OST_FALLOCATE" && v["status"] == 0).count();
    assert_eq!(ok, rep.objects.len(), "one FALLOCATE per object");
}
