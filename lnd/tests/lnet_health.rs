//! LNet health and Multi-Rail in the core (issue 15): who pays for a failure, resends over
//! another path, recovery pings, ACK/REPLY timeouts and fault rules with a health status —
//! each test names the Lustre rule it checks (`lib-msg.c`, `lib-move.c`, `net_fault.c`, 2.15).

use lnd::lnet::health::{HealthStatus, MAX_HEALTH};
use lnd::lnet::recovery::{PING_MATCH_BITS, PING_PORTAL};
use lnd::lnet::{errno, opt, Action, Event, EventKind, Insert, Lnet, LndSend, MdSpec, NiConfig, NiIdx};
use lnd::mem::Seg;
use lnd::wire::{HdrBody, HdrRepr, Nid, ProcessId, WireHandle};

const INC: u64 = 42;

fn dma(a: u32) -> Nid {
    format!("{a}@dma").parse().unwrap()
}
fn tcp(a: u32) -> Nid {
    format!("10.0.0.{a}@tcp").parse().unwrap()
}
fn spec(len: u32) -> MdSpec {
    MdSpec { iov: vec![Seg { off: 0, len }], options: 0, threshold: None, max_size: 0, user_ptr: 7 }
}

/// Node 1 on `dma` (NI 1) and `tcp` (NI 2).
fn two_rails() -> (Lnet, NiIdx, NiIdx) {
    let mut l = Lnet::new(12345, INC, 0);
    let d = l.add_ni(NiConfig { nid: dma(1), lnd: 1, credits: 8, peer_credits: 8 });
    let t = l.add_ni(NiConfig { nid: tcp(1), lnd: 2, credits: 8, peer_credits: 8 });
    (l, d, t)
}

fn sends(l: &mut Lnet) -> Vec<LndSend> {
    std::iter::from_fn(|| l.poll_action())
        .filter_map(|a| match a {
            Action::Send(s) => Some(s),
            Action::Recv(_) => None,
        })
        .collect()
}

fn events(l: &mut Lnet) -> Vec<Event> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

fn ni_health(l: &Lnet, nid: Nid) -> u32 {
    l.ni_info().iter().find(|n| n.nid == nid).unwrap().health_value
}
fn peer_health(l: &Lnet, nid: Nid) -> u32 {
    l.peer_info().iter().find(|p| p.nid == nid).map_or(MAX_HEALTH, |p| p.health_value)
}

/// `lnet_health_check`: a failure lowers, by `lnet_health_sensitivity`, the end its class
/// blames — LOCAL_* the local NI, REMOTE_* the peer NI, NETWORK_TIMEOUT both — on a node with
/// more than one NI and for a peer with more than one; a success raises the local NI, a
/// message received from the peer NI raises it; sensitivity 0 switches health off.
#[test]
fn failed_sends_lower_the_health_of_the_end_their_class_blames() {
    let (mut l, _, _) = two_rails();
    // A Multi-Rail peer; sent to at its DMA NID (not the primary): no path choice, no resend.
    l.add_peer(tcp(2), &[dma(2)]).unwrap();
    let md = l.md_bind(spec(8), false);
    let to = ProcessId::new(dma(2), 12345);
    let fail = |l: &mut Lnet, st: i32, hs: HealthStatus| {
        let m = l.put(md, false, to, 4, 1, 0, 0).unwrap();
        let s = sends(l);
        assert_eq!((s.len(), s[0].ni), (1, 1));
        l.finalize_hs(m, st, hs);
        (ni_health(l, dma(1)), peer_health(l, dma(2)))
    };
    assert_eq!(fail(&mut l, errno::ETIMEDOUT, HealthStatus::LocalTimeout), (900, 1000), "LOCAL_TIMEOUT: the local NI");
    assert_eq!(fail(&mut l, errno::ECONNREFUSED, HealthStatus::RemoteDropped), (900, 900), "REMOTE_DROPPED: the peer NI");
    assert_eq!(fail(&mut l, errno::ETIMEDOUT, HealthStatus::NetworkTimeout), (800, 800), "NETWORK_TIMEOUT: both");
    assert_eq!(fail(&mut l, errno::ENODATA, HealthStatus::RemoteError), (800, 700), "REMOTE_ERROR: the peer NI");
    assert_eq!(fail(&mut l, 0, HealthStatus::LocalError), (900, 700), "status 0 is a success whatever the LND says: the NI gains");
    assert_eq!(l.counters.health_failures, 4);
    let st = l.ni_info()[0].health_stats;
    assert_eq!((st.timeouts, st.network_timeout, st.recoveries), (1, 1, 1), "counted in the NI's health stats, queued once");
    // A message from the peer NI raises it.
    let put = HdrRepr { dest_nid: dma(1), src_nid: dma(2), dest_pid: 12345, src_pid: 12345, payload_length: 0, body: HdrBody::Put { ack_wmd: WireHandle::NONE, match_bits: 1, hdr_data: 0, ptl_index: 9, offset: 0 } };
    l.parse(1, put, dma(2), 1, false).unwrap();
    assert_eq!(peer_health(&l, dma(2)), 800);
    l.tunables.sensitivity = 0;
    assert_eq!(fail(&mut l, errno::ETIMEDOUT, HealthStatus::NetworkTimeout), (900, 800), "sensitivity 0: health off");
}

/// `lnet_health_check`: on a node with one NI (`pb_nnis <= 2` with lo) the local NI is never
/// lowered, and a peer with one NI (`lp_nnis <= 1`) is not either — the failure is only counted.
#[test]
fn single_rail_health_is_counted_but_not_lowered() {
    let mut l = Lnet::new(12345, INC, 0);
    l.add_ni(NiConfig { nid: dma(1), lnd: 1, credits: 8, peer_credits: 8 });
    let md = l.md_bind(spec(8), false);
    let m = l.put(md, false, ProcessId::new(dma(2), 12345), 4, 1, 0, 0).unwrap();
    sends(&mut l);
    l.finalize_hs(m, errno::ETIMEDOUT, HealthStatus::NetworkTimeout);
    assert_eq!((ni_health(&l, dma(1)), peer_health(&l, dma(2))), (1000, 1000));
    assert_eq!(l.counters.health_failures, 1);
    assert_eq!(l.ni_info()[0].health_stats.network_timeout, 1);
    assert_eq!(l.recovery_queue(), (vec![], vec![]), "nothing to recover");
    assert_eq!(l.counters.resends, 0);
}

/// `lnet_select_pathway`: sends to a Multi-Rail peer's primary NID take its healthiest path;
/// at equal health, the preferred (lower) NI priority; then round robin over the NIs.
/// What arrives from any of its NIDs is reported as from the primary (`msg_initiator`).
#[test]
fn multi_rail_selection_follows_health_priority_and_round_robin() {
    let (mut l, d, t) = two_rails();
    l.add_peer(dma(2), &[tcp(2)]).unwrap();
    let md = l.md_bind(spec(8), false);
    let target = ProcessId::new(dma(2), 12345);
    let path = |l: &mut Lnet| {
        let m = l.put(md, false, target, 4, 1, 0, 0).unwrap();
        let s = sends(l).pop().unwrap();
        l.finalize(m, 0);
        events(l);
        (s.ni, s.hdr.src_nid, s.hdr.dest_nid)
    };
    let rr: Vec<NiIdx> = (0..4).map(|_| path(&mut l).0).collect();
    assert_eq!(rr, [d, t, d, t], "round robin between equals");
    assert_eq!(path(&mut l), (d, dma(1), dma(2)));
    assert_eq!(path(&mut l), (t, tcp(1), tcp(2)), "the header names the chosen NIs");
    l.set_ni_priority(d, 0);
    assert!((0..4).all(|_| path(&mut l).0 == d), "the preferred NI while healthy");
    // The DMA NI fails (a local drop): the TCP NI is healthier and wins despite priority.
    let m = l.put(md, false, target, 4, 1, 0, 0).unwrap();
    sends(&mut l);
    l.tunables.retry_count = 0;
    l.finalize_hs(m, errno::ENETDOWN, HealthStatus::LocalDropped);
    assert_eq!(path(&mut l).0, t);
    // A PUT from the peer's TCP NID matches an ME for its primary NID and is reported so.
    let me = l.me_attach(9, target, 5, 0, true, Insert::Tail).unwrap();
    let rx = l.md_attach(me, MdSpec { options: opt::OP_PUT, ..spec(8) }).unwrap();
    let put = HdrRepr { dest_nid: tcp(1), src_nid: tcp(2), dest_pid: 12345, src_pid: 12345, payload_length: 8, body: HdrBody::Put { ack_wmd: WireHandle::NONE, match_bits: 5, hdr_data: 0, ptl_index: 9, offset: 0 } };
    let Ok(lnd::lnet::Parsed::Recv(Some(m))) = l.parse(t, put, tcp(2), 1, false) else { panic!("the PUT must match") };
    sends(&mut l);
    l.finalize(m, 0);
    let ev = events(&mut l).pop().unwrap();
    assert_eq!((ev.md, ev.kind, ev.peer), (rx, EventKind::Put, target));
}

/// `lnet_attempt_msg_resend`: a resendable failure (here REMOTE_DROPPED) sends the message
/// again over another path, up to `lnet_retry_count` (2) times; the user sees one SEND event
/// with the last outcome. A failure that may not be resent (NETWORK_TIMEOUT) is not.
#[test]
fn a_failed_send_goes_again_over_another_path_up_to_the_retry_count() {
    let (mut l, d, t) = two_rails();
    l.add_peer(dma(2), &[tcp(2)]).unwrap();
    let md = l.md_bind(spec(8), false);
    let target = ProcessId::new(dma(2), 12345);
    l.put(md, false, target, 4, 1, 0, 0).unwrap();
    let s1 = sends(&mut l).pop().unwrap();
    assert_eq!(s1.ni, d);
    l.finalize_hs(s1.msg, errno::ECONNREFUSED, HealthStatus::RemoteDropped);
    let s2 = sends(&mut l).pop().expect("resent");
    assert_eq!((s2.ni, s2.hdr.dest_nid, s2.iov.len()), (t, tcp(2), 1), "over TCP, with the MD's data");
    assert!(events(&mut l).is_empty(), "no event while resending");
    l.finalize_hs(s2.msg, errno::ECONNREFUSED, HealthStatus::RemoteDropped);
    let s3 = sends(&mut l).pop().expect("resent again");
    assert_eq!(s3.ni, d, "the path but the one that just failed");
    l.finalize_hs(s3.msg, errno::ECONNREFUSED, HealthStatus::RemoteDropped);
    assert!(sends(&mut l).is_empty(), "retry count spent");
    let ev = events(&mut l);
    assert_eq!((ev.len(), ev[0].kind, ev[0].status), (1, EventKind::Send, errno::ECONNREFUSED));
    assert_eq!((l.counters.resends, l.ni_info()[1].resend_count), (2, 1));
    // NETWORK_TIMEOUT is not resent.
    l.put(md, false, target, 4, 1, 0, 0).unwrap();
    let s = sends(&mut l).pop().unwrap();
    l.finalize_hs(s.msg, errno::ETIMEDOUT, HealthStatus::NetworkTimeout);
    assert!(sends(&mut l).is_empty());
    assert_eq!(events(&mut l)[0].status, errno::ETIMEDOUT);
}

/// `lnet_health_check`: no resend once the transaction timeout has passed since the send.
#[test]
fn no_resend_past_the_transaction_timeout() {
    let (mut l, _, _) = two_rails();
    l.add_peer(dma(2), &[tcp(2)]).unwrap();
    let md = l.md_bind(spec(8), false);
    l.put(md, false, ProcessId::new(dma(2), 12345), 4, 1, 0, 0).unwrap();
    let s = sends(&mut l).pop().unwrap();
    l.set_time_ms(l.tunables.transaction_timeout_ms);
    l.finalize_hs(s.msg, errno::ECONNREFUSED, HealthStatus::RemoteDropped);
    assert!(sends(&mut l).iter().all(|s| s.hdr.src_pid != 12345 || matches!(s.hdr.body, HdrBody::Get { ptl_index: PING_PORTAL, .. })), "only recovery pings");
    assert_eq!(l.counters.resends, 0);
}

/// The pings of a recovery: the GET of one (pb_*) to the ping portal, answered by a REPLY.
fn ping_of(s: &LndSend) -> Option<WireHandle> {
    match s.hdr.body {
        HdrBody::Get { return_wmd, match_bits: PING_MATCH_BITS, ptl_index: PING_PORTAL, .. } => Some(return_wmd),
        _ => None,
    }
}

/// `lnet_recover_local_nis`: a local NI below full health is pinged (its own NID, through
/// itself) once the monitor runs; each answered ping raises it by the sensitivity; a failed
/// one puts the next off 2^count seconds (`lnet_get_next_recovery_ping`); at full health it
/// leaves the queue. The pings' events never reach the user.
#[test]
fn a_local_ni_is_pinged_back_to_health() {
    let (mut l, d, _) = two_rails();
    let md = l.md_bind(spec(8), false);
    let m = l.put(md, false, ProcessId::new(dma(2), 12345), 4, 1, 0, 0).unwrap();
    sends(&mut l);
    l.finalize_hs(m, errno::ENETDOWN, HealthStatus::LocalDropped);
    let m = l.put(md, false, ProcessId::new(dma(2), 12345), 4, 1, 0, 0).unwrap();
    l.finalize_hs(m, errno::ENETDOWN, HealthStatus::LocalDropped);
    events(&mut l);
    assert_eq!((ni_health(&l, dma(1)), l.recovery_queue().0), (800, vec![dma(1)]));
    let mut t = 1;
    l.set_time_ms(t);
    let ping = sends(&mut l).pop().expect("a recovery ping");
    assert_eq!((ping.ni, ping.next_hop, ping_of(&ping).is_some()), (d, dma(1), true), "its own NID, through itself");
    // It fails: health is not lowered for it, and no ping before 2 s.
    l.finalize_hs(ping.msg, errno::EIO, HealthStatus::LocalError);
    assert_eq!(ni_health(&l, dma(1)), 800);
    l.set_time_ms(1500);
    assert!(sends(&mut l).is_empty(), "backing off");
    // Answered pings raise it, one sensitivity each, until it leaves the queue.
    for want in [900, 1000] {
        t += 4000;
        l.set_time_ms(t);
        let ping = sends(&mut l).pop().expect("a recovery ping");
        let wmd = ping_of(&ping).unwrap();
        l.finalize(ping.msg, 0);
        let reply = HdrRepr { dest_nid: dma(1), src_nid: dma(1), dest_pid: 12345, src_pid: 12345, payload_length: 0, body: HdrBody::Reply { dst_wmd: wmd } };
        let Ok(lnd::lnet::Parsed::Recv(Some(r))) = l.parse(d, reply, dma(1), 1, false) else { panic!("the REPLY lands") };
        sends(&mut l);
        l.finalize(r, 0);
        assert_eq!(ni_health(&l, dma(1)), want);
    }
    l.set_time_ms(t + 10_000);
    assert_eq!(l.recovery_queue(), (vec![], vec![]));
    assert!(events(&mut l).is_empty(), "recovery pings are LNet's own");
    assert_eq!(l.md_count(), 1, "ping MDs are gone; the user's stays");
    assert_eq!(l.counters.recovery_pings, 3);
}

/// `lnet_recover_peer_nis`: a Multi-Rail peer NI that dropped a message is pinged from the
/// local NI on its net; its REPLY (a message received from it) raises its health.
#[test]
fn a_peer_ni_is_pinged_from_the_ni_on_its_net() {
    let (mut l, _, t) = two_rails();
    l.add_peer(dma(2), &[tcp(2)]).unwrap();
    l.tunables.retry_count = 0;
    let md = l.md_bind(spec(8), false);
    let m = l.put(md, false, ProcessId::new(tcp(2), 12345), 4, 1, 0, 0).unwrap();
    sends(&mut l);
    l.finalize_hs(m, errno::ECONNRESET, HealthStatus::RemoteDropped);
    assert_eq!(l.recovery_queue(), (vec![], vec![tcp(2)]));
    l.set_time_ms(1);
    let ping = sends(&mut l).pop().unwrap();
    assert_eq!((ping.ni, ping.next_hop), (t, tcp(2)));
    let wmd = ping_of(&ping).unwrap();
    l.finalize(ping.msg, 0);
    let reply = HdrRepr { dest_nid: tcp(1), src_nid: tcp(2), dest_pid: 12345, src_pid: 12345, payload_length: 0, body: HdrBody::Reply { dst_wmd: wmd } };
    let Ok(lnd::lnet::Parsed::Recv(Some(r))) = l.parse(t, reply, tcp(2), 1, false) else { panic!() };
    l.finalize(r, 0);
    assert_eq!(peer_health(&l, tcp(2)), 1000);
    l.set_time_ms(5000);
    assert_eq!(l.recovery_queue(), (vec![], vec![]));
}

/// `lnet_finalize_expired_responses`: a PUT whose ACK does not come within the transaction
/// timeout has its MD unlinked — the user gets an UNLINK event with -ETIMEDOUT — and the peer
/// NI it waited on pays (`lch_response_timeout_count`); an ACK in time cancels the tracker.
#[test]
fn an_ack_that_never_comes_times_out_at_the_lnet_level() {
    let (mut l, _, _) = two_rails();
    let to = ProcessId::new(dma(3), 12345);
    let late = l.md_bind(MdSpec { threshold: Some(2), ..spec(8) }, true);
    let acked = l.md_bind(MdSpec { threshold: Some(2), ..spec(8) }, true);
    for md in [late, acked] {
        let m = l.put(md, true, to, 4, 1, 0, 0).unwrap();
        sends(&mut l);
        l.finalize(m, 0);
    }
    assert!(events(&mut l).iter().all(|e| e.kind == EventKind::Send && e.status == 0));
    let ack = HdrRepr { dest_nid: dma(1), src_nid: dma(3), dest_pid: 12345, src_pid: 12345, payload_length: 0, body: HdrBody::Ack { dst_wmd: WireHandle { interface_cookie: INC, object_cookie: acked.0 }, match_bits: 1, mlength: 8 } };
    let Ok(lnd::lnet::Parsed::Recv(Some(r))) = l.parse(1, ack, dma(3), 1, false) else { panic!() };
    l.finalize(r, 0);
    assert_eq!(events(&mut l)[0].kind, EventKind::Ack);
    l.set_time_ms(l.tunables.transaction_timeout_ms - 1);
    assert!(events(&mut l).is_empty(), "not before the deadline");
    l.set_time_ms(l.tunables.transaction_timeout_ms * 3 / 2);
    let ev = events(&mut l);
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].md, ev[0].kind, ev[0].status, ev[0].unlinked), (late, EventKind::Unlink, errno::ETIMEDOUT, true));
    assert_eq!(l.counters.response_timeouts, 1);
    assert_eq!(l.peer_info().iter().find(|p| p.nid == dma(3)).unwrap().health_stats.response_timeouts, 1);
}

/// `lctl net_drop_add -e local_dropped`: the rule fails matching sends before their LND sees
/// them, with that health status — here resent over the other rail, which it does not match —
/// and only sends: an arriving message that matches is not dropped.
#[test]
fn a_drop_rule_with_a_health_error_fails_sends_as_the_lnd_would() {
    let (mut l, d, t) = two_rails();
    l.add_peer(dma(2), &[tcp(2)]).unwrap();
    let rule = serde_json::json!({"src": dma(1).to_string(), "interval": 1, "health_error": "local_dropped", "tag": "h"});
    l.add_fault_rule(serde_json::from_value(rule).unwrap()).unwrap();
    let md = l.md_bind(spec(8), false);
    l.put(md, false, ProcessId::new(dma(2), 12345), 4, 1, 0, 0).unwrap();
    let out = sends(&mut l);
    assert_eq!(out.iter().map(|s| s.ni).collect::<Vec<_>>(), [t], "failed on DMA before the LND, resent on TCP");
    assert_eq!(ni_health(&l, dma(1)), 900, "LOCAL_DROPPED lowered the DMA NI");
    assert_eq!((l.counters.resends, l.fault_hits()["h"]), (1, 1));
    let put = HdrRepr { dest_nid: dma(1), src_nid: dma(1), dest_pid: 12345, src_pid: 12345, payload_length: 0, body: HdrBody::Put { ack_wmd: WireHandle::NONE, match_bits: 1, hdr_data: 0, ptl_index: 9, offset: 0 } };
    assert!(matches!(l.parse(d, put, dma(2), 1, false), Ok(lnd::lnet::Parsed::Dropped(errno::ENODATA))), "no match, not a fault");
    let bad = serde_json::json!({"interval": 1, "health_error": "remote_droped"});
    assert!(l.add_fault_rule(serde_json::from_value(bad).unwrap()).unwrap_err().contains("remote_dropped"));
}
