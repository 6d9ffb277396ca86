//! ptlrpc and the OST as Lustre does them: xids and resends, bulk match bits, checksums, short
//! reads, connections, and an OSS that no request can crash. Each test names the Lustre function
//! whose behaviour it checks.

mod common;
use common::ost::*;
use lnd::ptlrpc::wire::*;
use std::time::Duration;

const W: Duration = Duration::from_secs(2);

/// Item 1. Two jobs on one client with the run's seed: the second reads back and verifies what
/// the first wrote. Before: both started their xids at `seed << 20`, and the OSS answered the
/// second job's requests from its reply cache with the first job's replies (its CONNECT handle,
/// WRITE replies for READs with no bulk), so the read-back failed. Lustre: `ptlrpc_init_xid`
/// starts the node's xids from the clock.
#[test]
fn a_second_job_on_the_same_client_reads_back_what_the_first_wrote() {
    let mut r = Rig::new(41);
    let w = r.run_jobs(vec![job("write", 0)]).remove(0);
    assert_eq!(w.errors, 0, "{w:?}");
    let mut j = job("read", 0);
    j.write = false;
    j.objects = Some(w.objects.clone());
    let rd = r.run_jobs(vec![j]).remove(0);
    assert_eq!((rd.errors, rd.bytes_written, rd.bytes_verified), (0, 0, w.bytes_written), "{rd:?}");
}

/// Item 1, the server's side (`process_req_last_xid`, `tgt_handle_recovery`): a request at or
/// below the export's last xid gets -EPROTO; the xid of the last executed change sent again
/// without MSG_RESENT gets -ENOTCONN; with MSG_RESENT it is executed again. Before: the OSS
/// answered both from its reply cache (status 0).
#[test]
fn stale_and_reused_xids_are_refused() {
    let mut r = Rig::new(42);
    let h = connect(&mut r, 0, "raw-a_UUID", 0x1000);
    let oid = create(&mut r, h, 0x1080);
    let setattr = |last: u64, flags: u32| PtlrpcBody { flags, ..req(opc::OST_SETATTR, h, last) };
    let rep = r.raw(portal::OST_REQUEST, 0x1100, setattr(0x10ff, 0), vec![obdo(oid).emit()], None, W).unwrap();
    assert_eq!(rep.body.status, 0);
    let rep = r.raw(portal::OST_REQUEST, 0x1100, setattr(0x10ff, 0), vec![obdo(oid).emit()], None, W).unwrap();
    assert_eq!(rep.body.status, -107, "the last change's xid again, not marked resent: ENOTCONN");
    let rep = r.raw(portal::OST_REQUEST, 0x1100, setattr(0x10ff, MSG_RESENT), vec![obdo(oid).emit()], None, W).unwrap();
    assert_eq!(rep.body.status, 0, "a resend is executed again");
    // The client says everything up to 0x11ff has its reply: an older xid is stale.
    let rep = r.raw(portal::OST_REQUEST, 0x1200, req(opc::OST_GETATTR, h, 0x11ff), vec![obdo(oid).emit()], None, W).unwrap();
    assert_eq!(rep.body.status, 0);
    let rep = r.raw(portal::OST_REQUEST, 0x1180, req(opc::OST_GETATTR, h, 0x11ff), vec![obdo(oid).emit()], None, W).unwrap();
    assert_eq!(rep.body.status, -71, "xid below the export's last xid: EPROTO");
    // A new connection starts the export's last xid afresh.
    let h2 = connect_n(&mut r, 0, "raw-a_UUID", 0x100, 2);
    let rep = r.raw(portal::OST_REQUEST, 0x180, PtlrpcBody { conn_cnt: 2, ..req(opc::OST_GETATTR, h2, 0x17f) }, vec![obdo(oid).emit()], None, W).unwrap();
    assert_eq!(rep.body.status, 0, "{rep:?}");
}

/// Item 2. Hostile PUNCHes and writes at absurd offsets get error replies, and the OSS keeps
/// serving. Before: PUNCH with start > end underflowed `end - start` in the store and the OSS
/// panicked; a punch below the end allocated a zero buffer over the whole range. Lustre
/// (`ofd_punch_hdl`): PUNCH needs FLSIZE|FLBLOCKS and end = OBD_OBJECT_EOF, else -EPROTO.
#[test]
fn hostile_punches_and_offsets_get_errors_and_the_oss_keeps_serving() {
    let mut r = Rig::new(43);
    let h = connect(&mut r, 1, "raw-b_UUID", 0x2000);
    let oid = create(&mut r, h, 0x2080);
    let data = vec![7u8; 4096];
    let b = Obdo { seq: 1, ..obdo(oid) };
    let rep = r.raw(portal::OST_IO, 0x2100, req(opc::OST_WRITE, h, 0x20ff), brw_bufs(b, 0, 4096, OBD_BRW_WRITE), Some(Bulk::Source(data, 0x2100)), W).unwrap();
    assert_eq!(rep.body.status, 0, "{rep:?}");
    let punch = |start: u64, end: u64, v: u64| Obdo { valid: v, size: start, blocks: end, ..b }.emit();
    let both = valid::FLID | valid::FLGROUP | valid::FLSIZE | valid::FLBLOCKS;
    let mut xid = 0x2200;
    for (start, end, v) in [(100, 50, both), (3000, 100, both), (0, 1 << 40, both), (u64::MAX - 10, u64::MAX, both), (1 << 62, u64::MAX, both), (10, u64::MAX, valid::FLID)] {
        let rep = r.raw(portal::OST_IO, xid, req(opc::OST_PUNCH, h, xid - 1), vec![punch(start, end, v)], None, W).expect("the OSS answers");
        assert!(rep.body.status < 0, "PUNCH [{start}, {end}) valid {v:#x} was accepted: {rep:?}");
        xid += 0x80;
    }
    for off in [u64::MAX - 100, 1 << 62] {
        let rep = r.raw(portal::OST_IO, xid, req(opc::OST_WRITE, h, xid - 1), brw_bufs(b, off, 4096, OBD_BRW_WRITE), Some(Bulk::Source(vec![1; 4096], xid)), W).expect("the OSS answers");
        assert!(rep.body.status < 0 || rep.msg.buf(2, 4).map(|c| c[..4] != [0; 4]).unwrap_or(true), "WRITE at {off:#x} was accepted: {rep:?}");
        xid += 0x80;
    }
    let rep = r.raw(portal::OST_REQUEST, xid, req(opc::OST_GETATTR, h, xid - 1), vec![b.emit()], None, W).unwrap();
    assert_eq!((rep.body.status, rep.obdo().size), (0, 4096), "the object is as written");
    let rep = r.run_jobs(vec![job("honest", 0)]).remove(0);
    assert_eq!((rep.errors, rep.bytes_verified), (0, rep.bytes_written), "{rep:?}");
}

fn write_chunk(r: &mut Rig, h: u64, b: Obdo, xid: u64, off: u64, data: Vec<u8>, mbits: u64, flags: u32) -> Option<Reply> {
    let len = data.len() as u32;
    r.raw(portal::OST_IO, xid, PtlrpcBody { flags, mbits, ..req(opc::OST_WRITE, h, xid - 1) }, brw_bufs(b, off, len, OBD_BRW_WRITE), Some(Bulk::Source(data, mbits)), W)
}

fn read_chunk(r: &mut Rig, h: u64, b: Obdo, xid: u64, off: u64, len: u32) -> Option<Reply> {
    r.raw(portal::OST_IO, xid, PtlrpcBody { mbits: xid, ..req(opc::OST_READ, h, xid - 1) }, brw_bufs(b, off, len, OBD_BRW_READ), Some(Bulk::Sink(len, xid)), W)
}

/// Connects with connect data asking for CRC32C checksums and new match bits per resend.
fn connect_ocd(r: &mut Rig, ost: u32, uuid: &str, xid: u64) -> (u64, ConnectData) {
    connect_ocd_n(r, ost, uuid, xid, 1)
}

fn connect_ocd_n(r: &mut Rig, ost: u32, uuid: &str, xid: u64, conn_cnt: u32) -> (u64, ConnectData) {
    let mut bufs = connect_bufs(ost, uuid);
    bufs[3] = ConnectData { flags: connect::CKSUM | connect::BULK_MBITS | connect::VERSION, cksum_types: OBD_CKSUM_CRC32C | 0x3, ..Default::default() }.emit();
    let rep = r.raw(portal::OST_REQUEST, xid, PtlrpcBody { conn_cnt, ..req(opc::OST_CONNECT, 0, 0) }, bufs, None, W).expect("connect reply");
    assert_eq!(rep.body.status, 0, "{rep:?}");
    (rep.body.handle, ConnectData::parse(rep.msg.buf(1, 72).unwrap(), false).unwrap())
}

/// Item 3: connect data is negotiated (`ofd_parse_connect_data`): the OSS grants
/// OBD_CONNECT_CKSUM with CRC32C only (of CRC32|ADLER|CRC32C asked), and checksummed BRW
/// replies carry OBD_FL_CKSUM_CRC32C (0x4000). Before: connect data was all zeros both ways and
/// the flag sent was 0x2000, Lustre's ADLER.
#[test]
fn connect_negotiates_crc32c_and_replies_name_it() {
    let mut r = Rig::new(44);
    let (h, ocd) = connect_ocd(&mut r, 0, "raw-c_UUID", 0x3000);
    assert_eq!(ocd.flags & (connect::CKSUM | connect::BULK_MBITS), connect::CKSUM | connect::BULK_MBITS, "{ocd:?}");
    assert_eq!((ocd.cksum_types, ocd.index), (OBD_CKSUM_CRC32C, 0));
    let oid = create(&mut r, h, 0x3080);
    let b = Obdo { valid: valid::FLID | valid::FLGROUP | valid::FLCKSUM | valid::FLFLAGS, flags: OBD_FL_CKSUM_CRC32C, cksum: crc32c(0, &[9; 4096]), ..obdo(oid) };
    let rep = write_chunk(&mut r, h, b, 0x3100, 0, vec![9; 4096], 0x3100, 0).unwrap();
    let o = rep.obdo();
    assert_eq!((rep.body.status, o.flags & OBD_FL_CKSUM_ALL, o.cksum), (0, OBD_FL_CKSUM_CRC32C, crc32c(0, &[9; 4096])));
    let rep = read_chunk(&mut r, h, b, 0x3180, 0, 4096).unwrap();
    assert_eq!((rep.obdo().flags & OBD_FL_CKSUM_ALL, rep.obdo().cksum), (OBD_FL_CKSUM_CRC32C, crc32c(0, &[9; 4096])));
    // A client that asks for checksums of no type the OSS knows is refused.
    let mut bufs = connect_bufs(0, "raw-d_UUID");
    bufs[3] = ConnectData { flags: connect::CKSUM, cksum_types: 0x1, ..Default::default() }.emit();
    let rep = r.raw(portal::OST_REQUEST, 0x3200, req(opc::OST_CONNECT, 0, 0), bufs, None, W).unwrap();
    assert_eq!(rep.body.status, -71);
}

/// Item 4: every bulk MD of an RPC is unlinked when the RPC ends, used or not
/// (`ptlrpc_unregister_bulk`). Reads and writes of objects that do not exist are refused before
/// any bulk moves; afterwards the client has as many MDs and as much free memory as before.
/// Before: the read's MD stayed posted over a segment already freed, one per RPC.
#[test]
fn bulk_mds_the_server_never_used_are_unlinked() {
    let mut r = Rig::new(45);
    let (mds, free) = (r.nodes[1].lnet.md_count(), r.nodes[1].arena.free_bytes());
    let mut j = job("ghost", 0);
    j.objects = Some(vec![(0, 0, 0, 999), (0, 1, 1, 999), (1, 0, 0, 998), (1, 1, 1, 998)]);
    let rep = r.run_jobs(vec![j]).remove(0);
    assert!(rep.errors > 0 && rep.bytes_written == 0, "{rep:?}");
    r.idle_for(Duration::from_millis(50));
    assert_eq!((r.nodes[1].lnet.md_count(), r.nodes[1].arena.free_bytes()), (mds, free), "MDs or memory leaked");
    // An honest job afterwards leaves nothing behind either.
    let rep = r.run_jobs(vec![job("honest", 0)]).remove(0);
    assert_eq!(rep.errors, 0, "{rep:?}");
    r.idle_for(Duration::from_millis(50));
    assert_eq!((r.nodes[1].lnet.md_count(), r.nodes[1].arena.free_bytes()), (mds, free), "MDs or memory leaked");
}

/// Item 5: a resend's bulk has new match bits (`ptlrpc_set_mbits` with OBD_CONNECT_BULK_MBITS),
/// so a late transfer of the first attempt finds no buffer. Here the OSS's first bulk GET is
/// held back past the client's timeout; the timeout fails the import, the client reconnects
/// (item 7) and resends. Before: every attempt used its xid as match bits.
#[test]
fn resends_get_new_bulk_match_bits() {
    let mut r = Rig::new(46);
    r.nodes[1].lnet.add_fault_rule(lnd::lnet::fault::FaultRule { delay_ms: Some(700), ..lose_gets(Some("lose")) }).unwrap();
    let mut j = job("resender", 0);
    j.timeout_ms = 300;
    j.files = 1;
    let mut o = lnd::ost::osc::Osc::new(j).unwrap();
    o.pump(&mut r.nodes[1]);
    r.oscs.push((1, o));
    let t0 = std::time::Instant::now();
    while r.nodes[1].lnet.fault_hits().values().sum::<u64>() == 0 {
        assert!(t0.elapsed() < W, "no bulk GET was sent");
        r.step();
    }
    r.nodes[1].lnet.remove_fault_rules("lose");
    let rep = r.run_jobs(vec![]).remove(0);
    assert_eq!((rep.errors, rep.bytes_verified), (0, rep.bytes_written), "{rep:?}");
    assert!(rep.resends > 0 && rep.reconnects > 0, "the timeout did not fail the import: {rep:?}");
    let connects = r.oss.trace.iter().filter(|v| v["rpc"] == "OST_CONNECT" && v["status"] == 0).count();
    assert!(connects > 2, "no reconnect reached the OSS");
    assert_eq!(r.oss.exports(), 0, "the reconnect made a second export, or the disconnect left one");
    // The xids of every request the OSS saw (its trace records each).
    let xids: std::collections::HashSet<u64> = r.oss.trace.iter().filter_map(|v| v["xid"].as_u64()).collect();
    let mbits: Vec<u64> = r.client_events.iter().filter(|e| e.kind == lnd::lnet::EventKind::Get && e.portal == portal::OST_BULK).map(|e| e.match_bits).collect();
    assert!(mbits.iter().any(|m| !xids.contains(m)), "a resend's bulk used an xid as match bits: {mbits:x?}");
}

/// Items 5 and 7 at the server: a resend that arrives while the first attempt still waits on
/// its bulk is dropped — the first attempt answers (`ptlrpc_server_request_add`: -EBUSY) — until
/// the client reconnects, which aborts the first attempt's bulk without a reply
/// (`target_bulk_io`: "Reconnect on bulk"); the resend on the new connection is served. Before:
/// the resend abandoned the first attempt at once.
#[test]
fn a_resend_waits_for_its_first_attempt_until_a_reconnect_aborts_it() {
    let mut r = Rig::new(52);
    let (h, _) = connect_ocd(&mut r, 0, "raw-j_UUID", 0x9000);
    let oid = create(&mut r, h, 0x9080);
    r.nodes[2].lnet.add_fault_rule(lnd::lnet::fault::FaultRule { delay_ms: Some(60_000), ..lose_gets(Some("hold")) }).unwrap();
    let short = Duration::from_millis(200);
    let w = |r: &mut Rig, flags: u32, mbits: u64, conn_cnt: u32| {
        let body = PtlrpcBody { flags, mbits, conn_cnt, timeout: 30, ..req(opc::OST_WRITE, h, 0x90ff) };
        r.raw(portal::OST_IO, 0x9100, body, brw_bufs(obdo(oid), 0, 4096, OBD_BRW_WRITE), Some(Bulk::Source(vec![3; 4096], mbits)), short)
    };
    assert!(w(&mut r, 0, 0x9100, 1).is_none(), "its bulk GET is held back");
    assert!(w(&mut r, MSG_RESENT, 0x9180, 1).is_none(), "the resend was served while the first attempt ran");
    assert_eq!((r.oss.resends_in_progress, r.oss.bulk_timeouts), (1, 0));
    r.nodes[2].lnet.remove_fault_rules("hold");
    let (h2, _) = connect_ocd_n(&mut r, 0, "raw-j_UUID", 0x9200, 2);
    assert_eq!((h2, r.oss.bulk_timeouts), (h, 1), "the reconnect aborts the first attempt's bulk");
    r.raw_events.clear();
    let rep = w(&mut r, MSG_RESENT, 0x9280, 2).expect("the resend on the new connection is served");
    assert_eq!(rep.body.status, 0);
}

/// An LNet rule dropping every bulk GET the node receives.
fn lose_gets(tag: Option<&str>) -> lnd::lnet::fault::FaultRule {
    lnd::lnet::fault::FaultRule { src: None, dst: None, portal: Some(portal::OST_BULK), msg_type: Some("GET".into()), rate: None, interval: Some(1), seed: 0, delay_ms: None, tag: tag.map(String::from), health_error: None }
}

/// Item 6: the OFD does not reconstruct OST replies: a resent WRITE is executed again and pulls
/// its bulk again; replies to changes carry a transaction number (and `pb_last_committed`).
/// Before: the resend got the first attempt's reply from a reply cache, its data never read.
#[test]
fn a_resent_write_is_executed_again() {
    let mut r = Rig::new(47);
    let (h, _) = connect_ocd(&mut r, 0, "raw-e_UUID", 0x4000);
    let oid = create(&mut r, h, 0x4080);
    let b = obdo(oid);
    let first = write_chunk(&mut r, h, b, 0x4100, 0, vec![1; 4096], 0x4100, 0).unwrap();
    assert_eq!(first.body.status, 0);
    let again = write_chunk(&mut r, h, b, 0x4100, 0, vec![2; 4096], 0x4180, MSG_RESENT).unwrap();
    assert_eq!(again.body.status, 0);
    let rep = read_chunk(&mut r, h, b, 0x4200, 0, 4096).unwrap();
    assert!(rep.sunk.unwrap().0 == vec![2; 4096], "the resend's data was not written");
    assert!(first.body.transno > 0 && again.body.transno > first.body.transno, "{:?} {:?}", first.body, again.body);
    assert_eq!(rep.body.transno, 0, "a READ changes nothing");
    // A SYNC of the whole OST commits every transaction so far.
    assert!(rep.body.last_committed < again.body.transno);
    let rep = r.raw(portal::OST_REQUEST, 0x4280, req(opc::OST_SYNC, h, 0x427f), vec![obdo(0).emit()], None, W).unwrap();
    assert_eq!((rep.body.status, rep.body.last_committed), (0, again.body.transno));
}

/// Item 7: connections as `target_handle_connect` keeps them: a reconnect (same client UUID, a
/// higher connection count) finds its export again — same handle, no new export; a request of
/// the older connection is dropped (`ptlrpc_check_req`); a new client instance claiming a known
/// UUID gets -EALREADY; OBD_PING with an unknown handle gets -ENOTCONN (how a client notices a
/// restarted server). Before: every CONNECT made a new export, and pings always succeeded.
#[test]
fn reconnects_find_their_export_and_old_epochs_are_dropped() {
    let mut r = Rig::new(48);
    let h = connect(&mut r, 0, "raw-f_UUID", 0x5000);
    let oid = create(&mut r, h, 0x5080);
    assert_eq!(r.oss.exports(), 1);
    let h2 = connect_n(&mut r, 0, "raw-f_UUID", 0x5100, 2);
    assert_eq!((h2, r.oss.exports()), (h, 1), "a reconnect finds its export");
    let old = r.raw(portal::OST_REQUEST, 0x5180, req(opc::OST_GETATTR, h, 0x517f), vec![obdo(oid).emit()], None, Duration::from_millis(300));
    assert!(old.is_none(), "a request of the old connection is answered: {old:?}");
    let new = r.raw(portal::OST_REQUEST, 0x5200, PtlrpcBody { conn_cnt: 2, ..req(opc::OST_GETATTR, h, 0x51ff) }, vec![obdo(oid).emit()], None, W).unwrap();
    assert_eq!(new.body.status, 0);
    let rep = r.raw(portal::OST_REQUEST, 0x5280, req(opc::OST_CONNECT, 0, 0), connect_bufs(0, "raw-f_UUID"), None, W).unwrap();
    assert_eq!(rep.body.status, -114, "a new instance with a known UUID: EALREADY");
    let rep = r.raw(portal::OST_REQUEST, 0x5300, req(opc::OBD_PING, 0xdead, 0), vec![], None, W).unwrap();
    assert_eq!((rep.body.status, rep.body.msg_type), (-107, PTL_RPC_MSG_ERR));
    let rep = r.raw(portal::OST_REQUEST, 0x5380, PtlrpcBody { conn_cnt: 2, ..req(opc::OBD_PING, h, 0x537f) }, vec![], None, W).unwrap();
    assert_eq!(rep.body.status, 0);
}

/// Item 8: READ sends only the bytes that exist and answers with their count, the checksum over
/// them (`tgt_brw_read`); past the end nothing moves. A WRITE whose data fails its checksum is
/// written and answered with the server's checksum, for the client to redo
/// (`tgt_brw_write`, `check_write_checksum`). Before: READ zero-filled to the length asked with
/// status 0, and a bad WRITE was refused with -EBADMSG.
#[test]
fn short_reads_and_bad_write_checksums_as_lustre() {
    let mut r = Rig::new(49);
    let (h, _) = connect_ocd(&mut r, 1, "raw-g_UUID", 0x6000);
    let oid = create(&mut r, h, 0x6080);
    let b = Obdo { seq: 1, ..obdo(oid) };
    assert_eq!(write_chunk(&mut r, h, b, 0x6100, 0, vec![5; 5000], 0x6100, 0).unwrap().body.status, 0);
    let ck = Obdo { valid: b.valid | valid::FLCKSUM | valid::FLFLAGS, flags: OBD_FL_CKSUM_CRC32C, ..b };
    let rep = read_chunk(&mut r, h, ck, 0x6180, 0, 8192).unwrap();
    assert_eq!(rep.body.status, 5000, "status is the bytes sent");
    assert_eq!(rep.sunk.as_ref().map(|s| s.1), Some(5000));
    assert_eq!(rep.obdo().cksum, crc32c(0, &[5; 5000]), "checksum over the bytes sent");
    let rep = read_chunk(&mut r, h, ck, 0x6200, 10_000, 4096).unwrap();
    assert_eq!((rep.body.status, rep.sunk.is_none()), (0, true), "past the end: nothing");
    // A WRITE whose checksum does not match its data.
    let bad = Obdo { cksum: 0x1234_5678, ..ck };
    let rep = write_chunk(&mut r, h, bad, 0x6280, 0, vec![6; 4096], 0x6280, 0).unwrap();
    assert_eq!(rep.body.status, 0, "written: the client decides");
    assert_eq!(rep.obdo().cksum, crc32c(0, &[6; 4096]), "the server's own checksum comes back");
    let rep = read_chunk(&mut r, h, b, 0x6300, 0, 4096).unwrap();
    assert!(rep.sunk.unwrap().0 == vec![6; 4096], "the data was not written");
}

/// Item 9: a bulk transfer waits until its request's deadline (`pb_timeout` after arrival, as
/// `target_bulk_io`), not a fixed 500 ms, and after a network error or the deadline there is no
/// reply: the client resends. Before: 500 ms, and a failed bulk was answered with -EIO.
#[test]
fn bulk_waits_until_the_request_deadline_and_errors_get_no_reply() {
    let mut r = Rig::new(50);
    let skew = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let s2 = skew.clone();
    r.oss.clock = std::sync::Arc::new(move || std::time::Instant::now() + *s2.lock().unwrap());
    let (h, _) = connect_ocd(&mut r, 0, "raw-h_UUID", 0x7000);
    let oid = create(&mut r, h, 0x7080);
    // The GET finds no bulk MD (mbits 0x1 was never posted): a network error, no reply.
    let body = PtlrpcBody { mbits: 0x1, ..req(opc::OST_WRITE, h, 0x70ff) };
    let rep = r.raw(portal::OST_IO, 0x7100, body, brw_bufs(obdo(oid), 0, 4096, OBD_BRW_WRITE), Some(Bulk::Source(vec![0; 4096], 0x7100)), Duration::from_millis(300));
    assert!(rep.is_none(), "a failed bulk was answered: {rep:?}");
    // The GET is held back (a silent loss): the OSS waits until the deadline the client gave (3 s).
    r.nodes[2].lnet.add_fault_rule(lnd::lnet::fault::FaultRule { delay_ms: Some(60_000), ..lose_gets(None) }).unwrap();
    let body = PtlrpcBody { timeout: 3, mbits: 0x7180, ..req(opc::OST_WRITE, h, 0x717f) };
    let rep = r.raw(portal::OST_IO, 0x7180, body, brw_bufs(obdo(oid), 0, 4096, OBD_BRW_WRITE), Some(Bulk::Source(vec![0; 4096], 0x7180)), Duration::from_millis(100));
    assert!(rep.is_none());
    let before = r.oss.bulk_timeouts;
    *skew.lock().unwrap() = Duration::from_millis(1500);
    r.idle_for(Duration::from_millis(50));
    assert_eq!(r.oss.bulk_timeouts, before, "gave up before the deadline");
    *skew.lock().unwrap() = Duration::from_millis(3500);
    r.idle_for(Duration::from_millis(50));
    assert_eq!(r.oss.bulk_timeouts, before + 1, "still waiting after the deadline");
}

/// Item 10: the OFD's rules. PUNCH needs FLSIZE|FLBLOCKS (else a serious -EPROTO: MSG_ERR),
/// only truncates (end = OBD_OBJECT_EOF, else -EPROTO) and can extend; SETATTR may not change
/// the size (-EPERM); handler errors are normal replies; CREATE is served on OST_CREATE_PORTAL;
/// BRW only on OST_IO; running out of space is a per-niobuf rc with status 0.
#[test]
fn ost_handlers_follow_the_ofd() {
    let mut r = Rig::new(51);
    let h = connect(&mut r, 0, "raw-i_UUID", 0x8000);
    let rep = r.raw(portal::OST_CREATE, 0x8080, req(opc::OST_CREATE, h, 0x807f), vec![obdo(0).emit()], None, W).unwrap();
    assert_eq!(rep.body.status, 0, "CREATE on OST_CREATE_PORTAL");
    let oid = rep.obdo().oid;
    let mut xid = 0x8100;
    let call = |r: &mut Rig, p: u32, opc: u32, o: Obdo, xid: &mut u64| {
        *xid += 0x80;
        r.raw(p, *xid, req(opc, h, *xid - 1), vec![o.emit()], None, W).unwrap()
    };
    let punch = |size: u64, blocks: u64, v: u64| Obdo { valid: valid::FLID | valid::FLGROUP | v, size, blocks, ..obdo(oid) };
    let rep = call(&mut r, portal::OST_IO, opc::OST_PUNCH, punch(10, OBD_OBJECT_EOF, valid::FLSIZE), &mut xid);
    assert_eq!((rep.body.status, rep.body.msg_type), (-71, PTL_RPC_MSG_ERR));
    let rep = call(&mut r, portal::OST_IO, opc::OST_PUNCH, punch(10, 20, valid::FLSIZE | valid::FLBLOCKS), &mut xid);
    assert_eq!((rep.body.status, rep.body.msg_type), (-71, PTL_RPC_MSG_REPLY));
    let rep = call(&mut r, portal::OST_IO, opc::OST_PUNCH, punch(3000, OBD_OBJECT_EOF, valid::FLSIZE | valid::FLBLOCKS), &mut xid);
    assert_eq!((rep.body.status, rep.obdo().size), (0, 3000), "a punch can extend");
    let rep = call(&mut r, portal::OST_REQUEST, opc::OST_SETATTR, punch(10, 0, valid::FLSIZE), &mut xid);
    assert_eq!(rep.body.status, -1, "SETATTR may not truncate");
    let rep = call(&mut r, portal::OST_REQUEST, opc::OST_GETATTR, obdo(oid + 100), &mut xid);
    assert_eq!((rep.body.status, rep.body.msg_type), (-2, PTL_RPC_MSG_REPLY), "a handler error is a normal reply");
    let rep = call(&mut r, portal::OST_REQUEST, opc::OST_SYNC, obdo(oid), &mut xid);
    assert_eq!((rep.body.status, rep.obdo().size), (0, 3000));
    xid += 0x80;
    let rep = r.raw(portal::OST_REQUEST, xid, req(opc::OST_READ, h, xid - 1), brw_bufs(obdo(oid), 0, 4096, OBD_BRW_READ), Some(Bulk::Sink(4096, xid)), W).unwrap();
    assert_eq!((rep.body.status, rep.body.msg_type), (-71, PTL_RPC_MSG_ERR), "BRW only on OST_IO");
    // The OST holds 64 MiB: a write past that is refused in its niobuf's rc, status 0.
    xid += 0x80;
    let rep = write_chunk(&mut r, h, obdo(oid), xid, 64 << 20, vec![1; 4096], xid, 0).unwrap();
    let rc = i32::from_le_bytes(rep.msg.buf(2, 4).unwrap()[..4].try_into().unwrap());
    assert_eq!((rep.body.status, rc), (0, -28), "{rep:?}");
    // A bulk shorter than its niobufs (the client's MD holds 2048 of 4096 bytes): no reply,
    // nothing written (`target_bulk_io`: "truncated bulk").
    xid += 0x80;
    let body = PtlrpcBody { mbits: xid, ..req(opc::OST_WRITE, h, xid - 1) };
    let rep = r.raw(portal::OST_IO, xid, body, brw_bufs(obdo(oid), 0, 4096, OBD_BRW_WRITE), Some(Bulk::Source(vec![7; 2048], xid)), Duration::from_millis(300));
    assert!(rep.is_none(), "a truncated bulk was answered: {rep:?}");
    let rep = read_chunk(&mut r, h, obdo(oid), xid + 0x80, 0, 4096).unwrap();
    assert!(rep.sunk.is_some_and(|s| s.0.iter().all(|&b| b == 0)), "a truncated bulk was written");
    xid += 0x80;
    let rep = call(&mut r, portal::OST_IO, opc::OST_DESTROY, obdo(oid), &mut xid);
    assert_eq!(rep.body.status, 0, "DESTROY on OST_IO");
}

/// Item 10: -ENOMEM from the OSS (no memory for the bulk) is retried a little later
/// (`osc_recoverable_error`), not counted as a failure.
#[test]
fn enomem_from_the_oss_is_retried() {
    let mut r = Rig::new(54);
    let mut j = job("squeezed", 0);
    j.timeout_ms = 100;
    let mut o = lnd::ost::osc::Osc::new(j).unwrap();
    o.pump(&mut r.nodes[1]);
    r.oscs.push((1, o));
    while !r.oscs[0].1.phases.iter().any(|p| p.0 == "write") {
        r.step();
    }
    // Take every byte of the OSS's memory for a while.
    let mut held = Vec::new();
    let a = &mut r.nodes[0].arena;
    for size in [1u64 << 20, 64 << 10, 4 << 10, 64] {
        while let Some(off) = a.alloc(size) {
            held.push((off, size));
        }
    }
    r.idle_for(Duration::from_millis(300));
    for (off, size) in held {
        r.nodes[0].arena.free(off, size);
    }
    let rep = r.run_jobs(vec![]).remove(0);
    assert_eq!((rep.errors, rep.bytes_verified), (0, rep.bytes_written), "{rep:?}");
    assert!(rep.resends > 0, "nothing was retried: {rep:?}");
    assert!(r.oss.trace.iter().any(|v| v["status"] == -12), "the OSS never ran out of memory");
}

/// Item 7 with many RPCs in flight: every reply is late for a while, so several RPCs of one
/// import time out together; the client reconnects once per target and resends them in xid order
/// (`ptlrpc_resend`), each `pb_last_xid` below the xids still waiting — none is refused as stale.
#[test]
fn rpcs_timing_out_together_are_resent_in_xid_order() {
    let mut r = Rig::new(53);
    let late = lnd::lnet::fault::FaultRule { src: None, dst: None, portal: Some(portal::OSC_REPLY), msg_type: Some("PUT".into()), rate: None, interval: Some(1), seed: 0, delay_ms: Some(450), tag: Some("late".into()), health_error: None };
    let mut j = job("patient", 0);
    (j.timeout_ms, j.inflight, j.max_tries, j.files) = (300, 8, 16, 4);
    let mut o = lnd::ost::osc::Osc::new(j).unwrap();
    o.pump(&mut r.nodes[1]);
    r.oscs.push((1, o));
    while !r.oscs[0].1.phases.iter().any(|p| p.0 == "write") {
        r.step();
    }
    r.nodes[1].lnet.add_fault_rule(late).unwrap();
    let t0 = std::time::Instant::now();
    while r.oscs[0].1.report.resends < 4 {
        assert!(t0.elapsed() < Duration::from_secs(10), "nothing timed out: {:?}", r.oscs[0].1.report);
        r.step();
    }
    r.nodes[1].lnet.remove_fault_rules("late");
    let rep = r.run_jobs(vec![]).remove(0);
    assert!(rep.reconnects >= 1 && rep.resends >= 2, "{rep:?}");
    assert_eq!((rep.errors, rep.bytes_verified), (0, rep.bytes_written), "{rep:?}");
    let stale = r.oss.trace.iter().filter(|v| v["status"] == -71).count();
    assert_eq!(stale, 0, "requests refused as stale");
}
