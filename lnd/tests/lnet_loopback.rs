//! Core semantics over the loopback LND: matching order, thresholds, unlink, truncation, ACKs.

use lnd::lnet::{errno, fault, opt, EventKind, Event, Insert, Lnet, LnetError, MdSpec, MeHandle, NiConfig, ParseError, Parsed};
use lnd::lolnd::LoLnd;
use lnd::mem::{Mem, Seg};
use lnd::node::Node;
use lnd::wire::{HdrBody, HdrRepr, Nid, ProcessId, WireHandle};
use std::sync::Arc;

fn node() -> (Node, Arc<Mem>) {
    let mem = Mem::heap(1 << 16);
    let lnet = Lnet::new(12345, 42, 0);
    let arena = lnd::mem::Arena::new(mem.len() as u64, 64);
    (Node { lnet, lnds: vec![Box::new(LoLnd::new(mem.clone()))], mem: mem.clone(), arena, xids: lnd::ptlrpc::xid::Xids::new(0) }, mem)
}

fn spec(off: u64, len: u32, options: u32, threshold: Option<u32>) -> MdSpec {
    MdSpec { iov: vec![Seg { off, len }], options, threshold, max_size: 0, user_ptr: off }
}

fn lo() -> ProcessId {
    ProcessId::new(Nid::LO_0, 12345)
}

fn events(n: &mut Node) -> Vec<Event> {
    n.step();
    std::iter::from_fn(|| n.poll_event()).collect()
}

#[test]
fn put_with_ack_over_loopback() {
    let (mut n, mem) = node();
    let me = n.lnet.me_attach(4, ProcessId::ANY, 0x77, 0, true, Insert::Tail).unwrap();
    let sink = n.lnet.md_attach(me, spec(1000, 64, opt::OP_PUT, Some(1))).unwrap();
    mem.write(0, b"hello, lnet").unwrap();
    let src = n.lnet.md_bind(spec(0, 11, 0, Some(2)), true);
    n.lnet.put(src, true, lo(), 4, 0x77, 0, 0xabc).unwrap();
    let ev = events(&mut n);
    let kinds: Vec<_> = ev.iter().map(|e| (e.kind, e.md, e.mlength, e.status, e.unlinked)).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Put, sink, 11, 0, true),
            (EventKind::Send, src, 11, 0, false),
            (EventKind::Ack, src, 11, 0, true)
        ]
    );
    assert_eq!(ev[0].hdr_data, 0xabc);
    assert_eq!(mem.to_vec(1000, 11).unwrap(), b"hello, lnet");
    assert_eq!(n.lnet.md_count(), 0, "both MDs auto-unlinked");
    assert!(n.idle());
}

#[test]
fn first_matching_me_wins_and_insert_positions() {
    let (mut n, mem) = node();
    let a = n.lnet.me_attach(9, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    let c = n.lnet.me_attach(9, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    let b = n.lnet.me_attach(9, ProcessId::ANY, 1, 0, false, Insert::Before(c)).unwrap();
    let z = n.lnet.me_attach(9, ProcessId::ANY, 1, 0, false, Insert::Head).unwrap();
    assert!(n.lnet.me_attach(9, ProcessId::ANY, 1, 0, false, Insert::After(MeHandle(99))).is_err());
    // z gets no MD (skipped), a is exhausted after one PUT, then b, then c.
    let _ = z;
    let mda = n.lnet.md_attach(a, spec(100, 8, opt::OP_PUT, Some(1))).unwrap();
    let mdb = n.lnet.md_attach(b, spec(200, 8, opt::OP_PUT, Some(1))).unwrap();
    let mdc = n.lnet.md_attach(c, spec(300, 8, opt::OP_PUT, None)).unwrap();
    mem.write(0, b"12345678").unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let src = n.lnet.md_bind(spec(0, 8, 0, Some(1)), true);
        n.lnet.put(src, false, lo(), 9, 1, 0, 0).unwrap();
        got.extend(events(&mut n).into_iter().filter(|e| e.kind == EventKind::Put).map(|e| e.md));
    }
    assert_eq!(got, [mda, mdb, mdc]);
    assert!(n.lnet.md_len(mda).is_some(), "threshold reached but no auto-unlink: MD stays");
}

#[test]
fn truncation_drop_and_manage_remote() {
    let (mut n, mem) = node();
    mem.write(0, &[7u8; 100]).unwrap();
    let me = n.lnet.me_attach(2, ProcessId::ANY, 5, 0, false, Insert::Tail).unwrap();
    let t = n.lnet.md_attach(me, spec(1000, 60, opt::OP_PUT | opt::TRUNCATE, None)).unwrap();
    let me2 = n.lnet.me_attach(3, ProcessId::ANY, 5, 0, false, Insert::Tail).unwrap();
    n.lnet.md_attach(me2, spec(2000, 60, opt::OP_PUT, None)).unwrap();
    let me3 = n.lnet.me_attach(4, ProcessId::ANY, 5, 0, false, Insert::Tail).unwrap();
    let r = n.lnet.md_attach(me3, spec(3000, 60, opt::OP_PUT | opt::MANAGE_REMOTE, None)).unwrap();

    let src = n.lnet.md_bind(spec(0, 100, 0, None), false);
    n.lnet.put(src, false, lo(), 2, 5, 0, 0).unwrap();
    let e = events(&mut n).into_iter().find(|e| e.kind == EventKind::Put).unwrap();
    assert_eq!((e.md, e.rlength, e.mlength), (t, 100, 60));
    assert_eq!(mem.to_vec(1000, 61).unwrap(), [vec![7u8; 60], vec![0]].concat());

    // too long and no TRUNCATE: dropped, counted
    let drops = n.lnet.counters.drop_count;
    n.lnet.put(src, false, lo(), 3, 5, 0, 0).unwrap();
    assert!(events(&mut n).iter().all(|e| e.kind != EventKind::Put));
    assert_eq!(n.lnet.counters.drop_count, drops + 1);

    let small = n.lnet.md_bind(spec(0, 10, 0, None), false);
    n.lnet.put(small, false, lo(), 4, 5, 33, 0).unwrap();
    let e = events(&mut n).into_iter().find(|e| e.kind == EventKind::Put).unwrap();
    assert_eq!((e.md, e.offset, e.mlength), (r, 33, 10));
    assert_eq!(mem.to_vec(3033, 10).unwrap(), vec![7u8; 10]);
}

#[test]
fn get_reply_and_unlink_events() {
    let (mut n, mem) = node();
    mem.write(500, b"source bytes").unwrap();
    let me = n.lnet.me_attach(8, ProcessId::new(Nid::LO_0, ProcessId::PID_ANY), 0x10, 0xf, false, Insert::Tail).unwrap();
    let src = n.lnet.md_attach(me, spec(500, 12, opt::OP_GET, None)).unwrap();
    let sink = n.lnet.md_bind(spec(800, 12, 0, Some(2)), true);
    n.lnet.get(sink, lo(), 8, 0x1a, 0).unwrap();
    let ev = events(&mut n);
    let kinds: Vec<_> = ev.iter().map(|e| (e.kind, e.md, e.mlength)).collect();
    assert!(kinds.contains(&(EventKind::Get, src, 12)), "{kinds:?}");
    assert!(kinds.contains(&(EventKind::Reply, sink, 12)), "{kinds:?}");
    assert!(kinds.contains(&(EventKind::Send, sink, 0)), "{kinds:?}");
    assert_eq!(mem.to_vec(800, 12).unwrap(), b"source bytes");
    // explicit unlink of an idle MD: UNLINK event, then the handle is stale
    n.lnet.md_unlink(src).unwrap();
    let ev = events(&mut n);
    assert_eq!((ev[0].kind, ev[0].unlinked), (EventKind::Unlink, true));
    assert_eq!(n.lnet.md_unlink(src), Err(LnetError::NoSuchMd));
    assert_eq!(n.lnet.put(src, false, lo(), 8, 0, 0, 0), Err(LnetError::NoSuchMd));
}

#[test]
fn no_route_and_mtu() {
    let (mut n, _) = node();
    let md = n.lnet.md_bind(spec(0, 8, 0, None), false);
    let far = ProcessId::new("1.2.3.4@tcp".parse().unwrap(), 12345);
    assert!(matches!(n.lnet.put(md, false, far, 1, 0, 0, 0), Err(LnetError::NoRoute(_))));
    let big = n.lnet.md_bind(MdSpec { iov: vec![Seg { off: 0, len: 60000 }, Seg { off: 0, len: 1 << 20 }], options: 0, threshold: None, max_size: 0, user_ptr: 0 }, false);
    assert!(matches!(n.lnet.put(big, false, lo(), 1, 0, 0, 0), Err(LnetError::TooLong(_))));
}

#[test]
fn parse_refuses_misdirected_messages() {
    let (mut n, _) = node();
    let ni = n.lnet.add_ni(NiConfig { nid: "1@dma".parse().unwrap(), lnd: 0, credits: 8, peer_credits: 8 });
    let hdr = |dest: &str| HdrRepr {
        dest_nid: dest.parse().unwrap(),
        src_nid: "2@dma".parse().unwrap(),
        dest_pid: 12345,
        src_pid: 12345,
        payload_length: 0,
        body: HdrBody::Get { return_wmd: WireHandle::NONE, match_bits: 0, ptl_index: 1, src_offset: 0, sink_length: 0 },
    };
    let from: Nid = "2@dma".parse().unwrap();
    assert!(matches!(n.lnet.parse(ni, hdr("3@dma"), from, 0, false), Err(ParseError::ShouldBeDirect { .. })));
    assert!(matches!(n.lnet.parse(ni, hdr("0@lo"), from, 0, false), Err(ParseError::WrongNi { .. })));
    assert!(matches!(n.lnet.parse(ni, hdr("9.9.9.9@tcp"), from, 0, true), Err(ParseError::RoutedRdmaGet(_))));
    assert_eq!(n.lnet.parse(ni, hdr("9.9.9.9@tcp"), from, 0, false), Ok(Parsed::Dropped(errno::EHOSTUNREACH)));
    assert_eq!(n.lnet.parse(ni, hdr("1@dma"), from, 0, true), Ok(Parsed::Dropped(errno::ENODATA)));
}

fn rule(yaml_like: &str) -> fault::FaultRule {
    serde_json::from_str(yaml_like).unwrap()
}

#[test]
fn delay_rule_holds_a_put_until_its_time() {
    let (mut n, mem) = node();
    n.lnet.add_fault_rule(rule(r#"{"portal": 4, "type": "PUT", "interval": 1, "delay_ms": 50, "tag": "d"}"#)).unwrap();
    let me = n.lnet.me_attach(4, ProcessId::ANY, 0x77, 0, true, Insert::Tail).unwrap();
    n.lnet.md_attach(me, spec(1000, 64, opt::OP_PUT, Some(1))).unwrap();
    mem.write(0, b"late").unwrap();
    let src = n.lnet.md_bind(spec(0, 4, 0, Some(2)), true);
    n.lnet.set_time_ms(10);
    n.lnet.put(src, true, lo(), 4, 0x77, 0, 0).unwrap();
    let ev = events(&mut n);
    assert!(ev.is_empty(), "held, so no PUT event yet: {ev:?}");
    assert_eq!((n.lnet.held(), n.lnet.next_release_ms()), (1, Some(60)));
    assert!(!n.idle(), "a held message keeps the node busy");
    n.lnet.set_time_ms(59);
    assert!(events(&mut n).is_empty());
    n.lnet.set_time_ms(60);
    let kinds: Vec<_> = events(&mut n).iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Put, EventKind::Send, EventKind::Ack]);
    assert_eq!(mem.to_vec(1000, 4).unwrap(), b"late");
    assert_eq!(n.lnet.counters.faults_delayed, 1);
    let rec = n.lnet.poll_fault_record().unwrap();
    assert_eq!((rec.fault, rec.msg, rec.portal, rec.delay_ms), ("lnet_delay", "PUT", Some(4), Some(50)));
    assert!(n.idle());
    // The ACK was not delayed (type PUT only); removing the rule by tag stops it.
    assert_eq!(n.lnet.remove_fault_rules("d"), 1);
    assert_eq!(n.lnet.remove_fault_rules("d"), 0);
}

#[test]
fn held_message_that_no_longer_matches_is_released_by_the_lnd() {
    let (mut n, mem) = node();
    n.lnet.add_fault_rule(rule(r#"{"type": "PUT", "interval": 1, "delay_ms": 5}"#)).unwrap();
    let me = n.lnet.me_attach(4, ProcessId::ANY, 0x77, 0, true, Insert::Tail).unwrap();
    let sink = n.lnet.md_attach(me, spec(1000, 64, opt::OP_PUT, Some(1))).unwrap();
    mem.write(0, b"gone").unwrap();
    let src = n.lnet.md_bind(spec(0, 4, 0, Some(1)), true);
    n.lnet.put(src, false, lo(), 4, 0x77, 0, 0).unwrap();
    assert!(events(&mut n).is_empty());
    n.lnet.md_unlink(sink).unwrap();
    n.lnet.set_time_ms(5);
    let ev = events(&mut n);
    assert!(ev.iter().all(|e| e.kind != EventKind::Put), "nothing to match any more: {ev:?}");
    assert_eq!(n.lnet.held(), 0);
    assert_eq!(n.lnet.counters.drop_count, 1);
    assert!(n.idle(), "the sender was finalized too");
}

#[test]
fn drop_wins_over_delay_and_bad_rules_are_refused() {
    let (mut n, _mem) = node();
    n.lnet.add_fault_rule(rule(r#"{"interval": 1, "delay_ms": 5}"#)).unwrap();
    n.lnet.add_fault_rule(rule(r#"{"type": "PUT", "interval": 1}"#)).unwrap();
    let src = n.lnet.md_bind(spec(0, 4, 0, Some(1)), true);
    n.lnet.put(src, false, lo(), 4, 0x77, 0, 0).unwrap();
    events(&mut n);
    assert_eq!((n.lnet.counters.faults_dropped, n.lnet.counters.faults_delayed, n.lnet.held()), (1, 0, 0));
    assert!(n.lnet.add_fault_rule(rule(r#"{"interval": 1, "delay_ms": 0}"#)).is_err());
    assert!(n.lnet.add_fault_rule(rule(r#"{"rate": 2, "interval": 1}"#)).is_err());
    assert!(n.lnet.add_fault_rule(rule(r#"{"type": "HELLO", "rate": 2}"#)).is_err());
}
