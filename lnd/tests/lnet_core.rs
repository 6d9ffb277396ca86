//! The LNet core on its own (sans-IO): messages go in through `parse` and user calls, LND calls
//! come out as actions. Issue 19 items 6, 7 and 10.

use lnd::lnet::{errno, opt, Action, Insert, Lnet, LndSend, MdHandle, MdSpec, MsgId, NiConfig, NiIdx, Parsed};
use lnd::mem::Seg;
use lnd::wire::{HdrBody, HdrRepr, Nid, ProcessId, WireHandle};

const INCARNATION: u64 = 42;

fn nid(a: u32) -> Nid {
    format!("{a}@dma").parse().unwrap()
}
fn pid(a: u32) -> ProcessId {
    ProcessId::new(nid(a), 12345)
}

/// Node 1@dma with one DMA NI (index 1) of `credits` NI and `peer_credits` per-peer credits.
fn core(credits: u32, peer_credits: u32) -> (Lnet, NiIdx) {
    let mut l = Lnet::new(12345, INCARNATION, 0);
    let ni = l.add_ni(NiConfig { nid: nid(1), lnd: 1, credits, peer_credits });
    (l, ni)
}

fn spec(off: u64, len: u32, options: u32) -> MdSpec {
    MdSpec { iov: vec![Seg { off, len }], options, threshold: None, max_size: 0, user_ptr: 0 }
}

fn put_hdr(from: u32, portal: u32, bits: u64, len: u32, offset: u32) -> HdrRepr {
    HdrRepr { dest_nid: nid(1), src_nid: nid(from), dest_pid: 12345, src_pid: 12345, payload_length: len, body: HdrBody::Put { ack_wmd: WireHandle::NONE, match_bits: bits, hdr_data: 0, ptl_index: portal, offset } }
}

fn wire(md: MdHandle) -> WireHandle {
    WireHandle { interface_cookie: INCARNATION, object_cookie: md.0 }
}

fn sends(l: &mut Lnet) -> Vec<LndSend> {
    std::iter::from_fn(|| l.poll_action())
        .filter_map(|a| match a {
            Action::Send(s) => Some(s),
            Action::Recv(_) => None,
        })
        .collect()
}

/// (target address, match bits) of each send handed to the LND.
fn sent(l: &mut Lnet) -> Vec<(u32, u64)> {
    sends(l)
        .iter()
        .map(|s| match s.hdr.body {
            HdrBody::Put { match_bits, .. } => (s.target.nid.addr(), match_bits),
            _ => panic!("only PUTs here"),
        })
        .collect()
}

/// Item 6: a PUT held by a lazy portal that, once a buffer is posted, is dropped (here: too
/// long for it) is handed back to its LND (`msg: None`), which frees the rx and NAKs an RDMA
/// sender, as `lnet_drop_delayed_msg_list` does, instead of leaking it.
#[test]
fn a_lazy_put_dropped_on_retry_is_released_to_its_lnd() {
    let (mut l, ni) = core(8, 8);
    l.set_lazy(7);
    assert_eq!(l.parse(ni, put_hdr(2, 7, 1, 100, 0), nid(2), 77, false), Ok(Parsed::Recv(None)));
    assert!(l.poll_action().is_none(), "held by the lazy portal");
    let me = l.me_attach(7, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    l.md_attach(me, spec(0, 10, opt::OP_PUT)).unwrap();
    match l.poll_action() {
        Some(Action::Recv(r)) => assert_eq!((r.msg, r.private), (None, 77)),
        other => panic!("the LND must be told to let go of rx 77, got {other:?}"),
    }
    assert_eq!(l.counters.drop_count, 1);
}

/// A server with thousands of requests waiting on a lazy portal: each new buffer takes the
/// oldest waiting request and tries no more than one other (`lnet_ptl_match_delay`) — trying
/// every waiting request on every buffer cost a 1000-client OSS 14.8 million failed matches.
/// The requests are delivered in arrival order, and one on another portal never moves.
#[test]
fn a_lazy_portal_serves_its_waiting_puts_in_order_at_constant_cost() {
    let (mut l, ni) = core(8, 8);
    l.set_lazy(7);
    l.set_lazy(8);
    let n = 2000u64;
    for k in 0..n {
        assert_eq!(l.parse(ni, put_hdr(2, 7, k, 100, 0), nid(2), k, false), Ok(Parsed::Recv(None)));
    }
    assert_eq!(l.parse(ni, put_hdr(3, 8, 9, 100, 0), nid(3), 9999, false), Ok(Parsed::Recv(None)));
    let held = l.counters.credit_stalls;
    let mut got = Vec::new();
    for b in 0..50u64 {
        let me = l.me_attach(7, ProcessId::ANY, 0, u64::MAX, true, Insert::Tail).unwrap();
        let md = l.md_attach(me, MdSpec { threshold: Some(1), ..spec(b * 128, 128, opt::OP_PUT) }).unwrap();
        for a in std::iter::from_fn(|| l.poll_action()) {
            if let Action::Recv(r) = a {
                got.push((r.private, md));
            }
        }
    }
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), (0..50).collect::<Vec<_>>(), "one each, oldest first");
    assert!(l.counters.credit_stalls - held <= 50, "{} failed retries for 50 buffers", l.counters.credit_stalls - held);
    // The PUT on portal 8 still waits for a buffer of its own, and then lands.
    let me = l.me_attach(8, ProcessId::ANY, 9, 0, true, Insert::Tail).unwrap();
    l.md_attach(me, spec(0, 128, opt::OP_PUT)).unwrap();
    assert!(std::iter::from_fn(|| l.poll_action()).any(|a| matches!(a, Action::Recv(r) if r.private == 9999 && r.msg.is_some())));
}

/// Item 7: a peer short of credits holds back only its own sends; other peers' waiters go
/// as soon as their credits return, and one peer's sends leave in order.
#[test]
fn one_peer_short_of_credits_blocks_only_itself_and_order_holds() {
    let (mut l, _) = core(8, 1);
    let md = l.md_bind(spec(0, 8, 0), false);
    let put = |l: &mut Lnet, to: u32, bits: u64| l.put(md, false, pid(to), 4, bits, 0, 0).unwrap();
    let x1 = put(&mut l, 2, 1);
    let y1 = put(&mut l, 3, 1);
    put(&mut l, 2, 2);
    put(&mut l, 3, 2);
    assert_eq!(sent(&mut l), [(2, 1), (3, 1)]);
    // Y's credit comes back: Y's waiter goes although X's (ahead of it) cannot.
    l.finalize(y1, 0);
    assert_eq!(sent(&mut l), [(3, 2)], "Y2 must not wait behind X2");
    // A new send to X does not overtake X2.
    put(&mut l, 2, 3);
    assert!(sent(&mut l).is_empty());
    l.finalize(x1, 0);
    assert_eq!(sent(&mut l), [(2, 2)], "X2 first");
}

/// Item 7: NI credits short: waiters leave in the order they came, new sends queue behind.
#[test]
fn ni_credit_waiters_leave_in_order() {
    let (mut l, _) = core(1, 8);
    let md = l.md_bind(spec(0, 8, 0), false);
    let first = l.put(md, false, pid(2), 4, 1, 0, 0).unwrap();
    l.put(md, false, pid(3), 4, 2, 0, 0).unwrap();
    l.put(md, false, pid(2), 4, 3, 0, 0).unwrap();
    assert_eq!(sent(&mut l), [(2, 1)]);
    l.finalize(first, 0);
    let next: Vec<MsgId> = sends(&mut l).iter().map(|s| s.msg).collect();
    assert_eq!(next.len(), 1);
    l.finalize(next[0], 0);
    assert_eq!(sent(&mut l), [(2, 3)]);
}

/// Item 10: unlinking the MD of an ME created with RETAIN keeps the ME (`lnet_md_unlink`
/// unlinks the ME only if it was made to unlink): a new MD can be attached to it.
#[test]
fn md_unlink_keeps_a_retained_me() {
    let (mut l, _) = core(8, 8);
    let me = l.me_attach(3, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    let md = l.md_attach(me, spec(0, 10, opt::OP_PUT)).unwrap();
    l.md_unlink(md).unwrap();
    assert!(l.md_attach(me, spec(0, 10, opt::OP_PUT)).is_ok(), "the retained ME is still there");
    // An ME made to unlink goes with its MD; unlinking the ME itself takes the MD along.
    let me2 = l.me_attach(3, ProcessId::ANY, 2, 0, true, Insert::Tail).unwrap();
    let md2 = l.md_attach(me2, spec(0, 10, opt::OP_PUT)).unwrap();
    l.md_unlink(md2).unwrap();
    assert!(l.md_attach(me2, spec(0, 10, opt::OP_PUT)).is_err());
    l.me_unlink(me).unwrap();
    assert!(l.md_attach(me, spec(0, 10, opt::OP_PUT)).is_err());
}

/// Item 10: an MD attached to an ME is a target for incoming PUT/GET only: `LNetPut`/`LNetGet`
/// refuse it as a source or sink, and ACKs/REPLYs addressed to it are dropped
/// (`md_me != NULL` in `lnet_parse_ack`/`lnet_parse_reply`).
#[test]
fn an_md_on_an_me_is_no_ack_reply_or_initiator_md() {
    let (mut l, ni) = core(8, 8);
    let me = l.me_attach(3, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    let md = l.md_attach(me, spec(0, 10, opt::OP_PUT | opt::OP_GET)).unwrap();
    assert!(l.put(md, true, pid(2), 3, 1, 0, 0).is_err(), "PUT from an MD on an ME");
    assert!(l.get(md, pid(2), 3, 1, 0).is_err(), "GET into an MD on an ME");
    let ack = HdrRepr { body: HdrBody::Ack { dst_wmd: wire(md), match_bits: 1, mlength: 10 }, payload_length: 0, ..put_hdr(2, 0, 0, 0, 0) };
    assert!(matches!(l.parse(ni, ack, nid(2), 1, false), Ok(Parsed::Dropped(_))), "ACK into an MD on an ME");
    let reply = HdrRepr { body: HdrBody::Reply { dst_wmd: wire(md) }, payload_length: 4, ..put_hdr(2, 0, 0, 0, 0) };
    assert!(matches!(l.parse(ni, reply, nid(2), 2, false), Ok(Parsed::Dropped(_))), "REPLY into an MD on an ME");
}

/// Item 10: with MANAGE_REMOTE the MD's offset still advances past each match
/// (`lnet_try_match_md` sets `md_offset = offset + mlength`), so MAX_SIZE exhausts it.
#[test]
fn manage_remote_advances_the_offset_for_max_size() {
    let (mut l, ni) = core(8, 8);
    let me = l.me_attach(3, ProcessId::ANY, 1, 0, false, Insert::Tail).unwrap();
    let mut s = spec(0, 100, opt::OP_PUT | opt::MANAGE_REMOTE | opt::MAX_SIZE);
    s.max_size = 40;
    l.md_attach(me, s).unwrap();
    assert!(matches!(l.parse(ni, put_hdr(2, 3, 1, 40, 50), nid(2), 1, false), Ok(Parsed::Recv(Some(_)))));
    // 10 bytes left past offset 90: less than max_size, so the MD is exhausted.
    assert_eq!(l.parse(ni, put_hdr(2, 3, 1, 10, 0), nid(2), 2, false), Ok(Parsed::Dropped(errno::ENODATA)));
}

/// Item 9: a router keeps a queue per buffer pool (`lnet_msg2bufpool`): a small message waits
/// for a small buffer only, never behind a large one waiting for a large buffer.
#[test]
fn router_queues_per_pool() {
    use lnd::lnet::RouterPools;
    let mut l = Lnet::new(12345, INCARNATION, 0);
    let dma = l.add_ni(NiConfig { nid: nid(1), lnd: 1, credits: 8, peer_credits: 8 });
    l.add_ni(NiConfig { nid: "10.0.0.1@tcp".parse().unwrap(), lnd: 2, credits: 8, peer_credits: 8 });
    l.enable_routing(RouterPools { tiny: 0, small: vec![Seg { off: 0, len: 4096 }], small_size: 4096, large: Vec::new(), peer_buffer_credits: 0 });
    let fwd = |len: u32| HdrRepr { dest_nid: "10.0.0.2@tcp".parse().unwrap(), ..put_hdr(2, 4, 1, len, 0) };
    // rx 1: small, takes the only small buffer; rx 2: large, no large buffer; rx 3: small, waits.
    let Ok(Parsed::Recv(Some(s1))) = l.parse(dma, fwd(100), nid(2), 1, false) else { panic!("forwarded") };
    assert_eq!(l.parse(dma, fwd(100_000), nid(2), 2, false), Ok(Parsed::Recv(None)));
    assert_eq!(l.parse(dma, fwd(200), nid(2), 3, false), Ok(Parsed::Recv(None)));
    while l.poll_action().is_some() {}
    // s1 received, sent on, sent: its small buffer is free again and goes to rx 3.
    l.finalize(s1, 0);
    let out = sends(&mut l);
    assert_eq!(out.len(), 1);
    l.finalize(out[0].msg, 0);
    let recvs: Vec<u64> = std::iter::from_fn(|| l.poll_action())
        .filter_map(|a| match a {
            Action::Recv(r) => Some(r.private),
            Action::Send(_) => None,
        })
        .collect();
    assert_eq!(recvs, [3], "the small message gets the small buffer");
}

/// Router receiving from NI 1 (`1@dma`, `peer_credits` per peer) into six small buffers, for
/// 10.0.0.2@tcp; `peer_buffer_credits` as given.
fn router(peer_credits: u32, peer_buffer_credits: u32) -> (Lnet, NiIdx) {
    use lnd::lnet::RouterPools;
    let mut l = Lnet::new(12345, INCARNATION, 0);
    let dma = l.add_ni(NiConfig { nid: nid(1), lnd: 1, credits: 64, peer_credits });
    l.add_ni(NiConfig { nid: "10.0.0.1@tcp".parse().unwrap(), lnd: 2, credits: 64, peer_credits: 64 });
    let small = (0..6).map(|i| Seg { off: i * 4096, len: 4096 }).collect();
    l.enable_routing(RouterPools { tiny: 0, small, small_size: 4096, large: Vec::new(), peer_buffer_credits });
    (l, dma)
}

/// Parses `n` routed PUTs from `from` (rx contexts `rx0..`): the ones given a buffer at once.
fn flood(l: &mut Lnet, ni: NiIdx, from: u32, rx0: u64, n: u64) -> Vec<MsgId> {
    let fwd = HdrRepr { dest_nid: "10.0.0.2@tcp".parse().unwrap(), ..put_hdr(from, 4, 1, 100, 0) };
    (rx0..rx0 + n)
        .filter_map(|rx| match l.parse(ni, fwd.clone(), nid(from), rx, false) {
            Ok(Parsed::Recv(Some(id))) => Some(id),
            Ok(Parsed::Recv(None)) => None,
            other => panic!("routed PUT refused: {other:?}"),
        })
        .collect()
}

/// Item 8 (router side): a router lends one peer at most `peer_buffer_credits` buffers
/// (`lnet_post_routed_recv_locked`: past the peer's router credits a message waits on the
/// peer's queue, its rx kept by the LND); another peer still gets buffers, and a buffer the
/// peer gives back goes to its own next waiter (`lnet_return_rx_credits_locked`).
#[test]
fn one_peer_holds_at_most_its_router_credits() {
    let (mut l, dma) = router(8, 2);
    let taken = flood(&mut l, dma, 2, 1, 5);
    assert_eq!(taken.len(), 2, "peer 2 holds {} router buffers: more than its 2 router credits", taken.len());
    assert_eq!(flood(&mut l, dma, 3, 10, 2).len(), 2, "peer 3 must get buffers while peer 2 waits");
    while l.poll_action().is_some() {}
    // One of peer 2's messages is received, sent on and done: its buffer goes to peer 2's rx 3.
    l.finalize(taken[0], 0);
    let out = sends(&mut l);
    assert_eq!(out.len(), 1);
    l.finalize(out[0].msg, 0);
    let recvs: Vec<u64> = std::iter::from_fn(|| l.poll_action())
        .filter_map(|a| match a {
            Action::Recv(r) => Some(r.private),
            Action::Send(_) => None,
        })
        .collect();
    assert_eq!(recvs, [3], "peer 2's first waiter gets the buffer back");
}

/// Item 8: without the tunable a peer's router credits are the NI's per-peer credits
/// (`lnet_peer_buffer_credits`).
#[test]
fn router_credits_default_to_the_nis_peer_credits() {
    let (mut l, dma) = router(3, 0);
    assert_eq!(flood(&mut l, dma, 2, 1, 6).len(), 3);
}
